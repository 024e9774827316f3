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
    """画训练损失（每个记录点）与评估时的训练/验证损失；横轴为步数，上方第二横轴为已见词元数。"""
    import matplotlib
    from matplotlib.figure import Figure  # 不经过 pyplot：不改后端，也不在 notebook 里多出一张图

    zh = _use_cjk_font(matplotlib)
    lab = _LABELS_ZH if zh else _LABELS_EN
    train = [(r["step"], r["loss"]) for r in history if r.get("type") == "train"]
    evals = [r for r in history if r.get("type") == "eval"]
    if not train and not evals:
        return None
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
    p = Path(path)
    tmp = p.with_name("." + p.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(p)
    return p


_LABELS_ZH = ("训练损失（每步）", "训练损失（评估）", "验证损失（评估）", "步数", "交叉熵损失", "已见词元数")
_LABELS_EN = ("train loss (per step)", "train loss (eval)", "val loss (eval)", "step", "cross-entropy loss",
              "tokens seen")
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC", "Source Han Sans SC")


def _use_cjk_font(plt: Any) -> bool:
    """系统有中文字体时用它并返回 True；没有时返回 False，图中改用英文标签（避免显示成方框）。

    plt 是 matplotlib.pyplot 或 matplotlib 模块（两者的 rcParams 是同一个对象）。"""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in names:
            plt.rcParams["font.sans-serif"] = [name, *plt.rcParams["font.sans-serif"]]
            plt.rcParams["axes.unicode_minus"] = False
            return True
    return False
