"""归约算子：sum、mean、var、max/min。

归约的反向都是“把梯度沿被归约的轴铺回去”：先在 keepdim=False 时把轴补回来，
再广播到输入形状（np.broadcast_to 不复制内存）。
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function


def normalize_dims(dim, ndim: int) -> tuple[int, ...] | None:
    """把 int / 元组 / None 形式的 dim 规范成非负整数元组（None 表示所有维）。"""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        d = int(d)
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"维度 {d} 超出范围：张量只有 {ndim} 维（合法范围 [{-max(ndim, 1)}, {max(ndim, 1) - 1}]）")
        out.append(d % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"dim {dim} 中有重复的维度")
    return tuple(sorted(out))


def _expand_back(g: np.ndarray, shape: tuple[int, ...], dims, keepdim: bool) -> np.ndarray:
    if dims is None:
        return np.broadcast_to(g.reshape((1,) * len(shape)) if len(shape) else g, shape)
    if not keepdim:
        g = np.expand_dims(g, dims)
    return np.broadcast_to(g, shape)


def _count(shape: tuple[int, ...], dims) -> int:
    if dims is None:
        return int(np.prod(shape, dtype=np.int64))
    return int(np.prod([shape[d] for d in dims], dtype=np.int64))


class Sum(Function):
    """y = Σ_dim a；dy/da = 1（广播回 a 的形状）。"""

    @staticmethod
    def forward(ctx, a, *, dim=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dim, keepdim
        return np.asarray(a.sum(axis=dim, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return _expand_back(g, ctx.shape, ctx.dims, ctx.keepdim)


class Mean(Function):
    """y = (1/N) Σ_dim a；dy/da = 1/N。"""

    @staticmethod
    def forward(ctx, a, *, dim=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dim, keepdim
        ctx.n = _count(a.shape, dim)
        return np.asarray(a.mean(axis=dim, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return _expand_back(g / ctx.n, ctx.shape, ctx.dims, ctx.keepdim)


class Var(Function):
    """y = Σ(a - ā)² / (N - correction)；dy/da = 2(a - ā) / (N - correction)。

    correction=1 是无偏估计（torch 默认），correction=0 是有偏估计（LayerNorm 用它）。
    ā 对 a 的导数项 Σ 2(a-ā)·(-1/N) 恒为 0，所以不出现在公式里。
    """

    @staticmethod
    def forward(ctx, a, *, dim=None, keepdim=False, correction=1):
        n = _count(a.shape, dim)
        mean = a.mean(axis=dim, keepdims=True)
        d = a - mean
        denom = max(n - correction, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray((d * d).sum(axis=dim, keepdims=keepdim) / np.asarray(denom, dtype=a.dtype))
        ctx.save_for_backward(d)
        ctx.shape, ctx.dims, ctx.keepdim, ctx.denom = a.shape, dim, keepdim, denom
        return out

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.asarray(2.0 / ctx.denom if ctx.denom else np.inf, dtype=d.dtype)
        return _expand_back(g, ctx.shape, ctx.dims, ctx.keepdim) * d * scale


class MaxAll(Function):
    """对全部元素取最大（或最小）值；梯度在并列的最值之间平均分配（与 torch 的 max() 一致）。

    沿某一维的 max(dim) 不在这里：它先用 argmax 求下标（不需要梯度），
    再用 Gather 取值，梯度自然只流向被选中的位置。
    """

    @staticmethod
    def forward(ctx, a, *, largest=True):
        if a.size == 0:
            raise RuntimeError(f"不能对空张量（形状 {a.shape}）取 {'max' if largest else 'min'}")
        out = np.asarray(a.max() if largest else a.min())
        ctx.save_for_backward(a == out)
        return out

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return mask * (g / np.asarray(mask.sum(), dtype=g.dtype))  # 计数转成 g 的类型，float32 不被提升成 float64
