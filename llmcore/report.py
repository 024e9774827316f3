"""训练记录的可视化：从 metrics.jsonl 的记录画出训练/验证损失曲线 (loss.png)。"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """读取 metrics.jsonl（每行一个 JSON 记录）。"""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def plot_losses(history: Sequence[dict[str, Any]], path: str | Path, tokens_per_step: int | None = None) -> Path | None:
    """画训练损失（每个记录点）与评估时的训练/验证损失；横轴为步数，上方第二横轴为已见词元数。

    字体由 llmcore.plotting 统一提供（只在这张图里临时生效）；不用 pyplot，也就不切换后端，
    在 notebook 里训练时，之后的图照常显示。找不到中文字体时改用英文标签。
    """
    import matplotlib
    from matplotlib.figure import Figure

    from .plotting import cjk_rc

    train = [(r["step"], r["loss"]) for r in history if r.get("type") == "train"]
    evals = [r for r in history if r.get("type") == "eval"]
    if not train and not evals:
        return None
    rc = cjk_rc()
    lab = _LABELS_ZH if rc else _LABELS_EN
    p = Path(path)
    tmp = p.with_name("." + p.name + ".tmp.png")
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(7, 4.2), dpi=110)
        ax = fig.subplots()
        if train:
            ax.plot(*zip(*train), color="#9ecae1", lw=1, label=lab[0])
        if evals:
            steps = [r["step"] for r in evals]
            ax.plot(steps, [r["train_loss"] for r in evals], "o-", color="#08519c", ms=3, label=lab[1])
            ax.plot(steps, [r["val_loss"] for r in evals], "s-", color="#e6550d", ms=3, label=lab[2])
        ax.set_xlabel(lab[3])
        ax.set_ylabel(lab[4])
        ax.grid(alpha=0.3)
        ax.legend()
        if tokens_per_step:
            k = tokens_per_step
            top = ax.secondary_xaxis("top", functions=(lambda s: np.asarray(s) * k, lambda t: np.asarray(t) / k))
            top.set_xlabel(lab[5])
        fig.tight_layout()
        fig.savefig(tmp)
    tmp.replace(p)
    return p


_LABELS_ZH = ("训练损失（每步）", "训练损失（评估）", "验证损失（评估）", "步数", "交叉熵损失", "已见词元数")
_LABELS_EN = ("train loss (per step)", "train loss (eval)", "val loss (eval)", "step", "cross-entropy loss",
              "tokens seen")
