"""学习率调度：线性预热 (warmup) + 余弦衰减 (cosine decay)，与框架无关的纯函数。

两条轨道的训练循环（trainer.py 的 ``lr_at``）都用它；在 tinytensor 或 torch 里可以把它包进
``LambdaLR``：``LambdaLR(opt, lambda s: warmup_cosine_lr(s, max_lr=1.0, ...))``。
"""

from __future__ import annotations

import math


def warmup_cosine_lr(
    step: int, *, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0, initial_lr: float = 0.0
) -> float:
    """第 step 步（从 0 数）的学习率。

    前 warmup_steps 步从 initial_lr 线性升到 max_lr（按 step+1 计，与 nanoGPT 相同：第 0 步已是
    initial_lr + (max_lr-initial_lr)/warmup_steps，第 warmup_steps-1 步到达 max_lr）；
    之后到 total_steps 按余弦从 max_lr 降到 min_lr（中点为两者的平均）；超过 total_steps 保持 min_lr。
    """
    if warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
        raise ValueError(
            f"需要 0 ≤ warmup_steps ≤ total_steps 且 total_steps > 0，收到 warmup_steps={warmup_steps}、"
            f"total_steps={total_steps}"
        )
    if step < warmup_steps:
        return initial_lr + (max_lr - initial_lr) * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    span = max(total_steps - warmup_steps, 1)
    progress = (step - warmup_steps) / span
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


__all__ = ["warmup_cosine_lr"]
