"""Adam 与 AdamW，更新与 torch.optim 的单张量实现逐步相同。

    m ← m + (1-β₁)(g - m)          （即 β₁m + (1-β₁)g，torch 用 lerp 计算）
    v ← β₂v + (1-β₂)g²
    p ← p - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)

两者只差在权重衰减：Adam 把 wd·p 加进梯度（L2 正则，会被自适应缩放）；
AdamW 在更新前直接 p ← p·(1 - lr·wd)（“解耦”的权重衰减，GPT 训练用它）。
实际的逐元素更新在 kernels.adamw_step（numba 融合内核 / NumPy 参考）。
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import kernels
from ..autograd import no_grad
from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam；weight_decay 为 L2 正则（加进梯度）。"""

    decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"学习率不能为负，收到 lr={lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas 必须在 [0, 1) 内，收到 {betas}")
        if eps < 0:
            raise ValueError(f"eps 不能为负，收到 {eps}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay 不能为负，收到 {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._eval_closure(closure)
        for i, group, p in self._indexed():
            if p.grad is None:
                continue
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = {
                    "step": 0,
                    "exp_avg": np.zeros_like(p.data),
                    "exp_avg_sq": np.zeros_like(p.data),
                }
            st["step"] += 1
            beta1, beta2 = group["betas"]
            g, wd = p.grad.data, group["weight_decay"]
            if g.dtype != p.data.dtype:
                g = g.astype(p.data.dtype)
            if wd != 0 and not self.decoupled:
                g = g + wd * p.data
                wd = 0.0
            kernels.adamw_step(
                p.data, g, st["exp_avg"], st["exp_avg_sq"],
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=wd, step=st["step"],
            )
        return loss


class AdamW(Adam):
    """AdamW：解耦的权重衰减（默认 weight_decay=0.01，与 torch 相同）。"""

    decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
