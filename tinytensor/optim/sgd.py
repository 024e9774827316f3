"""随机梯度下降（可选动量与 L2 权重衰减），更新顺序与 torch.optim.SGD 相同。

    g ← g + wd·p
    b ← μ·b + (1 - dampening)·g     （第一步 b = g）
    g ← g + μ·b（nesterov）或 g ← b
    p ← p - lr·g
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..autograd import no_grad
from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0:
            raise ValueError(f"学习率不能为负，收到 lr={lr}")
        if momentum < 0:
            raise ValueError(f"momentum 不能为负，收到 {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay 不能为负，收到 {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov 需要 momentum > 0 且 dampening = 0")
        super().__init__(
            params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        )

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._eval_closure(closure)
        for i, group, p in self._indexed():
            if p.grad is None:
                continue
            g = p.grad.data
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            if wd != 0:
                g = g + wd * p.data
            if mom != 0:
                st = self.state.setdefault(i, {})
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = np.array(g, copy=True)
                else:
                    buf *= mom
                    buf += (1 - group["dampening"]) * g
                g = g + mom * buf if group["nesterov"] else buf
            p.data -= np.asarray(lr, dtype=p.dtype) * g
        return loss
