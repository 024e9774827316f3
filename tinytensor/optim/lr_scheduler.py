"""学习率调度：线性预热 (warmup) + 余弦衰减 (cosine decay)。

``warmup_cosine_lr`` 是与框架无关的纯函数（两条轨道共用）；
``LambdaLR`` 与 ``WarmupCosine`` 按 torch.optim.lr_scheduler 的方式修改 group["lr"]。
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .optimizer import Optimizer


def warmup_cosine_lr(
    step: int, *, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0, initial_lr: float = 0.0
) -> float:
    """第 step 步（从 0 数）的学习率。

    前 warmup_steps 步从 initial_lr 线性升到 max_lr；之后到 total_steps 按余弦从 max_lr 降到 min_lr；
    超过 total_steps 保持 min_lr。
    """
    if warmup_steps < 0 or total_steps <= 0:
        raise ValueError(f"warmup_steps 不能为负、total_steps 必须为正，收到 {warmup_steps}、{total_steps}")
    if step < warmup_steps:
        return initial_lr + (max_lr - initial_lr) * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    span = max(total_steps - warmup_steps, 1)
    progress = (step - warmup_steps) / span
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class LambdaLR:
    """lr = base_lr · fn(epoch)；每次 step() 后 epoch 加一（与 torch 的 LambdaLR 相同）。"""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float], last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        self.lr_lambda = lr_lambda
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> list[float]:
        return [base * self.lr_lambda(self.last_epoch) for base in self.base_lrs]

    def step(self) -> None:
        self.last_epoch += 1
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = list(state["base_lrs"])
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr


class WarmupCosine(LambdaLR):
    """预热 + 余弦衰减；学习率以优化器的初始 lr 为峰值，min_lr_ratio 为终点占峰值的比例。"""

    def __init__(
        self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        def fn(step: int) -> float:
            return warmup_cosine_lr(
                step, max_lr=1.0, warmup_steps=warmup_steps, total_steps=total_steps, min_lr=min_lr_ratio
            )

        super().__init__(optimizer, fn, last_epoch)
