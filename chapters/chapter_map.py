"""全书地图：章节清单只在这里写一遍，README 的章节表与第 1 章的地图都由它生成。

    python chapters/chapter_map.py           # 重写 README.md 与 chapters/src/ch01.py 两张表（并同步 ch01.ipynb 的文字）
    python chapters/chapter_map.py --check   # 只检查：两处的表与这里的清单不一致时退出码为 1（测试就这样用）

两处的表都放在标记之间：README 里是 ``<!-- chapter-map:start -->`` 与 ``<!-- chapter-map:end -->``，
ch01.py 的 Markdown 单元里是同样的两行（前面加 ``# ``，在 notebook 里是看不见的 HTML 注释）。
标记之间的内容由本文件整体替换，不要手改。
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = ROOT / "README.md"
CH01 = HERE / "src" / "ch01.py"
START, END = "<!-- chapter-map:start -->", "<!-- chapter-map:end -->"


@dataclass(frozen=True)
class Chapter:
    name: str  # chapters/src/<name>.py 与 chapters/<name>.ipynb
    title: str
    summary: str
    code: str  # 主要代码（Markdown，路径写在反引号里）
    written: bool = True

    @property
    def notebook(self) -> str:
        return f"chapters/{self.name}.ipynb"


CHAPTERS: list[Chapter] = [
    Chapter("ch01", "第 1 章 大语言模型是什么", "全景：语言模型、GPT、预训练与微调", "全书地图"),
    Chapter(
        "ch02", "第 2 章 处理文本数据", "分词（按词、按字、字节级 BPE）、词元 id、滑动窗口数据集与批次、嵌入",
        "`llmcore/tokenizers/`、`llmcore/datasets/`、`gpt_torch/data.py`",
    ),
    Chapter(
        "ch03", "第 3 章 注意力机制", "从不带权重的自注意力到因果、多头注意力",
        "`gpt_numpy/attention_steps.py`、`gpt_torch/attention_steps.py`、两边的 `attention.py`",
    ),
    Chapter(
        "ch04", "第 4 章 从零搭一个 GPT", "层归一化、GELU 前馈网络、残差连接、Transformer 块、生成文本",
        "`gpt_numpy/model.py`、`gpt_torch/model.py`、`generate.py`、`kv_cache.py`、`llmcore/generation.py`",
    ),
    Chapter(
        "ch05", "第 5 章 在无标注数据上预训练", "损失、训练循环、采样策略、检查点与续训、加载 GPT-2 权重",
        "`llmcore/trainer.py`、`train.py`、`cli.py`、`checkpoint.py`、`sampling.py`、`pretrained.py`",
    ),
    Chapter(
        "ch06", "第 6 章 分类微调", "给 GPT 换上分类头，判断评论是好评还是差评",
        "`llmcore/finetune/`（`classify_data.py`、`cls_trainer.py`、`baselines.py`、`results.py`）、两边的 `classifier.py`",
    ),
    Chapter(
        "ch07", "第 7 章 指令微调与偏好调优", "让模型听懂指令（SFT），再用偏好对学会哪种回答更好（DPO）",
        "`llmcore/finetune/`（`instruct_bench.py`、`instruct_data.py`、`sft_data.py`、`dpo_data.py`、"
        "`instruct_trainer.py`、`instruct_run.py`、`instruct_cli.py`、`instruct_eval.py`、`instruct_results.py`）、"
        "两边的 `instruct.py`、`dpo.py`",
    ),
    Chapter(
        "ch08", "第 8 章（上）在实践中使用大语言模型：Qwen3", "从零实现 Qwen3，在 CPU 上量化推理",
        "`llmcore/qwen3/`、`llmcore/tokenizers/hf_json.py`、`gpt_numpy/qwen3.py`、`gpt_numpy/quant.py`、"
        "`gpt_torch/qwen3.py`、`tinytensor/kernels/int8_matmul.py`",
    ),
    Chapter(
        "ch08_serve", "第 8 章（下）服务与界面", "OpenAI 兼容的服务、流式输出与聊天页面",
        "`llmcore/server/`（`app.py`、`engine.py`、`protocol.py`、`chat_template.py`、`static/`）",
    ),
    Chapter(
        "autograd", "自动求导的内部", "tinytensor 的计算图、反向传播、梯度检查、numba 内核",
        "`tinytensor/`（`autograd.py`、`ops/`、`kernels/`、`viz.py`）",
    ),
    Chapter(
        "appendix_a", "附录 A PyTorch 入门与多进程训练", "张量、自动求导、训练循环、DataLoader、混合精度、DDP",
        "`gpt_torch/ddp.py`、`gpt_torch/train.py`",
    ),
    Chapter(
        "appendix_d", "附录 D 训练循环的小技巧", "学习率预热与余弦退火、梯度裁剪、AdamW、梯度累积、精确续训",
        "`tinytensor/optim/`、`llmcore/trainer.py`",
    ),
    Chapter(
        "appendix_e", "附录 E 用 LoRA 微调", "低秩适配：只训练很少的参数完成微调",
        "两边的 `lora.py`、`llmcore/finetune/lora_io.py`、`bench/bench_lora.py`",
    ),
]


def table() -> list[str]:
    """章节表的 Markdown 行。"""
    rows = ["| 章节 | 内容 | notebook | 主要代码 |", "|---|---|---|---|"]
    for c in CHAPTERS:
        nb = f"`{c.notebook}`" if c.written else "（还没有写）"
        if c.written and (HERE / "src" / f"{c.name}_solutions.py").exists():
            nb += f"（练习答案 `{c.name}_solutions.ipynb`）"
        rows.append(f"| {c.title} | {c.summary} | {nb} | {c.code} |")
    return rows


def _replace(text: str, prefix: str, where: str) -> str:
    """把 text 中（每行以 prefix 开头的）两个标记之间的内容换成最新的表。"""
    lines = text.split("\n")
    starts = [i for i, ln in enumerate(lines) if ln.strip() == (prefix + START).strip()]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == (prefix + END).strip()]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise SystemExit(f"{where}：要有且只有一对标记 {prefix}{START} … {prefix}{END}")
    body = [(prefix + row).rstrip() for row in table()]
    return "\n".join(lines[: starts[0] + 1] + body + lines[ends[0] :])


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def targets() -> dict[Path, tuple[str, str]]:
    """文件 → (现在的内容, 应有的内容)。"""
    out = {}
    for path, prefix in ((README, ""), (CH01, "# ")):
        text = path.read_text(encoding="utf-8")
        out[path] = (text, _replace(text, prefix, _rel(path)))
    return out


def check() -> list[str]:
    """与清单不一致的文件（相对路径）；空列表表示两处都是最新的。"""
    problems = [_rel(p) for p, (now, want) in targets().items() if now != want]
    for c in CHAPTERS:
        src = HERE / "src" / f"{c.name}.py"
        if c.written != src.exists():
            problems.append(f"{c.name}：清单说{'已写' if c.written else '还没有写'}，但 {src.relative_to(ROOT)} "
                            f"{'不存在' if c.written else '已经存在'}")
    listed = {c.name for c in CHAPTERS}
    for src in sorted((HERE / "src").glob("*.py")):
        if not src.stem.endswith("_solutions") and src.stem not in listed:
            problems.append(f"{src.relative_to(ROOT)} 不在章节清单里")
    return problems


def write() -> None:
    for path, (now, want) in targets().items():
        if now != want:
            path.write_text(want, encoding="utf-8")
            print("已更新", _rel(path))
    sys.path.insert(0, str(HERE))
    try:
        from build import sync
    finally:
        sys.path.pop(0)
    sync("ch01")  # 只改了 Markdown 单元里的文字，notebook 的输出原样保留


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="由章节清单生成 README 与第 1 章的章节表")
    ap.add_argument("--check", action="store_true", help="只检查，不写；不一致时退出码为 1")
    args = ap.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print("章节表与清单不一致：", p, "（运行 python chapters/chapter_map.py 重新生成）")
        return 1 if problems else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
