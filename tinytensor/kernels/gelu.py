"""GELU（tanh 近似，与 torch 的 approximate="tanh" 相同）：numba 内核与 NumPy 参考实现。

公式
----
    u = √(2/π) · (x + 0.044715·x³),   t = tanh(u)
    y = 0.5·x·(1 + t)

导数
----
    dy/dx = 0.5·(1 + t) + 0.5·x·(1 − t²) · √(2/π)·(1 + 3·0.044715·x²)
    dx = g · dy/dx

契约
----
- ``gelu_fwd(x) -> (y, t)``：x 任意形状、float32/float64、可不连续；y 与 t 同形状同 dtype（C 连续）。
  t 留给反向使用（省去反向再算一次 tanh）。
- ``gelu_bwd(g, x, t) -> dx``：g、x、t 同形状同 dtype。
- 运算顺序与 torch 的 CPU 内核一致（x³ = (x·x)·x，y = (0.5·x)·(1+t)），全程在输入精度下计算。

实现
----
整个前向在一个（可并行的）循环里完成：只读一次 x、写一次 y 和 t，不要中间缓冲。循环里的 ``math.tanh``
不能向量化，所以用 ``_vmath.vtanh``（只用加减乘除与位操作，可以向量化），而不是先算 u、再交给
``np.tanh``、再合成的三段式。vtanh 与 np.tanh 的差别在 1e−7（float32）/ 2e−16（float64）的绝对误差量级。
实测的速度对比见 docs/performance.md。
"""

from __future__ import annotations

import numpy as np

from ._checks import check_shape, float_array, float_like
from ._vmath import vtanh
from .backend import njit, prange, run_split, use_numba

SQRT_2_OVER_PI = 0.7978845608028654
KAPPA = 0.044715

# 元素个数低于阈值时走串行内核，否则走并行内核；两条路径逐位相同（见 backend.py）。
_PAR_MIN_FWD = 1 << 16
_PAR_MIN_BWD = 1 << 16

_OP_FWD = "gelu 前向"
_OP_BWD = "gelu 反向"


# ---------------------------------------------------------------------------
# NumPy 参考实现
# ---------------------------------------------------------------------------


def gelu_fwd_numpy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU(tanh) 前向的 NumPy 参考实现，返回 (y, t)。"""
    dt = x.dtype.type
    u = x * x * x
    u *= dt(KAPPA)
    u += x
    u *= dt(SQRT_2_OVER_PI)
    t = np.tanh(u, out=u)
    y = dt(0.5) * x * (dt(1.0) + t)
    return y, t


def gelu_bwd_numpy(g: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """GELU(tanh) 反向的 NumPy 参考实现。"""
    dt = x.dtype.type
    inner_d = dt(SQRT_2_OVER_PI) * (dt(1.0) + dt(3.0) * dt(KAPPA) * (x * x))
    left_d = dt(0.5) * (dt(1.0) + t)
    right_d = dt(0.5) * x * (dt(1.0) - t * t) * inner_d
    return g * (left_d + right_d)


# ---------------------------------------------------------------------------
# numba 内核（1-D 连续数组；串行的区间内核 + 按线程数分段的并行驱动）
# ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def _gelu_fwd_range(y, t, x, lo, hi):
    """串行处理第 [lo, hi) 个元素。"""
    c = x.dtype.type(SQRT_2_OVER_PI)
    k = x.dtype.type(KAPPA)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1.0)
    xs, ts, ys = x[lo:hi], t[lo:hi], y[lo:hi]  # 切片后下标从 0 起：LLVM 知道它非负，循环才能向量化
    for i in range(xs.shape[0]):
        xi = xs[i]
        ti = vtanh(c * (xi + k * (xi * xi * xi)))
        ts[i] = ti
        ys[i] = half * xi * (one + ti)


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_fwd_par(y, t, x, nt):
    """把下标分成与线程数相同的连续段，每段交给 _gelu_fwd_range。"""
    n = x.shape[0]
    m = max(1, min(nt, n))
    for c in prange(m):
        _gelu_fwd_range(y, t, x, c * n // m, (c + 1) * n // m)


@njit(cache=True, error_model="numpy", nogil=True)
def _gelu_bwd_range(dx, g, x, t, lo, hi):
    """串行处理第 [lo, hi) 个元素。"""
    c = x.dtype.type(SQRT_2_OVER_PI)
    k3 = x.dtype.type(3.0) * x.dtype.type(KAPPA)
    half = x.dtype.type(0.5)
    one = x.dtype.type(1.0)
    dxs, gs, xs, ts = dx[lo:hi], g[lo:hi], x[lo:hi], t[lo:hi]  # 同上：下标从 0 起才能向量化
    for i in range(xs.shape[0]):
        xi = xs[i]
        ti = ts[i]
        inner_d = c * (one + k3 * (xi * xi))
        left_d = half * (one + ti)
        right_d = half * xi * (one - ti * ti) * inner_d
        dxs[i] = gs[i] * (left_d + right_d)


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_bwd_par(dx, g, x, t, nt):
    """把下标分成与线程数相同的连续段，每段交给 _gelu_bwd_range。"""
    n = x.shape[0]
    m = max(1, min(nt, n))
    for c in prange(m):
        _gelu_bwd_range(dx, g, x, t, c * n // m, (c + 1) * n // m)


# ---------------------------------------------------------------------------
# 公开函数
# ---------------------------------------------------------------------------


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def gelu_fwd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GELU(tanh) 前向，返回 (y, t)，t = tanh(√(2/π)(x + 0.044715x³)) 供反向使用。"""
    x = float_array(x, "x", _OP_FWD)
    if not use_numba():
        return gelu_fwd_numpy(x)
    xf = _flat(x)
    n = xf.shape[0]
    y = np.empty(n, x.dtype)
    t = np.empty(n, x.dtype)
    run_split(_gelu_fwd_range, _gelu_fwd_par, n, y, t, xf, work=n, min_work=_PAR_MIN_FWD)
    return y.reshape(x.shape), t.reshape(x.shape)


def gelu_bwd(g: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """GELU(tanh) 反向：dx = g·dy/dx，t 为前向返回的 tanh 值。"""
    x = float_array(x, "x", _OP_BWD)
    g = float_like(g, "grad", x.dtype, _OP_BWD)
    t = float_like(t, "t", x.dtype, _OP_BWD)
    check_shape(g, "grad", x.shape, _OP_BWD)
    check_shape(t, "t", x.shape, _OP_BWD)
    if not use_numba():
        return gelu_bwd_numpy(g, x, t)
    xf = _flat(x)
    n = xf.shape[0]
    dx = np.empty(n, x.dtype)
    run_split(_gelu_bwd_range, _gelu_bwd_par, n, dx, _flat(g), xf, _flat(t), work=n, min_work=_PAR_MIN_BWD)
    return dx.reshape(x.shape)
