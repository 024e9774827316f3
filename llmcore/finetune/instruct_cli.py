"""命令行：finetune-sft（指令微调）、finetune-dpo（偏好调优）、eval-instruct（在基准上打分），两条轨道共用。

    python -m gpt_numpy finetune-sft [--key=value ...]     # 字段见 SFTConfig，--help 列出
    python -m gpt_numpy finetune-dpo --ckpt=runs/sft        # 字段见 DPOConfig
    python -m gpt_numpy eval-instruct --ckpt=runs/sft --name=SFT --header=true

布尔字段可以只写名字（--mask_prompt 即 --mask_prompt=true）。参数错误、数据、分词器、检查点出错时抛出带类型的
异常，由 llmcore/cli.py 的 main 变成一行中文与对应的退出码。
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from ..config import apply_overrides, parse_overrides
from ..errors import UsageError
from .instruct_eval import results_header, results_row, row_tasks
from .instruct_run import NO_DEVICE, DPOConfig, EvalConfig, SFTConfig, evaluate_checkpoint, run_dpo, run_sft

C = TypeVar("C")

FIELD_HELP = {
    "ckpt": "起点检查点：检查点目录、输出目录（取其中的 ckpt_best / ckpt_last / ckpt），或 HF 格式的 GPT-2 目录",
    "tokenizer": "分词器 JSON 或 gpt2；缺省用检查点里（或旁边）的 tokenizer.json",
    "data": "bench-zh（中文基准的训练划分）| book（原书的 instruction-data.json，经下载助手）| "
            ".json/.jsonl 文件（按原书比例切分）| 含 train/val/test.jsonl 的目录",
    "tasks": "只用这些任务，逗号分隔（sentiment,segment,entity,pinyin,t2s）；缺省全部",
    "split_seed": "基准的抽样种子",
    "lang": "提示模板：zh | en | auto（book 用英文模板，其余用中文）",
    "mode": "full（全部参数）| lora（冻结原参数，只训练 LoRA 的 A、B；结束时并回权重，另存适配器）",
    "lora_rank": "LoRA 的秩 r", "lora_alpha": "LoRA 的 alpha（缩放 alpha / r）",
    "lora_targets": "加 LoRA 的层：all | attn | qv | 逗号分隔的模块路径",
    "mask_prompt": "提示部分的目标写 -100，只在回答上算损失（--mask_prompt=false 则提示也算）",
    "allowed_max_length": "每批截断到这个长度（原书的 allowed_max_length）；0 = 模型的上下文长度",
    "batch_size": "批大小", "epochs": "训练轮数", "max_steps": "> 0 时按步数训练（优先于 --epochs）",
    "lr": "学习率（AdamW，恒定）", "weight_decay": "权重衰减", "grad_clip": "梯度裁剪的范数上限，0 = 不裁剪",
    "eval_interval": "每这么多步在验证集上评估一次", "eval_limit": "训练途中的评估只用验证集的前这么多条（0 = 全部）",
    "eval_split": "训练后在哪个划分上生成并打分：test | val | none",
    "max_new_tokens": "打分时每题最多生成的词元数",
    "limit_train": "只用训练集的前 N 条（0 = 全部）", "limit_val": "只用验证集的前 N 条",
    "limit_test": "只用测试集的前 N 条",
    "seed": "随机种子（打乱顺序、LoRA 初始化、造错答）", "dtype": "float32 | float64",
    "device": "仅 gpt_torch：auto | cpu | cuda | mps", "on_bad": "空回答、超长的条目：skip（跳过并计数）| error",
    "out_dir": "输出目录：ckpt/、result.json、metrics.jsonl、answers.jsonl（LoRA 时还有 adapter.safetensors）",
    "progress": "显示进度条",
    "pairs": "偏好对：rule（按任务规则造错答）| self（起点模型自己答错的回答；答对的用规则补造）"
             "| 偏好对文件 .json/.jsonl",
    "beta": "DPO 的 beta（隐式奖励的温度）", "average_logprobs": "回答的对数概率除以词元数（默认求和）",
    "split": "评测哪个划分：test | val | train", "limit": "只评前 N 题（0 = 全部）",
    "name": "表格行的名字；缺省用检查点路径", "header": "先打印表头两行", "out": "另把结果写成 JSON 文件",
    "answers": "另把每题的回答写成 JSONL 文件",
}

_INTRO = {
    "finetune-sft": ("指令微调 (SFT)：在 Alpaca 格式的指令数据上继续训练语言模型\n"
                     "（默认 runs/base-zh 的基座、中文基准的训练划分），"
                     "结束时在测试集上逐题贪心生成，按任务给出完全匹配 (EM) 与 F1。"),
    "finetune-dpo": ("偏好调优 (DPO)：从 SFT 检查点出发（它的冻结副本作参照模型），在偏好对上训练；\n"
                     "metrics.jsonl 记录损失、奖励差 (margin) 与偏好准确率，结束时与 SFT 一样在测试集上打分。"),
    "eval-instruct": ("在中文基准（或其它指令数据）的一个划分上给任意语言模型检查点打分，打印一行 Markdown 表格：\n"
                      "每格是“EM / F1”（百分比）。多次运行（基座、SFT、SFT+DPO）的行拼起来就是一张对比表。"),
}

_EXAMPLES = {
    "finetune-sft": [
        "--ckpt=runs/base-zh --out_dir=runs/sft",
        "--mode=lora --lora_rank=16 --lora_alpha=32 --lr=5e-4 --out_dir=runs/sft-lora",
        "--tasks=sentiment,pinyin --max_steps=500 --mask_prompt=false",
        "--data=book --ckpt=我的GPT-2目录 --batch_size=8 --epochs=2   # 原书的做法（英文）",
    ],
    "finetune-dpo": [
        "--ckpt=runs/sft --out_dir=runs/dpo",
        "--ckpt=runs/sft --pairs=self --beta=0.1 --lr=5e-6",
    ],
    "eval-instruct": [
        "--ckpt=runs/base-zh --name=基座 --header=true > table.md",
        "--ckpt=runs/sft --name=SFT >> table.md",
        "--ckpt=runs/dpo --name=SFT+DPO --limit=100 --answers=runs/dpo/test-answers.jsonl >> table.md",
    ],
}


def help_text(command: str, track_name: str, cls: type, defaults: dict[str, Any]) -> str:
    """--help：说明、每个字段的默认值与中文解释、示例、退出码。"""
    from ..cli import EXIT_HELP

    lines = [f"用法：python -m {track_name} {command} [--key=value ...]", "", _INTRO[command], "", "字段（默认值）："]
    proto = {f.name: (defaults.get(f.name, f.default)) for f in dataclasses.fields(cls)}
    for name, default in proto.items():
        if name == "device" and track_name != "gpt_torch":
            continue
        shown = str(default).lower() if isinstance(default, bool) else default
        lines.append(f"  --{name}={shown}".ljust(34) + "  " + FIELD_HELP.get(name, ""))
    lines += ["", "示例："] + [f"  python -m {track_name} {command} {ex}" for ex in _EXAMPLES[command]]
    return "\n".join(lines) + "\n" + EXIT_HELP


def parse_config(cls: type[C], argv: list[str], track_name: str, defaults: dict[str, Any]) -> C:
    """--key=value → 设置对象；布尔字段可只写名字；未知字段、取值错误都是 UsageError（说出是哪个参数）。"""
    bools = {k for k, tp in typing.get_type_hints(cls).items() if tp is bool}
    args = [f"{a}=true" if a.startswith("--") and "=" not in a and a[2:].replace("-", "_") in bools else a
            for a in argv]
    try:
        overrides = parse_overrides(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if track_name != "gpt_torch" and "device" in overrides:
        raise UsageError(NO_DEVICE.format(track=track_name))
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise UsageError(f"未知的参数 {', '.join('--' + k for k in unknown)}；可用的字段见 --help")
    try:
        return apply_overrides(cls(**defaults), overrides)
    except UsageError:
        raise
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def _wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def cmd_finetune_sft(argv: list[str], track_name: str, get_mod: Callable[[], Any]) -> int:
    defaults = {"out_dir": f"runs/sft-{track_name}"}
    if _wants_help(argv):
        print(help_text("finetune-sft", track_name, SFTConfig, defaults))
        return 0
    cfg = parse_config(SFTConfig, argv, track_name, defaults)
    res = run_sft(cfg, get_mod(), track_name)
    _print_row("SFT", res)
    return 0


def cmd_finetune_dpo(argv: list[str], track_name: str, get_mod: Callable[[], Any]) -> int:
    defaults = {"ckpt": f"runs/sft-{track_name}", "out_dir": f"runs/dpo-{track_name}"}
    if _wants_help(argv):
        print(help_text("finetune-dpo", track_name, DPOConfig, defaults))
        return 0
    cfg = parse_config(DPOConfig, argv, track_name, defaults)
    res = run_dpo(cfg, get_mod(), track_name)
    _print_row("SFT+DPO", res)
    return 0


def cmd_eval_instruct(argv: list[str], track_name: str, get_mod: Callable[[], Any]) -> int:
    defaults = {"ckpt": f"runs/sft-{track_name}"}
    if _wants_help(argv):
        print(help_text("eval-instruct", track_name, EvalConfig, defaults))
        return 0
    cfg = parse_config(EvalConfig, argv, track_name, defaults)
    res = evaluate_checkpoint(cfg, get_mod(), track_name)
    tasks = row_tasks(res["scores"])
    if cfg.header:
        print(results_header(tasks))
    print(results_row(cfg.name or res["checkpoint"], res["scores"], tasks))
    return 0


def _print_row(name: str, res: dict[str, Any]) -> None:
    """训练命令的标准输出：有打分时是一行 Markdown（与 eval-instruct 的格式相同），否则是检查点路径。"""
    if res.get("scores"):
        print(results_row(name, res["scores"]))
    else:
        print(res["checkpoint"])
    sys.stdout.flush()


__all__ = ["FIELD_HELP", "cmd_eval_instruct", "cmd_finetune_dpo", "cmd_finetune_sft", "help_text", "parse_config"]
