"""RMSNorm 前向（Qwen3 等现代模型用它代替 LayerNorm）：numba 内核与 NumPy 参考实现。

公式（沿最后一维，长度 C）
--------------------------
    y = x / sqrt(mean(x²) + eps) · w

与 LayerNorm 相比不减均值、没有偏置。只有前向：它用在生成（推理）里，训练 Qwen3 不在本书范围内。

为什么要内核：解码时每层有 4 次 RMSNorm（注意力前、q/k 各一次 QK-norm、前馈前），每次只有一两行；
NumPy 写法的五六次小调用每次几微秒，加起来比算本身慢得多。内核一次读写完一行。

契约
----
- ``rms_norm_fwd(x, w, eps)``：x (..., C) float32/float64（可不连续），w (C,) 同 dtype；
  返回与 x 同形状、同 dtype 的新数组。
- ``rms_norm_numpy``：参考实现；内核与它只差求和顺序的舍入（测试检查）。
"""

from __future__ import annotations

import numpy as np

from ._checks import float_array, float_like
from .backend import njit, use_numba

_OP = "rms_norm"


def rms_norm_numpy(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """参考实现：x / sqrt(mean(x²) + eps) · w。"""
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x * (1.0 / np.sqrt(var + eps)).astype(x.dtype) * w


@njit(cache=True, fastmath=True, nogil=True)
def _rms_rows(x, w, eps, out):
    n = x.shape[1]
    for r in range(x.shape[0]):
        s = x.dtype.type(0.0)
        for i in range(n):
            s += x[r, i] * x[r, i]
        inv = x.dtype.type(1.0 / np.sqrt(s / n + eps))
        for i in range(n):
            out[r, i] = x[r, i] * inv * w[i]


def rms_norm_fwd(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm 前向（契约见模块说明）。"""
    x = float_array(x, "x", _OP)
    w = float_like(w, "w", x.dtype, _OP)
    if x.ndim == 0 or w.shape != (x.shape[-1],):
        raise ValueError(f"{_OP}：x 的最后一维应与 w 的长度相同，收到 x {x.shape}、w {w.shape}")
    if not use_numba():
        return rms_norm_numpy(x, w, eps)
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    _rms_rows(rows, np.ascontiguousarray(w), float(eps), out)
    return out.reshape(x.shape)
