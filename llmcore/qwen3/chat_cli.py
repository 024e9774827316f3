"""``python -m gpt_numpy chat`` / ``python -m gpt_torch chat``：与 Qwen3 多轮对话。

    python -m gpt_numpy chat                          # 下载（或取缓存里的）Qwen/Qwen3-0.6B，int8 权重
    python -m gpt_numpy chat --model=本地目录 --quant=bf16 --no-think
    python -m gpt_torch chat --model=Qwen/Qwen3-1.7B   # 有 GPU 时 bf16 放 GPU

对话中输入 /reset 清空历史，/exit 退出；回复途中按 Ctrl-C 只停止这一条回复，在提示符处按 Ctrl-C 或 Ctrl-D 退出。
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError
from ..errors import TokenizerError, UsageError
from .generate import ChatSession, SamplingConfig
from .hub import DEFAULT_REPO


def _resolve_model(spec: str) -> Path:
    p = Path(spec)
    if p.is_dir():
        return p
    if p.exists() or spec.startswith((".", "/")) or spec.count("/") != 1:
        raise CheckpointError(f"{spec} 不是模型目录，也不像 Hugging Face 仓库名（形如 Qwen/Qwen3-0.6B）")
    from .hub import download_qwen3

    print(f"从 Hugging Face 获取 {spec}（已下载过的直接用缓存；国内可设置 HF_ENDPOINT 镜像）……", file=sys.stderr)
    return download_qwen3(spec)


def build_parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="与 Qwen3 多轮对话（流式输出）")
    ap.add_argument("--model", default=DEFAULT_REPO, help=f"本地模型目录或 Hugging Face 仓库名（默认 {DEFAULT_REPO}）")
    ap.add_argument("--quant", choices=("fp32", "int8", "bf16"), default=None,
                    help="权重格式：NumPy 轨道默认 int8；PyTorch 轨道默认 GPU 上 bf16、CPU 上 fp32")
    ap.add_argument("--system", default=None, help="系统提示词")
    ap.add_argument("--no-think", action="store_true", help="关闭思考模式（直接回答）")
    ap.add_argument("--temperature", type=float, default=None, help="温度（默认：思考 0.6，不思考 0.7；0 为贪心）")
    ap.add_argument("--top-k", type=int, default=20, help="top-k，0 表示不限（默认 20）")
    ap.add_argument("--top-p", type=float, default=None, help="核采样阈值（默认：思考 0.95，不思考 0.8）")
    ap.add_argument("--repetition-penalty", type=float, default=1.0, help="重复惩罚，>1 时抑制重复（默认 1）")
    ap.add_argument("--max-new-tokens", type=int, default=1024, help="每条回复最多多少个词元（默认 1024）")
    ap.add_argument("--stop", action="append", default=[], help="停止串（可给多次）：回复中出现时截断并停止")
    ap.add_argument("--max-context", type=int, default=4096, help="KV 缓存长度，即对话的上下文上限（默认 4096）")
    ap.add_argument("--on-overflow", choices=("error", "truncate"), default="error",
                    help="对话超过上下文时：error 报错（默认），truncate 丢掉最早的几轮并警告")
    ap.add_argument("--seed", type=int, default=None, help="随机种子")
    return ap


def run_chat(argv: list[str], track_name: str, load: Callable[[Path, str | None], Any] | None) -> int:
    args = build_parser(f"python -m {track_name} chat").parse_args(argv)
    if load is None:
        raise UsageError(f"{track_name} 没有提供 Qwen3 模型")
    think = not args.no_think
    cfg = SamplingConfig(
        temperature=args.temperature if args.temperature is not None else (0.6 if think else 0.7),
        top_k=args.top_k or None,
        top_p=args.top_p if args.top_p is not None else (0.95 if think else 0.8),
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
        stop_strings=tuple(args.stop),
        seed=args.seed,
    )
    try:
        cfg.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    from ..tokenizers.hf_json import HFJsonTokenizer

    directory = _resolve_model(args.model)
    try:
        tokenizer = HFJsonTokenizer.from_file(directory / "tokenizer.json")
    except (OSError, ValueError, KeyError) as e:
        raise TokenizerError(f"读不了 {directory / 'tokenizer.json'}：{e}") from None
    try:
        model = load(directory, args.quant)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"读不了 {directory} 里的 Qwen3 模型：{e}") from None
    if tokenizer.vocab_size > model.cfg.vocab_size:
        raise TokenizerError(
            f"分词器的词表（{tokenizer.vocab_size}）比模型的词表（{model.cfg.vocab_size}）大，两者不配套"
        )
    cache = model.new_cache(1, min(args.max_context, model.cfg.max_position_embeddings))
    session = ChatSession(model.step, cache, tokenizer, system=args.system, enable_thinking=think,
                          on_overflow=args.on_overflow)
    print("输入消息后回车；/reset 清空对话，/exit 退出；回复时按 Ctrl-C 停止这条回复。", file=sys.stderr)
    while True:
        try:
            line = input("\n你：")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            session.reset()
            print("（对话已清空）", file=sys.stderr)
            continue
        sys.stdout.write("Qwen：")
        sys.stdout.flush()
        t0, n0 = time.perf_counter(), len(session.cached_ids)
        gen = session.reply(line, cfg)
        try:
            for piece in gen:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write("\n（已停止）")
        except ValueError as e:
            print(f"\n错误：{e}", file=sys.stderr)
            continue
        finally:
            gen.close()
        dt = time.perf_counter() - t0
        n = max(0, len(session.cached_ids) - n0)
        rate = n / max(dt, 1e-9)
        print(f"\n[{dt:.1f} 秒，上下文 {session.cache.pos} 个词元，约 {rate:.1f} 词元/秒]", file=sys.stderr)
