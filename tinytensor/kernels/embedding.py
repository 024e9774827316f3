"""嵌入层反向（按下标散射相加）：numba 内核与 NumPy 参考实现。

公式
----
    前向：out[i] = W[idx[i]]            （W 形状 (num_embeddings, C)）
    反向：dW[r] = Σ_{i: idx[i] = r} g[i]  （同一下标出现多次时梯度相加）

契约
----
- ``embedding_bwd(num_embeddings, idx, g) -> dW``：idx 为整数数组（通常 (N,)，也可以是 (B, T)），
  g 形状为 idx.shape + (C,)；dW 为 (num_embeddings, C) 的新数组（先置零再散射相加），dtype 同 g。
- 下标必须在 [0, num_embeddings) 内，否则抛出中文 IndexError（包装层向量化检查；内核不做越界检查，
  所以这一步不能省）。
- 重复下标安全：NumPy 参考用 ``np.add.at``；numba 内核按词元顺序串行累加整行（``dW[idx[i]] += g[i]``），
  **不对词元做 prange**（两个线程可能同时写同一行）。每个元素的累加顺序都是词元顺序，与 ``np.add.at``
  相同，所以两者逐位相同，也与线程数无关。
- 为什么完全不并行：这一步的计算量只有 N·C 次加法，按通道分块并行的 fork/join 开销比整个计算还大，
  所以用串行整行（实测见 docs/performance.md）。
"""

from __future__ import annotations

import numpy as np

from ._checks import float_array, int_array
from .backend import njit, use_numba

_OP = "embedding 反向"


def _check(num_embeddings: int, idx: object, g: object) -> tuple[int, np.ndarray, np.ndarray]:
    V = int(num_embeddings)
    if V <= 0:
        raise ValueError(f"{_OP}：num_embeddings 必须为正，收到 {num_embeddings}")
    i = int_array(idx, "idx", _OP)
    ga = float_array(g, "grad", _OP)
    if ga.ndim != i.ndim + 1 or ga.shape[:-1] != i.shape:
        raise ValueError(f"{_OP}：grad 的形状应为 idx.shape + (C,) = {i.shape} + (C,)，收到 {ga.shape}")
    bad = (i < 0) | (i >= V)
    if bad.any():
        first = int(i.reshape(-1)[np.argmax(bad.reshape(-1))])
        raise IndexError(f"{_OP}：下标 {first} 超出范围 [0, {V})（num_embeddings={V}）")
    C = ga.shape[-1]
    return V, i.reshape(-1), ga.reshape(-1, C)


def embedding_bwd_numpy(num_embeddings: int, idx: np.ndarray, g: np.ndarray) -> np.ndarray:
    """嵌入反向的 NumPy 参考实现：零初始化后用 np.add.at 散射相加（重复下标安全）。"""
    C = g.shape[-1]
    dW = np.zeros((num_embeddings, C), dtype=g.dtype)
    np.add.at(dW, idx.reshape(-1), g.reshape(-1, C))
    return dW


@njit(cache=True, error_model="numpy")
def _embedding_bwd_numba(dW, idx, g):
    N = g.shape[0]
    for i in range(N):  # 词元按顺序串行累加（重复下标安全）；整行是一维视图，内层循环可向量化
        d = dW[idx[i]]
        s = g[i]
        for j in range(d.shape[0]):
            d[j] += s[j]


def embedding_bwd(num_embeddings: int, idx: np.ndarray, g: np.ndarray) -> np.ndarray:
    """嵌入反向：返回 (num_embeddings, C) 的 dW，重复下标的梯度相加。契约见模块说明。"""
    V, i, g2 = _check(num_embeddings, idx, g)
    if not use_numba():
        return embedding_bwd_numpy(V, i, g2)
    dW = np.zeros((V, g2.shape[1]), dtype=g2.dtype)
    _embedding_bwd_numba(dW, np.ascontiguousarray(i), np.ascontiguousarray(g2))
    return dW
