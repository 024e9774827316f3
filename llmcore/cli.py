"""命令行：train / generate / eval，两条轨道共用这一份（各自提供一个 Track）。

    python -m gpt_numpy train [--recipe=NAME] [--key=value ...]
    python -m gpt_numpy generate [--ckpt DIR] [--prompt 文本] [--max-new-tokens N] ...
    python -m gpt_numpy eval [--ckpt DIR] [--split val]
    python -m gpt_numpy serve [--ckpt DIR] [--host H] [--port P] [--model-name NAME]
    python -m gpt_numpy generate --ckpt=runs/sft --instruction=指令 [--input=输入]   # 指令微调后的模型

gpt_torch 用同样的参数：python -m gpt_torch train ...

错误边界：参数、数据、分词器、检查点、下载、设备、输出目录出问题，以及 Ctrl-C，都在 main() 里变成
一行中文（说出是什么、该怎么办）和一个固定的退出码（见 llmcore/errors.py）；只有加 --debug 或设置
LLMZH_DEBUG=1 时才打印回溯。所有参数在准备数据之前就检查完。
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .checkpoint import CheckpointError
from .config import RECIPES, GPTConfig, TrainConfig, apply_overrides, parse_overrides
from .errors import (
    EXIT_DIVERGED,
    EXIT_INTERNAL,
    EXIT_OUTPUT,
    EXIT_SIGINT,
    EXIT_USAGE,
    DataError,
    LLMError,
    TokenizerError,
    UsageError,
    debug_enabled,
)

EXIT_INTERRUPTED_DEFAULT = EXIT_SIGINT
__all__ = ["EXIT_DIVERGED", "EXIT_USAGE", "Track", "main"]


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
    # 本轨道不接受的训练字段（如 NumPy 轨道没有 device/compile/amp）：--help 不列出，命令行给出时报错
    excluded_fields: tuple[str, ...] = ()
    excluded_hint: str = ""
    # 训练开始前、准备数据之前的轨道专属检查（如设备是否存在）；不合法时抛出 LLMError
    check_train: Callable[[TrainConfig], None] | None = None
    # load_qwen3(目录, 权重格式或 None) -> 有 step/new_cache 的 Qwen3 模型（chat 命令用）
    load_qwen3: Callable[[Path, str | None], Any] | None = None
    classifier: Callable[[], Any] | None = None  # 返回本轨道的分类模块（finetune-cls / classify 用）
    instruct: Callable[[], Any] | None = None  # 返回本轨道的指令模块（finetune-sft / finetune-dpo / eval-instruct 用）


def _train_help(track: Track) -> str:
    tfields = ", ".join(f.name for f in dataclasses.fields(TrainConfig) if f.name not in track.excluded_fields)
    mfields = ", ".join(f.name for f in dataclasses.fields(GPTConfig) if f.name != "vocab_size")
    return (
        f"用法：python -m {track.name} train [--recipe=NAME] [--key=value ...]\n\n"
        "训练一个 GPT。不带参数时：人民日报语料、字符级分词、tiny 模型，在 2 核 CPU 上不到 10 分钟。\n"
        "已有检查点时默认从中断处继续；--resume=never 从头开始（输出目录里已有旧的运行时还要加 --overwrite=true）。\n"
        "续训时优化器状态缺失或损坏，可加 --weights_only=true 只载入模型权重。\n\n"
        f"配方 (--recipe)：{', '.join(RECIPES)}（命令行上写出的字段优先于配方；"
        "配方按轮数训练时写 --max_steps 即改为按步数）\n"
        f"训练字段：{tfields}\n"
        f"模型字段（覆盖预设；vocab_size 由分词器决定）：{mfields}\n\n"
        "示例：\n"
        f"  python -m {track.name} train --max_steps=200 --out_dir=runs/试一下\n"
        f"  python -m {track.name} train --recipe=book-verdict     # 原书第 5 章的实验\n"
        f"  python -m {track.name} train --preset=small --tokenizer=bpe --bpe_vocab_size=8000\n"
        + track.extra_help + EXIT_HELP
    )


def parse_train_args(argv: list[str], track: Track) -> tuple[TrainConfig, dict[str, Any]]:
    """把 --key=value 分给 TrainConfig 与 GPTConfig；--recipe 先铺底，命令行上写出的值优先。"""
    try:
        overrides = parse_overrides(argv)
    except ValueError as e:
        raise UsageError(str(e)) from None
    recipe = overrides.pop("recipe", "default")
    if recipe not in RECIPES:
        raise UsageError(f"未知的配方 {recipe!r}；可选：{', '.join(RECIPES)}")
    typed = set(overrides)
    if "vocab_size" in typed:
        raise UsageError("vocab_size 由分词器决定，不能在命令行指定（BPE 分词器的词表大小用 --bpe_vocab_size）")
    bad = [k for k in typed if k in track.excluded_fields]
    if bad:
        raise UsageError(f"{track.name} 不接受参数 {', '.join('--' + k for k in bad)}{track.excluded_hint}")
    merged: dict[str, Any] = {**RECIPES[recipe], **overrides}
    tnames = {f.name for f in dataclasses.fields(TrainConfig)}
    mnames = {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"}
    unknown = [k for k in merged if k not in tnames and k not in mnames]
    if unknown:
        raise UsageError(f"未知的参数 {unknown}；可用的训练字段与模型字段见 --help")
    # 命令行写出的 max_steps 优先于配方里的 epochs；两个都写出来则冲突
    if "max_steps" in typed and "epochs" in typed:
        raise UsageError("--max_steps 与 --epochs 只能给一个（按步数训练，或按轮数训练）")
    if "max_steps" in typed and "epochs" in merged:
        merged["epochs"] = 0
    base = TrainConfig(out_dir=f"runs/{track.name}")
    tvals = {k: v for k, v in merged.items() if k in tnames}
    try:
        no_min = {k: v for k, v in tvals.items() if k != "min_lr"}
        probe = apply_overrides(dataclasses.replace(base, min_lr=0.0), no_min)
        # 只写了 --lr 而默认（或配方）的 min_lr 比它大：min_lr 跟着取 lr 的十分之一，并说出来
        if "min_lr" not in typed and "lr" in typed:
            default_min = float(tvals.get("min_lr", base.min_lr))
            if default_min > probe.lr:
                tvals["min_lr"] = probe.lr / 10
                print(f"提示：默认的 min_lr={default_min:g} 大于 --lr={probe.lr:g}，改用 min_lr={probe.lr / 10:g}",
                      file=sys.stderr)
        tcfg = apply_overrides(base, tvals)
        if "warmup_steps" in typed and tcfg.epochs == 0 and 0 < tcfg.max_steps <= tcfg.warmup_steps:
            raise UsageError(f"--warmup_steps={tcfg.warmup_steps} 应小于 max_steps={tcfg.max_steps}")
        model_overrides = {k: v for k, v in merged.items() if k in mnames}
        apply_overrides(GPTConfig.preset(tcfg.preset), model_overrides)  # 模型字段的取值也在这里检查
    except LLMError:
        raise
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    return tcfg, model_overrides


def _remove_failed_new_dir(out: Path) -> None:
    """这次运行新建的输出目录，还没写出任何检查点就失败了：整个删掉，不留下半成品（分词器、词元缓存）。"""
    import shutil

    from .train_state import previous_run_files

    if out.is_dir() and not previous_run_files(out):
        shutil.rmtree(out, ignore_errors=True)


def _is_main_process() -> bool:
    """torchrun 启动的多进程里只有全局第 0 个进程管输出目录（加锁、检查、清理）。"""
    return os.environ.get("RANK", "0") == "0"


def cmd_train(argv: list[str], track: Track) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(_train_help(track))
        return 0
    from .prepare import check_data_source, check_tokenizer_source
    from .run_lock import RunLock
    from .train_state import check_output_dir, check_writable
    from .trainer import TrainingInterrupted

    tcfg, model_overrides = parse_train_args(argv, track)  # 参数错误在这里就结束，不碰任何文件
    if track.check_train is not None:
        track.check_train(tcfg)
    check_data_source(tcfg.data)
    check_tokenizer_source(tcfg.tokenizer)
    out = Path(tcfg.out_dir)
    existed = out.exists()
    lock = None
    ok = False
    try:
        if _is_main_process():
            check_writable(out, 0)
            lock = RunLock(out).acquire()
            removed = check_output_dir(tcfg)
            if removed:
                print(f"--overwrite=true：已删除 {out} 里上一次运行的 {'、'.join(removed)}", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            result = track.train(tcfg, model_overrides)
            ok = True
        except TrainingInterrupted as e:
            ok = True
            if e.is_main:
                print(str(e), file=sys.stderr)
            return e.exit_code
        except KeyboardInterrupt:
            print(f"\n收到 Ctrl-C，立即退出；{out} 里已保存的检查点不受影响，用同样的命令即可续训", file=sys.stderr)
            return EXIT_SIGINT
    finally:
        if lock is not None:
            lock.release()
        if not ok and not existed and lock is not None:
            _remove_failed_new_dir(out)
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
    """--ckpt 可以是检查点目录，也可以是训练输出目录（取其中的 ckpt_best，没有则 ckpt_last；微调的输出目录取 ckpt）。

    写检查点时在两次改名之间崩溃会留下 .ckpt_best.old / .ckpt_last.old：这里与续训一样会找到它。
    """
    from .train_state import BEST, LAST, find_checkpoint

    base = Path(path) if path else Path(f"runs/{track.name}")
    if (base / "config.json").is_file():
        return base
    for name in (BEST, LAST, "ckpt"):  # ckpt：微调命令（finetune-cls / finetune-sft / finetune-dpo）的输出
        found = find_checkpoint(base, name)
        if found is not None:
            if found.name.endswith(".old"):
                print(f"提示：{base / name} 不在（写检查点时中断过），改用恢复副本 {found}", file=sys.stderr)
            return found
    hint = f"先运行 python -m {track.name} train" if not path else "请检查路径"
    raise CheckpointError(f"在 {base} 找不到检查点（需要 config.json 与 model.safetensors）；{hint}")


def load_tokenizer_for(ckpt: Path) -> Any:
    """检查点自带的 tokenizer.json（按 manifest 核对），没有时用训练输出目录里的那份。"""
    from .checkpoint import verify_files
    from .prepare import read_tokenizer

    for cand in (ckpt / "tokenizer.json", ckpt.parent / "tokenizer.json"):
        if cand.is_file():
            if cand.parent == ckpt:
                verify_files(ckpt, ["tokenizer.json"])
            return read_tokenizer(cand)
    raise TokenizerError(f"检查点 {ckpt} 里（和它的上一级目录里）没有 tokenizer.json，无法把文字变成词元")


def check_vocab(tokenizer: Any, model: Any, ckpt: Path) -> None:
    """分词器的词表必须与模型的词表一样大，否则生成的 id 会越界或对应错的字。"""
    n_tok, n_model = int(tokenizer.vocab_size), int(model.cfg.vocab_size)
    if n_tok != n_model:
        raise TokenizerError(
            f"{ckpt} 的分词器有 {n_tok} 个词元，模型的词表是 {n_model}：两者不是一起训练的，请用同一次训练的检查点"
        )


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
        self.tok, self.printed = tokenizer, 0
        self.ids: list[int] = []

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


# ---------------------------------------------------------------------------- 带检查的 argparse
_ARGPARSE_ZH = [
    (r"^argument (\S+?)(/\S+)?: ", r"参数 \1："),
    (r"unrecognized arguments: ", "无法识别的参数："),
    (r"expected one argument", "需要一个取值"),
    (r"invalid choice: ", "取值不在可选范围内："),
    (r"\(choose from ", "（可选："),
    (r"the following arguments are required: ", "缺少参数："),
    (r"ambiguous option: ", "参数名有歧义："),
    (r"invalid (\w+) value: ", r"取值无法转换为 \1："),
]


class _Parser(argparse.ArgumentParser):
    """参数错误不打印用法、不直接退出，而是抛出 UsageError（由 main 变成一行）。"""

    def error(self, message: str) -> NoReturn:
        for pat, rep in _ARGPARSE_ZH:
            message = re.sub(pat, rep, message)
        raise UsageError(f"{message}（{self.prog} --help 查看用法）")


def _int_min(lo: int) -> Callable[[str], int]:
    def conv(v: str) -> int:
        try:
            x = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"需要整数，收到 {v!r}") from None
        if x < lo:
            raise argparse.ArgumentTypeError(f"需要 ≥ {lo} 的整数，收到 {x}")
        return x

    return conv


def _float_in(lo: float, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    def conv(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"需要数，收到 {v!r}") from None
        ok = math.isfinite(x) and (x > lo if lo_open else x >= lo) and (hi is None or x <= hi)
        if not ok:
            left = "(" if lo_open else "["
            rng = f"{left}{lo:g}, {hi:g}]" if hi is not None else f"{left}{lo:g}, ∞)"
            raise argparse.ArgumentTypeError(f"需要 {rng} 内的有限数，收到 {v!r}")
        return x

    return conv


def cmd_generate(argv: list[str], track: Track) -> int:
    ap = _Parser(prog=f"python -m {track.name} generate", description="用训练好的检查点生成文本（流式输出）",
                 epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help=f"检查点目录或训练输出目录（默认 runs/{track.name}）")
    ap.add_argument("--prompt", default=None, help="提示词（默认：新华社北京）")
    ap.add_argument("--instruction", default=None,
                    help="指令（用于指令微调后的模型）：按第 7 章的模板排成提示，只打印模型的回答；与 --prompt 二选一")
    ap.add_argument("--input", default=None, help="指令的输入部分（可选，配合 --instruction）")
    ap.add_argument("--lang", choices=("zh", "en"), default=None,
                    help="指令模板的语言（默认按检查点记录的，没有则 zh）")
    ap.add_argument("--max-new-tokens", type=_int_min(1), default=200,
                    help="最多生成多少个词元，≥ 1（默认 200）")
    ap.add_argument("--temperature", type=_float_in(0.0), default=None,
                    help="温度，≥ 0，0 为贪心（默认 0.8；给了 --instruction 时默认 0，与评测相同）")
    ap.add_argument("--top-k", type=_int_min(0), default=40,
                    help="只从概率最高的 k 个词元中抽样，0 表示不限（默认 40）")
    ap.add_argument("--top-p", type=_float_in(0.0, 1.0, lo_open=True), default=None,
                    help="核采样阈值，(0, 1] 内，如 0.95（默认不用）")
    ap.add_argument("--seed", type=_int_min(0), default=None, help="随机种子（给定后结果可复现）")
    ap.add_argument("--no-cache", action="store_true", help="不用 KV 缓存（慢，用于对比）")
    ap.add_argument("--num-samples", type=_int_min(1), default=1, help="生成几段，≥ 1（默认 1）")
    args = ap.parse_args(argv)
    if args.instruction is not None and args.prompt is not None:
        raise UsageError("--prompt 与 --instruction 只能给一个（--instruction 会按指令模板自己排出提示）")
    if args.instruction is None and (args.input is not None or args.lang is not None):
        raise UsageError("--input 与 --lang 只配合 --instruction 使用")
    if args.instruction is not None and not args.instruction.strip():
        raise UsageError("--instruction 不能为空")
    ckpt = find_ckpt(args.ckpt, track)
    tokenizer = load_tokenizer_for(ckpt)
    model = track.load_model(ckpt, TrainConfig())
    check_vocab(tokenizer, model, ckpt)
    eos = getattr(tokenizer, "eot_id", None)
    if args.instruction is not None:
        return _generate_instruction(args, ckpt, track, model, tokenizer, eos)
    prompt = "新华社北京" if args.prompt is None else args.prompt
    temperature = 0.8 if args.temperature is None else args.temperature
    ids = encode_prompt(tokenizer, prompt) or [tokenizer.eot_id or 0]
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        printer = _StreamPrinter(tokenizer)
        sys.stdout.write(prompt)
        t0 = time.perf_counter()
        n = 0
        try:
            for tok in track.stream(
                model, np.asarray([ids]), args.max_new_tokens, temperature, args.top_k or None, args.top_p, eos,
                seed, not args.no_cache,
            ):
                printer.push(int(tok[0]))
                n += 1
        except KeyboardInterrupt:
            printer.finish()
            print(f"已中断生成（Ctrl-C），共生成 {n} 个词元", file=sys.stderr)
            return EXIT_SIGINT
        printer.finish()
        dt = time.perf_counter() - t0
        print(f"[{n} 个词元，{n / max(dt, 1e-9):.1f} 词元/秒]", file=sys.stderr)
    return 0


def _generate_instruction(args: argparse.Namespace, ckpt: Path, track: Track, model: Any, tokenizer: Any,
                          eos: int | None) -> int:
    """指令模式：按第 7 章的模板排出提示，生成到结束词元，只打印取出的回答（每段一行起）。"""
    from .checkpoint import read_config
    from .finetune.instruct_data import format_prompt
    from .finetune.instruct_eval import extract_response

    lang = args.lang or read_config(ckpt).get("lang") or "zh"
    if lang not in ("zh", "en"):
        raise CheckpointError(f"{ckpt / 'config.json'} 里的 lang={lang!r} 不对：应为 zh 或 en；可用 --lang 指定")
    prompt = format_prompt({"instruction": args.instruction, "input": args.input or ""}, lang)
    ids = encode_prompt(tokenizer, prompt)
    temperature = 0.0 if args.temperature is None else args.temperature
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        new: list[int] = []
        try:
            for tok in track.stream(model, np.asarray([ids]), args.max_new_tokens, temperature, args.top_k or None,
                                    args.top_p, eos, seed, not args.no_cache):
                if eos is not None and int(tok[0]) == eos:
                    break
                new.append(int(tok[0]))
        except KeyboardInterrupt:
            print(f"已中断生成（Ctrl-C），共生成 {len(new)} 个词元", file=sys.stderr)
            return EXIT_SIGINT
        print(extract_response(tokenizer.decode(new), lang))
    return 0


def _eval_tokens(args: argparse.Namespace, ckpt: Path, saved: dict[str, Any], tokenizer: Any) -> tuple[np.ndarray, str]:
    """评估用的词元。--data 由用户给出；否则用检查点记录的数据来源，但只在它是内置数据、或位于用户给的
    目录之内时才读取——检查点里的路径不会被跟到别处。训练输出目录里的词元缓存 (data/*.npy) 可以直接用。"""
    from .datasets import load_tokens
    from .prepare import BUILTIN_DATA, load_texts

    data = args.data or saved.get("data", "default")
    if not isinstance(data, str):
        raise CheckpointError(f"{ckpt / 'trainer_state.json'} 中的 train_config.data 应为字符串，实际是 {data!r}")
    val_fraction = saved.get("val_fraction", 0.1)
    if args.data is None and data not in BUILTIN_DATA:
        allowed = Path(args.ckpt).resolve()
        inside = Path(data).resolve().is_relative_to(allowed)
        if not inside:
            run_dir = ckpt.parent if ckpt.name.lstrip(".").startswith("ckpt_") else ckpt
            cache = run_dir / "data"
            try:
                import json

                meta = json.loads((cache / "meta.json").read_text(encoding="utf-8"))
                usable = meta.get("data") == data and meta.get("vocab_size") == tokenizer.vocab_size
            except (OSError, ValueError, AttributeError):
                usable = False
            if usable and (cache / f"{args.split}.npy").is_file():
                return np.asarray(load_tokens(cache / f"{args.split}.npy"), dtype=np.int64), data
            raise UsageError(
                f"检查点记录的训练数据 {data!r} 在检查点目录之外，不会自动读取；请用 --data 指定要评估的文本"
            )
    try:
        tcfg = TrainConfig(data=data, val_fraction=val_fraction)
    except ValueError as e:
        raise CheckpointError(f"{ckpt / 'trainer_state.json'} 中的数据设置无效：{e}") from None
    text = load_texts(tcfg)[0 if args.split == "train" else 1]
    return np.asarray(tokenizer.encode(text), dtype=np.int64), data


def cmd_eval(argv: list[str], track: Track) -> int:
    ap = _Parser(prog=f"python -m {track.name} eval", description="在数据集上计算损失与困惑度",
                 epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help=f"检查点目录或训练输出目录（默认 runs/{track.name}）")
    ap.add_argument("--split", choices=("train", "val"), default="val", help="评估哪一部分（默认 val）")
    ap.add_argument("--data", default=None, help="数据来源（默认用检查点训练时的设置）")
    ap.add_argument("--batch-size", type=_int_min(1), default=8, help="批大小，≥ 1（默认 8）")
    ap.add_argument("--max-batches", type=_int_min(1), default=50, help="最多评估多少个批次，≥ 1（默认 50）")
    args = ap.parse_args(argv)
    from .batches import eval_batches
    from .checkpoint import read_json_object, verify_files
    from .prepare import check_data_source
    from .train_state import validate_trainer_state

    if args.data is not None:
        check_data_source(args.data)
    if args.ckpt is None:
        args.ckpt = f"runs/{track.name}"
    ckpt = find_ckpt(args.ckpt, track)
    tokenizer = load_tokenizer_for(ckpt)
    state_file = ckpt / "trainer_state.json"
    saved: dict[str, Any] = {}
    verify_files(ckpt, ["trainer_state.json"])  # 清单里登记了它却不在（或被改过）：不猜数据来源
    if state_file.is_file():
        state = read_json_object(state_file)
        validate_trainer_state(state, state_file)
        saved = state.get("train_config", {})
    model = track.load_model(ckpt, TrainConfig())
    check_vocab(tokenizer, model, ckpt)
    tokens, data = _eval_tokens(args, ckpt, saved, tokenizer)
    t = model.cfg.context_length
    try:
        batches = eval_batches(tokens, args.max_batches, args.batch_size, t, stride=t)
    except ValueError as e:
        raise DataError(f"{e}（{args.split} 集，数据 {data!r}）：文本太短，无法评估") from None
    loss = track.eval_loss(model, batches)
    n = sum(y.size for _, y in batches)
    print(f"{args.split} 集（{data}）：{n:,} 个词元，损失 {loss:.4f}，困惑度 {math.exp(loss):.2f}")
    return 0


def cmd_serve(argv: list[str], track: Track) -> int:
    from .server.run import cmd_serve as serve

    return serve(argv, track)


def cmd_chat(argv: list[str], track: Track) -> int:
    from .qwen3.chat_cli import run_chat

    return run_chat(argv, track.name, track.load_qwen3)


EXIT_HELP = """
退出码：0 成功；1 内部错误；2 参数错误；3 训练发散；4 数据错误；5 分词器错误；6 检查点错误；
7 下载错误；8 设备错误；9 输出目录错误（不可写、被占用、已有旧的运行）；130 Ctrl-C；143 SIGTERM。
出错时只打印一行说明；要看完整回溯，加 --debug 或设置环境变量 LLMZH_DEBUG=1。
"""

HELP = """用法：python -m {name} <命令> [参数]

命令：
  train      训练（默认配置无需参数、无需联网）
  generate   用检查点生成文本
  eval       计算损失与困惑度
  serve      启动 OpenAI 兼容的服务器与聊天页面（需要 pip install -e ".[serve]"）
  chat       与 Qwen3 多轮对话（流式输出，/reset 清空，Ctrl-C 停止当前回复）
  finetune-cls  分类微调（第 6 章；--mode=lora 即附录 E 的 LoRA）
  classify   用分类检查点判断文本的类别
  finetune-sft  指令微调（第 7 章；默认在中文基准上训练并按任务打分）
  finetune-dpo  偏好调优 DPO（第 7 章；从 SFT 检查点出发）
  eval-instruct 在中文基准上给检查点打分，打印一行 Markdown 表格

每个命令加 --help 查看详细参数。
""" + EXIT_HELP

_PREFIX = {
    "UsageError": "参数错误", "DataError": "数据错误", "TokenizerError": "分词器错误", "CheckpointError": "检查点错误",
    "DownloadError": "下载错误", "NotCachedError": "下载错误", "DeviceError": "设备错误",
    "OutputDirError": "输出目录错误", "TrainingDiverged": "训练发散", "ResumeError": "参数错误",
}


def describe_error(e: BaseException) -> tuple[int, str]:
    """异常 → (退出码, 一行中文说明)。"""
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, LLMError):
        prefix = next((_PREFIX[c.__name__] for c in type(e).__mro__ if c.__name__ in _PREFIX), "错误")
        return e.exit_code, f"{prefix}：{msg}"
    if isinstance(e, MemoryError):
        return EXIT_INTERNAL, "内存不足：请减小 --batch_size、--context_length 或模型规模"
    if isinstance(e, OSError):
        where = f"（{e.filename}）" if getattr(e, "filename", None) else ""
        return EXIT_OUTPUT, f"文件读写错误{where}：{e.strerror or msg}"
    return EXIT_INTERNAL, (
        f"内部错误（{type(e).__name__}）：{msg}；这是程序的缺陷，请加 --debug 或设置 LLMZH_DEBUG=1 重跑并报告回溯"
    )


def main(argv: list[str] | None, track: Track) -> int:
    """命令行入口（两条轨道共用）：分派子命令，并把所有可预期的错误变成一行说明与退出码。"""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_enabled() or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP.format(name=track.name))
        return 0 if argv else EXIT_USAGE
    cmd, rest = argv[0], argv[1:]
    commands: dict[str, Callable[[list[str], Track], int]] = {
        "train": cmd_train, "generate": cmd_generate, "eval": cmd_eval, "serve": cmd_serve, "chat": cmd_chat,
    }
    classifier = track.classifier
    if classifier is not None:  # 分类微调的两个命令（实现在 llmcore/finetune/cls_cli.py）
        from .finetune import cls_cli

        commands["finetune-cls"] = lambda a, t: cls_cli.cmd_finetune_cls(a, t.name, classifier())
        commands["classify"] = lambda a, t: cls_cli.cmd_classify(a, t.name, classifier())
    instruct = track.instruct
    if instruct is not None:  # 第 7 章的三个命令（实现在 llmcore/finetune/instruct_cli.py）
        from .finetune import instruct_cli

        commands["finetune-sft"] = lambda a, t: instruct_cli.cmd_finetune_sft(a, t.name, instruct)
        commands["finetune-dpo"] = lambda a, t: instruct_cli.cmd_finetune_dpo(a, t.name, instruct)
        commands["eval-instruct"] = lambda a, t: instruct_cli.cmd_eval_instruct(a, t.name, instruct)
    if cmd not in commands:
        print(f"参数错误：未知命令 {cmd!r}；可用命令：{', '.join(commands)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return commands[cmd](rest, track)
    except KeyboardInterrupt:
        if debug:
            raise
        print("\n已中断（Ctrl-C）", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:  # 输出被管道的另一头关掉了（如 | head）：安静地结束
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except Exception as e:
        if debug:
            raise
        code, line = describe_error(e)
        if getattr(e, "is_main", True):  # DDP 里每个进程都会遇到同一个错误（如发散），只由主进程打印
            print(line, file=sys.stderr)
        return code
