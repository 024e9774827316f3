"""命令行：train / generate / eval，两条轨道共用这一份（各自提供一个 Track）。

    python -m gpt_numpy train [--recipe=NAME] [--key=value ...]
    python -m gpt_numpy generate [--ckpt DIR] [--prompt 文本] [--max-new-tokens N] ...
    python -m gpt_numpy eval [--ckpt DIR] [--split val]

gpt_torch 用同样的参数：python -m gpt_torch train ...
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CheckpointError
from .config import RECIPES, GPTConfig, TrainConfig, apply_overrides, parse_overrides

EXIT_INTERRUPTED_DEFAULT = 130
EXIT_DIVERGED = 3
EXIT_USAGE = 2


@dataclass
class Track:
    """一条轨道在命令行里需要的操作。"""

    name: str  # "gpt_numpy" 或 "gpt_torch"
    train: Callable[[TrainConfig, dict[str, Any]], Any]
    load_model: Callable[[Path, TrainConfig], Any]
    # stream(model, ids, n, temperature, top_k, top_p, eos_id, seed, use_cache) -> 逐个产出新词元
    stream: Callable[..., Iterator[np.ndarray]]
    eval_loss: Callable[[Any, list[tuple[np.ndarray, np.ndarray]]], float]
    extra_help: str = ""
    classifier: Callable[[], Any] | None = None  # 返回本轨道的分类模块（finetune-cls / classify 用）


def _train_help(track: Track) -> str:
    tfields = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
    mfields = ", ".join(f.name for f in dataclasses.fields(GPTConfig))
    return (
        f"用法：python -m {track.name} train [--recipe=NAME] [--key=value ...]\n\n"
        "训练一个 GPT。不带参数时：人民日报语料、字符级分词、tiny 模型，在 2 核 CPU 上不到 10 分钟。\n"
        "已有检查点时默认从中断处继续（--resume=never 从头开始）。\n\n"
        f"配方 (--recipe)：{', '.join(RECIPES)}\n"
        f"训练字段：{tfields}\n"
        f"模型字段（覆盖预设）：{mfields}\n\n"
        "示例：\n"
        f"  python -m {track.name} train --max_steps=200 --out_dir=runs/试一下\n"
        f"  python -m {track.name} train --recipe=book-verdict     # 原书第 5 章的实验\n"
        f"  python -m {track.name} train --preset=small --tokenizer=bpe --bpe_vocab_size=8000\n"
        + track.extra_help
    )


def parse_train_args(argv: list[str], track: Track) -> tuple[TrainConfig, dict[str, Any]]:
    """把 --key=value 分给 TrainConfig 与 GPTConfig；--recipe 先铺底。"""
    overrides = parse_overrides(argv)
    recipe = overrides.pop("recipe", "default")
    if recipe not in RECIPES:
        raise ValueError(f"未知的配方 {recipe!r}；可选：{', '.join(RECIPES)}")
    merged: dict[str, Any] = {**RECIPES[recipe], **overrides}
    tnames = {f.name for f in dataclasses.fields(TrainConfig)}
    mnames = {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"}
    unknown = [k for k in merged if k not in tnames and k not in mnames]
    if unknown:
        raise ValueError(f"未知的参数 {unknown}；可用的训练字段与模型字段见 --help")
    base = TrainConfig(out_dir=f"runs/{track.name}")
    tcfg = apply_overrides(base, {k: v for k, v in merged.items() if k in tnames})
    model_overrides = {k: v for k, v in merged.items() if k in mnames}
    GPTConfig.preset(tcfg.preset)  # 预设名不对时尽早报错
    return tcfg, model_overrides


def cmd_train(argv: list[str], track: Track) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(_train_help(track))
        return 0
    from .trainer import TrainingDiverged, TrainingInterrupted

    try:
        tcfg, model_overrides = parse_train_args(argv, track)
    except ValueError as e:
        print(f"参数错误：{e}", file=sys.stderr)
        return EXIT_USAGE
    t0 = time.perf_counter()
    try:
        result = track.train(tcfg, model_overrides)
    except TrainingInterrupted as e:
        if e.is_main:
            print(str(e), file=sys.stderr)
        return e.exit_code
    except TrainingDiverged as e:
        print(f"训练发散：{e}", file=sys.stderr)
        return EXIT_DIVERGED
    if not getattr(result, "is_main", True):  # DDP 的非主进程不打印摘要
        return 0
    wall = time.perf_counter() - t0
    val = "—" if result.val_loss is None else f"{result.val_loss:.4f}"
    ppl = "—" if result.val_loss is None else f"{math.exp(result.val_loss):.2f}"
    print(f"\n训练完成：{result.steps} 步，用时 {wall:.1f} 秒，中位吞吐 {result.tokens_per_sec:,.0f} 词元/秒")
    print(f"验证损失 {val}（困惑度 {ppl}），最优验证损失 {result.best_val}")
    print(f"检查点、metrics.jsonl、loss.png、samples.txt 在 {tcfg.out_dir}")
    print("\n样例：\n" + result.sample)
    return 0


def find_ckpt(path: str | None, track: Track) -> Path:
    """--ckpt 可以是检查点目录，也可以是训练输出目录（取其中的 ckpt_best，没有则 ckpt_last）。"""
    from .train_state import BEST, LAST

    base = Path(path) if path else Path(f"runs/{track.name}")
    if (base / "config.json").is_file():
        return base
    for name in (BEST, LAST):
        if (base / name / "config.json").is_file():
            return base / name
    hint = f"先运行 python -m {track.name} train" if not path else "请检查路径"
    raise FileNotFoundError(f"在 {base} 找不到检查点（需要 config.json 与 model.safetensors）；{hint}")


def load_tokenizer_for(ckpt: Path) -> Any:
    from .tokenizers import load_tokenizer

    for cand in (ckpt / "tokenizer.json", ckpt.parent / "tokenizer.json"):
        if cand.is_file():
            return load_tokenizer(cand)
    raise FileNotFoundError(f"检查点 {ckpt} 旁边没有 tokenizer.json")


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """编码提示词；字符级分词器遇到词表外的字符时警告（它们会变成 <|unk|>）。"""
    unknown = getattr(tokenizer, "unknown_chars", None)
    if unknown is not None:
        bad = unknown(prompt)
        if bad:
            chars = "".join(sorted(bad))
            print(f"警告：提示词中的字符 {chars!r} 不在词表中，已替换为 <|unk|>", file=sys.stderr)
    return tokenizer.encode(prompt)


class _StreamPrinter:
    """流式输出：每来一个词元就解码全部新词元，只打印已经完整的字符（字节级 BPE 可能把一个汉字拆开）。"""

    def __init__(self, tokenizer: Any) -> None:
        self.tok, self.ids, self.printed = tokenizer, [], 0

    def push(self, token: int) -> None:
        self.ids.append(int(token))
        text = self.tok.decode(self.ids)
        stable = text.rstrip("\ufffd")
        if len(stable) > self.printed:
            sys.stdout.write(stable[self.printed :])
            sys.stdout.flush()
            self.printed = len(stable)

    def finish(self) -> str:
        text = self.tok.decode(self.ids)
        sys.stdout.write(text[self.printed :] + "\n")
        sys.stdout.flush()
        return text


def cmd_generate(argv: list[str], track: Track) -> int:
    ap = argparse.ArgumentParser(
        prog=f"python -m {track.name} generate", description="用训练好的检查点生成文本（流式输出）"
    )
    ap.add_argument("--ckpt", help=f"检查点目录或训练输出目录（默认 runs/{track.name}）")
    ap.add_argument("--prompt", default="新华社北京", help="提示词（默认：新华社北京）")
    ap.add_argument("--max-new-tokens", type=int, default=200, help="最多生成多少个词元（默认 200）")
    ap.add_argument("--temperature", type=float, default=0.8, help="温度，0 为贪心（默认 0.8）")
    ap.add_argument("--top-k", type=int, default=40, help="只从概率最高的 k 个词元中抽样，0 表示不限（默认 40）")
    ap.add_argument("--top-p", type=float, default=None, help="核采样阈值，如 0.95（默认不用）")
    ap.add_argument("--seed", type=int, default=None, help="随机种子（给定后结果可复现）")
    ap.add_argument("--no-cache", action="store_true", help="不用 KV 缓存（慢，用于对比）")
    ap.add_argument("--num-samples", type=int, default=1, help="生成几段（默认 1）")
    args = ap.parse_args(argv)
    ckpt = find_ckpt(args.ckpt, track)
    tokenizer = load_tokenizer_for(ckpt)
    model = track.load_model(ckpt, TrainConfig())
    ids = encode_prompt(tokenizer, args.prompt) or [tokenizer.eot_id or 0]
    eos = getattr(tokenizer, "eot_id", None)
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        printer = _StreamPrinter(tokenizer)
        sys.stdout.write(args.prompt)
        t0 = time.perf_counter()
        n = 0
        for tok in track.stream(
            model, np.asarray([ids]), args.max_new_tokens, args.temperature, args.top_k or None, args.top_p, eos,
            seed, not args.no_cache,
        ):
            printer.push(int(tok[0]))
            n += 1
        printer.finish()
        dt = time.perf_counter() - t0
        print(f"[{n} 个词元，{n / max(dt, 1e-9):.1f} 词元/秒]", file=sys.stderr)
    return 0


def cmd_eval(argv: list[str], track: Track) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {track.name} eval", description="在数据集上计算损失与困惑度")
    ap.add_argument("--ckpt", help=f"检查点目录或训练输出目录（默认 runs/{track.name}）")
    ap.add_argument("--split", choices=("train", "val"), default="val", help="评估哪一部分（默认 val）")
    ap.add_argument("--data", default=None, help="数据来源（默认用检查点训练时的设置）")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-batches", type=int, default=50, help="最多评估多少个批次（默认 50）")
    args = ap.parse_args(argv)
    import json

    from .batches import eval_batches
    from .prepare import load_texts

    ckpt = find_ckpt(args.ckpt, track)
    tokenizer = load_tokenizer_for(ckpt)
    state_file = ckpt / "trainer_state.json"
    saved = json.loads(state_file.read_text(encoding="utf-8"))["train_config"] if state_file.is_file() else {}
    tcfg = TrainConfig(data=args.data or saved.get("data", "default"), val_fraction=saved.get("val_fraction", 0.1))
    model = track.load_model(ckpt, tcfg)
    text = load_texts(tcfg)[0 if args.split == "train" else 1]
    tokens = np.asarray(tokenizer.encode(text), dtype=np.int64)
    t = model.cfg.context_length
    batches = eval_batches(tokens, args.max_batches, args.batch_size, t, stride=t)
    loss = track.eval_loss(model, batches)
    n = sum(y.size for _, y in batches)
    print(f"{args.split} 集（{tcfg.data}）：{n:,} 个词元，损失 {loss:.4f}，困惑度 {math.exp(loss):.2f}")
    return 0


HELP = """用法：python -m {name} <命令> [参数]

命令：
  train      训练（默认配置无需参数、无需联网）
  generate   用检查点生成文本
  eval       计算损失与困惑度
  finetune-cls  分类微调（第 6 章；--mode=lora 即附录 E 的 LoRA）
  classify   用分类检查点判断文本的类别

每个命令加 --help 查看详细参数。
"""


def main(argv: list[str] | None, track: Track) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP.format(name=track.name))
        return 0 if argv else EXIT_USAGE
    cmd, rest = argv[0], argv[1:]
    commands = {"train": cmd_train, "generate": cmd_generate, "eval": cmd_eval}
    if track.classifier is not None:  # 分类微调的两个命令（实现在 llmcore/finetune/cls_cli.py）
        from .finetune import cls_cli

        commands["finetune-cls"] = lambda a, t: cls_cli.cmd_finetune_cls(a, t.name, t.classifier())
        commands["classify"] = lambda a, t: cls_cli.cmd_classify(a, t.name, t.classifier())
    if cmd not in commands:
        print(f"未知命令 {cmd!r}；可用命令：{', '.join(commands)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return commands[cmd](rest, track)
    except (FileNotFoundError, ValueError, OSError, CheckpointError) as e:
        print(f"错误：{e}", file=sys.stderr)
        return 1
