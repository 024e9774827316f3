"""矩阵乘法与线性层。

y = a @ b 的反向：dL/da = g @ bᵀ，dL/db = aᵀ @ g（ᵀ 只交换最后两维）。
1 维输入按 numpy/torch 的规则临时补成矩阵，算完再去掉补的维。
批维可以广播；批维上的梯度求和交给 autograd.unbroadcast。
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..kernels.threads import matmul as _mm2  # 二维矩阵乘：大的切给多个线程（见 kernels/threads.py）


def _mT(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


class MatMul(Function):
    """y = a @ b（支持 1 维、2 维与带广播的批量矩阵乘）。"""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(f"matmul：输入不能是标量，收到形状 {tuple(a.shape)} 和 {tuple(b.shape)}")
        ka = a.shape[-1]
        kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if ka != kb:
            raise RuntimeError(
                f"matmul：形状 {tuple(a.shape)} 与 {tuple(b.shape)} 无法相乘（内维 {ka} ≠ {kb}）"
            )
        try:
            out = _mm2(a, b) if a.ndim == 2 and b.ndim == 2 else np.matmul(a, b)
        except ValueError:
            raise RuntimeError(f"matmul：批维无法广播，形状 {tuple(a.shape)} 与 {tuple(b.shape)}") from None
        ctx.save_for_backward(a, b)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # 先补 b 的维（最后一维）再补 a 的维（倒数第二维）：1 维 @ 1 维时 g 是标量，顺序反了会越界
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _mm2(g, b2.T) if g.ndim == 2 and b2.ndim == 2 else np.matmul(g, _mT(b2))
            if a.ndim == 1:
                ga = ga[..., 0, :]
        if ctx.needs_input_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # b 被所有批共享：把批维摊平成一次大矩阵乘，比逐批相乘再求和快得多
                k, m = a2.shape[-1], g.shape[-1]
                gb = _mm2(a2.reshape(-1, k).T, g.reshape(-1, m))
            elif a2.ndim == 2 and g.ndim == 2:
                gb = _mm2(a2.T, g)
            else:
                gb = np.matmul(_mT(a2), g)
            if b.ndim == 1:
                gb = gb[..., 0]
        return ga, gb


class Linear(Function):
    """y = x @ Wᵀ + b，W 形状 (out, in)（与 torch 相同）。

    反向：dL/dx = g @ W，dL/dW = gᵀ @ x，dL/db = Σ g；
    x 的批维 (B, T, ...) 先摊平成行，使每个梯度都是一次二维矩阵乘。
    """

    @staticmethod
    def forward(ctx, x, w, b=None):
        if x.shape[-1] != w.shape[1]:
            raise RuntimeError(
                f"linear：输入最后一维 {x.shape[-1]} 与权重形状 {tuple(w.shape)}（out, in）的 in 不一致"
            )
        ctx.save_for_backward(x, w)
        # 把批维摊平成一次二维矩阵乘：numpy 对 3 维 @ 2 维是逐批调用 BLAS，实测慢 3~4 倍
        # bias 由各线程加到自己算出的那几行上（不再单线程地整块加一遍）
        return _mm2(x.reshape(-1, x.shape[-1]), w.T, bias=b).reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])
        gx = _mm2(g2, w).reshape(x.shape) if need[0] else None
        gw = _mm2(g2.T, x.reshape(-1, x.shape[-1])) if need[1] else None
        if len(need) == 3:
            gb = g2.sum(axis=0) if need[2] else None
            return gx, gw, gb
        return gx, gw
