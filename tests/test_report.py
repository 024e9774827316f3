"""训练曲线 loss.png：不经过 pyplot 画图，不改变进程的 matplotlib 后端（notebook 里训练之后照样能显示图）。"""

from __future__ import annotations

import matplotlib

from llmcore.report import plot_losses


def test_plot_losses_keeps_backend(tmp_path):
    before = matplotlib.rcParams["backend"]
    history = [{"type": "train", "step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 11)]
    history += [{"type": "eval", "step": 10, "train_loss": 4.0, "val_loss": 4.2}]
    p = plot_losses(history, tmp_path / "loss.png", tokens_per_step=64)
    assert p is not None and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.rcParams["backend"] == before
    assert plot_losses([], tmp_path / "empty.png") is None
