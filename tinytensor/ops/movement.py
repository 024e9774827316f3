"""搬移类算子：只改变元素的排列或挑选元素，不做算术。

反向的规律：把梯度“原路搬回去”。reshape 反向是 reshape 回来；permute 反向是逆排列；
索引反向是把梯度散射 (scatter) 回原位置——有重复下标时必须累加 (np.add.at)。
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function


class Reshape(Function):
    """y = reshape(a, shape)；反向把梯度 reshape 回 a 的形状。"""

    @staticmethod
    def forward(ctx, a, *, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise RuntimeError(
                f"reshape：无法把形状 {tuple(a.shape)}（共 {a.size} 个元素）变成 {tuple(shape)}"
            ) from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    """y = a 的维度按 dims 重新排列；反向用逆排列 argsort(dims)。"""

    @staticmethod
    def forward(ctx, a, *, dims):
        ctx.dims = dims
        return np.transpose(a, dims)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, np.argsort(ctx.dims))


class Expand(Function):
    """y = 把 a 广播到 shape（不复制内存）。

    反向只需原样返回 g：把广播梯度求和归约回 a 的形状，正是 autograd 引擎
    对每个输入都会做的那一步（unbroadcast），这里无须重复。
    """

    @staticmethod
    def forward(ctx, a, *, shape):
        try:
            return np.broadcast_to(a, shape)
        except ValueError:
            raise RuntimeError(f"expand：形状 {tuple(a.shape)} 无法广播到 {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, g):
        return g


def _is_basic_index(key) -> bool:
    """只含整数、切片、None、Ellipsis 的索引（基本索引）不会产生重复位置。"""
    items = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (int, np.integer, slice)) or k is None or k is Ellipsis for k in items)


class Index(Function):
    """y = a[key]；反向：建一个全零的 a 形梯度，把 g 放回 key 指向的位置。

    基本索引（切片、整数）直接赋值；高级索引（整数数组、布尔掩码）可能多次选中同一
    元素，必须用 np.add.at 累加，否则重复位置的梯度会丢失。
    """

    @staticmethod
    def forward(ctx, a, *, key):
        ctx.shape, ctx.key = a.shape, key
        try:
            return np.asarray(a[key])
        except IndexError as e:
            raise IndexError(f"索引越界：形状 {tuple(a.shape)} 的张量不能用 {key!r} 索引（{e}）") from None

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        if _is_basic_index(ctx.key):
            grad[ctx.key] = g
        else:
            np.add.at(grad, ctx.key, g)
        return grad


class Gather(Function):
    """y[..., i, ...] = a[..., index[..., i, ...], ...]（沿 dim 按下标取值，同 torch.gather）。

    反向把 g 按同样的下标散射加回去（下标可以重复，用 np.add.at）。
    """

    @staticmethod
    def forward(ctx, a, *, dim, index):
        ctx.shape, ctx.dim, ctx.index = a.shape, dim, index
        if index.ndim != a.ndim:
            raise RuntimeError(f"gather：index 的维数 {index.ndim} 必须等于输入的维数 {a.ndim}")
        n = a.shape[dim]
        if index.size and (index.min() < 0 or index.max() >= n):  # 与 torch 相同：不接受负下标
            bad = index[(index < 0) | (index >= n)].ravel()[0]
            raise IndexError(f"gather：下标 {int(bad)} 超出第 {dim} 维的范围 [0, {n})（gather 不接受负下标）")
        if any(i > s for d, (i, s) in enumerate(zip(index.shape, a.shape)) if d != dim):
            raise RuntimeError(f"gather：index 形状 {index.shape} 在第 {dim} 维以外不能大于输入形状 {a.shape}")
        # 与 torch 相同：输出形状就是 index 的形状；index 在其它维上可以比输入短（只取前面那部分），
        # 不能让 take_along_axis 把 index 广播到输入的长度
        head = tuple(slice(None) if d == dim else slice(0, i) for d, i in enumerate(index.shape))
        return np.take_along_axis(a[head], index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        idx = list(np.indices(ctx.index.shape, sparse=True))
        idx[ctx.dim] = ctx.index
        np.add.at(grad, tuple(idx), g)
        return grad


class Cat(Function):
    """y = 沿 dim 拼接若干张量；反向按各自的长度把 g 切回去。"""

    @staticmethod
    def forward(ctx, *arrays, dim=0):
        ref = arrays[0]
        for i, a in enumerate(arrays[1:], 1):
            if a.ndim != ref.ndim or any(x != y for j, (x, y) in enumerate(zip(a.shape, ref.shape)) if j != dim):
                raise RuntimeError(
                    f"cat：第 {i} 个张量形状 {tuple(a.shape)} 与第 0 个 {tuple(ref.shape)} "
                    f"在第 {dim} 维以外不一致"
                )
        ctx.dim = dim
        ctx.splits = np.cumsum([a.shape[dim] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.split(g, ctx.splits, axis=ctx.dim))


class Stack(Function):
    """y = 在新维 dim 上堆叠若干同形张量；反向沿 dim 取出各自的切片。"""

    @staticmethod
    def forward(ctx, *arrays, dim=0):
        ref = arrays[0]
        for i, a in enumerate(arrays[1:], 1):
            if a.shape != ref.shape:
                raise RuntimeError(f"stack：第 {i} 个张量形状 {tuple(a.shape)} 与第 0 个 {tuple(ref.shape)} 不一致")
        ctx.dim, ctx.n = dim, len(arrays)
        return np.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.take(g, i, axis=ctx.dim) for i in range(ctx.n))
