"""命令行入口：python -m gpt_numpy <train|generate|eval> ...（NumPy / tinytensor 轨道）。"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from llmcore.cli import Track
from llmcore.cli import main as cli_main
from llmcore.config import TrainConfig


def _train(tcfg: TrainConfig, model_overrides: dict[str, Any]) -> Any:
    from .train import train

    return train(tcfg, model_overrides)


def _load_model(ckpt: Path, tcfg: TrainConfig) -> Any:
    from .model import GPTModel

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


TRACK = Track(name="gpt_numpy", train=_train, load_model=_load_model, stream=_stream, eval_loss=_eval_loss,
              classifier=_classifier)


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, TRACK)


if __name__ == "__main__":
    sys.exit(main())
