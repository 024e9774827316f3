"""softmax 与 log_softmax（沿任意一维）。

数值稳定：先减去该维的最大值，结果不变（分子分母同乘 e^-max），却不会溢出。
log_softmax 写成 x - max - log Σ e^(x - max)，不先算 softmax 再取对数（那样会下溢成 -inf）。
整行都是 -inf（被完全遮蔽）时，减去的最大值取 0，softmax 给出 0 而不是 NaN。
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function


def _safe_max(x: np.ndarray, dim: int) -> np.ndarray:
    m = x.max(axis=dim, keepdims=True)
    return np.where(np.isfinite(m), m, np.zeros((), dtype=x.dtype))


class Softmax(Function):
    """y_i = e^(x_i) / Σ_j e^(x_j)；dL/dx = y ⊙ (g - Σ_j g_j y_j)。"""

    @staticmethod
    def forward(ctx, x, *, dim=-1):
        ctx.dim = dim
        if dim in (-1, x.ndim - 1) and x.ndim and x.dtype.kind == "f":
            out = kernels.softmax_fwd(x)  # 沿最后一维：融合内核
            ctx.save_for_backward(out)
            return out
        e = np.exp(x - _safe_max(x, dim))
        s = e.sum(axis=dim, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            e /= s
        out = np.where(s > 0, e, np.zeros((), dtype=x.dtype)) if not np.all(s > 0) else e
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.dim in (-1, y.ndim - 1):
            return kernels.softmax_bwd(g, y)
        gy = g * y
        return gy - y * gy.sum(axis=ctx.dim, keepdims=True)


class LogSoftmax(Function):
    """y_i = x_i - log Σ_j e^(x_j)；dL/dx = g - softmax(x) ⊙ Σ_j g_j。"""

    @staticmethod
    def forward(ctx, x, *, dim=-1):
        ctx.dim = dim
        if dim in (-1, x.ndim - 1) and x.ndim and x.dtype.kind == "f":
            out = kernels.log_softmax_fwd(x)
            ctx.save_for_backward(out)
            return out
        shifted = x - _safe_max(x, dim)
        with np.errstate(divide="ignore"):
            out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.dim in (-1, y.ndim - 1):
            return kernels.log_softmax_bwd(g, y)
        return g - np.exp(y) * g.sum(axis=ctx.dim, keepdims=True)
