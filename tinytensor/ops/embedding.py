"""嵌入 (embedding)：按词元 id 查表。

y[..., :] = W[idx[...], :]；反向：dL/dW[k] = Σ_{idx = k} g。
同一个 id 在一个批次里常常出现很多次，所以反向必须是“散射相加” (scatter-add)，
不能简单赋值，否则只留下最后一次的梯度。实现在 kernels.embedding_bwd。
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function


class Embedding(Function):
    """y = W[idx]；idx 是整数数组（关键字参数，不求导）。"""

    @staticmethod
    def forward(ctx, w, *, idx):
        ctx.idx, ctx.num = idx, w.shape[0]
        return w[idx]

    @staticmethod
    def backward(ctx, g):
        c = g.shape[-1]
        flat = np.ascontiguousarray(ctx.idx.reshape(-1), dtype=np.int64)
        return kernels.embedding_bwd(ctx.num, flat, g.reshape(-1, c))
