"""命令行入口：python -m gpt_numpy <train|generate|eval> ...（NumPy / tinytensor 轨道）。

train、generate、eval 都先打开 tinytensor 的 CPU 调优（``tinytensor.tuning.enable()``：堆阈值、BLAS 线程由
tinytensor 切分、numba 的 workqueue 线程层）；环境变量 TINYTENSOR_TUNING=0 关闭。库与笔记本里导入
tinytensor 不会这样做。
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from llmcore.cli import Track
from llmcore.cli import main as cli_main
from llmcore.config import TrainConfig


def _tune() -> None:
    import tinytensor as tt

    tt.tuning.enable()


def _train(tcfg: TrainConfig, model_overrides: dict[str, Any]) -> Any:
    from .train import train

    _tune()
    return train(tcfg, model_overrides)


def _load_model(ckpt: Path, tcfg: TrainConfig) -> Any:
    from .model import GPTModel

    _tune()  # generate 与 eval 都从这里载入模型
    model = GPTModel.load(ckpt)
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
    _tune()  # 训练与生成都在这里，打开 CPU 调优
    from . import instruct

    return instruct


def _eval_loss(model: Any, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    import tinytensor as tt
    from tinytensor.nn import functional as F

    total, n = 0.0, 0
    with tt.no_grad():
        for x, y in batches:
            logits = model(x)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item())
            n += y.size
    return total / max(n, 1)


def _load_qwen3(directory: Path, scheme: str | None) -> Any:
    # 不打开 CPU 调优：解码每步有上百次并行的矩阵乘，numba 默认的 OpenMP 线程层启动一次只要几微秒，
    # 调优为训练选的 workqueue 层要 100 微秒以上（实测见 docs/performance.md 的 Qwen3 一节）
    from .qwen3 import load_qwen3

    return load_qwen3(directory, scheme or "int8")


TRACK = Track(
    name="gpt_numpy", train=_train, load_model=_load_model, stream=_stream, eval_loss=_eval_loss,
    excluded_fields=("device", "compile", "amp"),
    excluded_hint="：NumPy 轨道只在 CPU 上运行；要用 GPU 请改用 python -m gpt_torch",
    load_qwen3=_load_qwen3,
    classifier=_classifier,
    instruct=_instruct,
)


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, TRACK)


if __name__ == "__main__":
    sys.exit(main())
