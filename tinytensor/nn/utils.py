"""tt.nn.utils：梯度裁剪等工具。"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..tensor import Tensor


def clip_grad_norm_(
    parameters: Iterable[Tensor] | Tensor, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> Tensor:
    """把所有参数梯度拼成一个向量，若其范数超过 max_norm，就整体按比例缩小（原地）。

    与 torch 相同：缩放系数为 max_norm / (total_norm + 1e-6)，并截断到 1；返回裁剪前的总范数。
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return Tensor._wrap(np.asarray(0.0, dtype=np.float32), False)
    dtype = grads[0].dtype
    if norm_type == float("inf"):
        total = max(float(np.abs(g).max()) for g in grads)
    else:
        total = float(sum(float(np.sum(np.abs(g.astype(np.float64, copy=False)) ** norm_type)) for g in grads))
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"梯度总范数为 {total}（非有限值），无法裁剪")
    coef = min(max_norm / (total + 1e-6), 1.0)
    if coef < 1.0:
        for g in grads:
            g *= np.asarray(coef, dtype=g.dtype)
    return Tensor._wrap(np.asarray(total, dtype=dtype), False)
