"""命令行入口：python -m gpt_torch <train|generate|eval> ...（PyTorch 轨道，参数与 gpt_numpy 相同）。"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from llmcore.cli import Track
from llmcore.cli import main as cli_main
from llmcore.config import TrainConfig

EXTRA_HELP = """
PyTorch 轨道另有：--device=auto|cpu|cuda|mps、--amp=auto|bf16|fp32、--compile=true。
多卡 / 多机：torchrun --nproc_per_node=N -m gpt_torch.train [--key=value ...]
（--batch_size 是每个进程的批大小；多机启动、续训与崩溃处理见 README 的“在 GPU 与多卡、多机上训练”一节）
"""


def _train(tcfg: TrainConfig, model_overrides: dict[str, Any]) -> Any:
    from .train import train

    return train(tcfg, model_overrides)


def _load_model(ckpt: Path, tcfg: TrainConfig) -> Any:
    from .model import GPTModel
    from .train import resolve_device

    model = GPTModel.load(ckpt, device=resolve_device(tcfg.device))
    model.eval()
    return model


def _stream(model: Any, ids: np.ndarray, n: int, temperature: float, top_k: Any, top_p: Any, eos: Any, seed: Any,
            use_cache: bool) -> Any:
    from .generate import stream_generate

    return stream_generate(model, ids, n, temperature, top_k, top_p, eos, seed, use_cache)


def _classifier() -> Any:
    from . import classifier

    return classifier


def _instruct() -> Any:
    from . import instruct

    return instruct


def _eval_loss(model: Any, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    import torch
    from torch.nn import functional as F

    device = next(model.parameters()).device
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            logits = model(torch.as_tensor(x, device=device))
            yt = torch.as_tensor(y, device=device)
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), yt.flatten(), reduction="sum"))
            n += y.size
    return total / max(n, 1)


def _check_train(tcfg: TrainConfig) -> None:
    """准备数据之前先确认设备可用（--device=cuda 而本机没有 GPU 时在这里就报错）。"""
    from .train import resolve_device

    resolve_device(tcfg.device)


def _load_qwen3(directory: Path, scheme: str | None) -> Any:
    from .qwen3 import load_qwen3

    return load_qwen3(directory, scheme)


TRACK = Track(
    name="gpt_torch", train=_train, load_model=_load_model, stream=_stream, eval_loss=_eval_loss, extra_help=EXTRA_HELP,
    check_train=_check_train,
    load_qwen3=_load_qwen3,
    classifier=_classifier,
    instruct=_instruct,
)


def main(argv: list[str] | None = None) -> int:
    """命令行入口。由 torchrun 启动的多进程训练结束后，用 ddp.exit_process 直接退出（原因见那里）。"""
    try:
        code = cli_main(argv, TRACK)
    except BaseException as e:
        ddp = sys.modules.get("gpt_torch.ddp")
        if ddp is None or not ddp.used_distributed() or isinstance(e, SystemExit):
            raise
        sys.excepthook(*sys.exc_info())  # 照常打印带 [rankN] 前缀的回溯
        ddp.exit_process(130 if isinstance(e, KeyboardInterrupt) else 1)
    ddp = sys.modules.get("gpt_torch.ddp")
    if ddp is not None and ddp.used_distributed():
        ddp.exit_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
