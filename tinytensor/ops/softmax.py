"""softmax 与 log_softmax（沿任意一维）。

数值稳定：先减去该维的最大值，结果不变（分子分母同乘 e^-max），却不会溢出。
log_softmax 写成 x - max - log Σ e^(x - max)，不先算 softmax 再取对数（那样会下溢成 -inf）。
整行都是 -inf（被完全遮蔽）时，减去的最大值取 0，softmax 给出 0 而不是 NaN。
沿最后一维时调用 kernels.softmax 的内核（按后端分派），沿其他维时直接用它的 NumPy 参考实现：
公式只写在 kernels/softmax.py 一处。
"""

from __future__ import annotations

from .. import kernels
from ..autograd import Function


class Softmax(Function):
    """y_i = e^(x_i) / Σ_j e^(x_j)；dL/dx = y ⊙ (g - Σ_j g_j y_j)。"""

    @staticmethod
    def forward(ctx, x, *, dim=-1):
        ctx.dim = dim
        if dim in (-1, x.ndim - 1) and x.ndim and x.dtype.kind == "f":
            out = kernels.softmax_fwd(x)  # 沿最后一维：内核
        else:
            out = kernels.softmax_fwd_numpy(x, axis=dim)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.dim in (-1, y.ndim - 1) and y.ndim:
            return kernels.softmax_bwd(g, y)
        return kernels.softmax_bwd_numpy(g, y, axis=ctx.dim)


class LogSoftmax(Function):
    """y_i = x_i - log Σ_j e^(x_j)；dL/dx = g - softmax(x) ⊙ Σ_j g_j。"""

    @staticmethod
    def forward(ctx, x, *, dim=-1):
        ctx.dim = dim
        if dim in (-1, x.ndim - 1) and x.ndim and x.dtype.kind == "f":
            out = kernels.log_softmax_fwd(x)
        else:
            out = kernels.log_softmax_fwd_numpy(x, axis=dim)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if ctx.dim in (-1, y.ndim - 1) and y.ndim:
            return kernels.log_softmax_bwd(g, y)
        return kernels.log_softmax_bwd_numpy(g, y, axis=ctx.dim)
