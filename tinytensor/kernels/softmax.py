"""softmax 与 log_softmax（沿最后一维）：numba 内核与 NumPy 参考实现。

公式（逐行，行长为 V；m 为行最大值）
---------------------------------
    softmax(x)_j = exp(x_j − m) · (1 / Σ_k exp(x_k − m))      （先减行最大值，exp 不会上溢；乘倒数，与 torch 相同）
    log_softmax(x)_j = x_j − m − log Σ_k exp(x_k − m)          （不先算 softmax 再取对数：那样会下溢成 −inf）

导数（y 为前向输出，g = ∂L/∂y）
-----------------------------
    softmax 反向：dx = y ⊙ (g − Σ g⊙y)；log_softmax 反向：dx = g − exp(y) · Σ g。

契约
----
- ``softmax_fwd/log_softmax_fwd(x)``、``softmax_bwd(g, y)``、``log_softmax_bwd(g, y)``：沿最后一维，
  x 可为任意维数、float32/float64、可不连续（内部按 (-1, 最后一维) 处理）；输出与输入同形状同 dtype。
- NumPy 参考实现 ``*_numpy`` 多一个 ``axis`` 参数（默认 −1），可沿任意一维计算：算子 ``Tensor.softmax(dim)``
  在 dim 不是最后一维时、注意力的 NumPy 参考实现（attention.py）都直接用它们——softmax 只写这一次。
- 数值：Σexp 与 Σ g⊙y 在 float64 中累加后舍入到输入精度。整行都是 −inf（完全屏蔽）时不产生 NaN：
  softmax 给出全 0 行，log_softmax 给出全 −inf 行。
- exp 用 ``_vmath.vexp``（可向量化），内核只读一遍输入；小输入走串行内核（见 backend.py）。
"""

from __future__ import annotations

import numpy as np

from ._checks import check_shape, float_array, float_like
from ._vmath import row_dot, row_max, row_sum, vexp
from .backend import njit, prange, run_split, use_numba

# 工作量（元素个数）低于阈值时走串行内核，否则走并行内核；两条路径逐位相同（见 backend.py）。
_PAR_MIN_SM_FWD = 1 << 16
_PAR_MIN_SM_BWD = 1 << 16

_OP_SM = "softmax"
_OP_LSM = "log_softmax"


def _rows(x: np.ndarray) -> np.ndarray:
    """(..., V) → C 连续的 (N, V)。"""
    return np.ascontiguousarray(x.reshape(-1, x.shape[-1]))


# ---------------------------------------------------------------------------
# NumPy 参考实现（沿任意一维）
# ---------------------------------------------------------------------------


def _safe_max(x: np.ndarray, axis: int) -> np.ndarray:
    """沿 axis 的最大值（保留该维）；整行 −inf 时用 0 代替（exp 后全为 0，不产生 NaN）。"""
    m = x.max(axis=axis, keepdims=True)
    return np.where(np.isneginf(m), np.zeros((), x.dtype), m)


def softmax_fwd_numpy(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax 前向的 NumPy 参考实现：exp(x − max) · (1 / Σ)，沿 axis；整行 −inf 给出全 0。"""
    e = np.exp(x - _safe_max(x, axis))
    s = e.sum(axis=axis, keepdims=True, dtype=np.float64).astype(e.dtype)
    s = np.where(s == 0, np.ones((), e.dtype), s)  # 整行 −inf：e 全为 0，结果保持 0
    e *= np.ones((), e.dtype) / s
    return e


def log_softmax_fwd_numpy(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log_softmax 前向的 NumPy 参考实现：x − max − log Σ exp(x − max)，沿 axis；整行 −inf 给出全 −inf。"""
    d = x - _safe_max(x, axis)
    s = np.exp(d).sum(axis=axis, keepdims=True, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logs = np.log(s).astype(d.dtype)
    with np.errstate(invalid="ignore"):
        y = d - logs
    return np.where(s == 0, np.asarray(-np.inf, dtype=d.dtype), y)


def softmax_bwd_numpy(g: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax 反向的 NumPy 参考实现：dx = y·(g − Σ g·y)，沿 axis。"""
    d = (g * y).sum(axis=axis, keepdims=True, dtype=np.float64).astype(y.dtype)
    return y * (g - d)


def log_softmax_bwd_numpy(g: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """log_softmax 反向的 NumPy 参考实现：dx = g − exp(y)·Σ g，沿 axis。"""
    sg = g.sum(axis=axis, keepdims=True, dtype=np.float64).astype(y.dtype)
    return g - np.exp(y) * sg


# ---------------------------------------------------------------------------
# numba 内核（输出在前）：每个 ``*_rows`` 串行处理第 [lo, hi) 行、只写这些行；
# 对应的 ``*_par`` 把行分成与线程数相同的连续段并行调用它。两条路径逐行运算相同，结果逐位相同。
# ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def _softmax_fwd_rows(y, x, lo, hi):
    V = x.shape[1]
    for i in range(lo, hi):
        xi = x[i]
        yi = y[i]
        m = row_max(xi)
        if m == -np.inf:
            m = x.dtype.type(0.0)
        for j in range(V):
            yi[j] = vexp(xi[j] - m)
        s = x.dtype.type(row_sum(yi))
        if s == 0:  # 整行 −inf：保持全 0
            continue
        inv = x.dtype.type(1.0) / s  # 与 torch 相同：乘倒数而不是逐个除
        for j in range(V):
            yi[j] = yi[j] * inv


@njit(parallel=True, cache=True, error_model="numpy")
def _softmax_fwd_par(y, x, nt):
    N = x.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _softmax_fwd_rows(y, x, c * N // k, (c + 1) * N // k)


@njit(cache=True, error_model="numpy", nogil=True)
def _log_softmax_fwd_rows(y, x, lo, hi):
    V = x.shape[1]
    for i in range(lo, hi):
        xi = x[i]
        yi = y[i]
        m = row_max(xi)
        if m == -np.inf:
            m = x.dtype.type(0.0)
        for j in range(V):
            yi[j] = vexp(xi[j] - m)
        s = row_sum(yi)
        if s == 0:  # 整行 −inf
            for j in range(V):
                yi[j] = -np.inf
            continue
        logs = x.dtype.type(np.log(s))
        for j in range(V):
            yi[j] = (xi[j] - m) - logs


@njit(parallel=True, cache=True, error_model="numpy")
def _log_softmax_fwd_par(y, x, nt):
    N = x.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _log_softmax_fwd_rows(y, x, c * N // k, (c + 1) * N // k)


@njit(cache=True, error_model="numpy", nogil=True)
def _softmax_bwd_rows(dx, g, y, lo, hi):
    V = y.shape[1]
    for i in range(lo, hi):
        gi = g[i]
        yi = y[i]
        dxi = dx[i]
        d = y.dtype.type(row_dot(gi, yi))
        for j in range(V):
            dxi[j] = yi[j] * (gi[j] - d)


@njit(parallel=True, cache=True, error_model="numpy")
def _softmax_bwd_par(dx, g, y, nt):
    N = y.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _softmax_bwd_rows(dx, g, y, c * N // k, (c + 1) * N // k)


@njit(cache=True, error_model="numpy", nogil=True)
def _log_softmax_bwd_rows(dx, g, y, lo, hi):
    V = y.shape[1]
    for i in range(lo, hi):
        gi = g[i]
        yi = y[i]
        dxi = dx[i]
        sg = y.dtype.type(row_sum(gi))
        for j in range(V):
            dxi[j] = gi[j] - vexp(yi[j]) * sg


@njit(parallel=True, cache=True, error_model="numpy")
def _log_softmax_bwd_par(dx, g, y, nt):
    N = y.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _log_softmax_bwd_rows(dx, g, y, c * N // k, (c + 1) * N // k)


# ---------------------------------------------------------------------------
# 公开函数
# ---------------------------------------------------------------------------


def _check_last_axis(x: object, name: str, op: str) -> np.ndarray:
    a = float_array(x, name, op)
    if a.ndim < 1 or a.shape[-1] == 0:
        raise ValueError(f"{op}：{name} 的最后一维不能为空，收到形状 {a.shape}")
    return a


def softmax_fwd(x: np.ndarray) -> np.ndarray:
    """沿最后一维的 softmax（先减行最大值；整行 −inf 给出全 0）。"""
    x = _check_last_axis(x, "x", _OP_SM)
    if not use_numba():
        return softmax_fwd_numpy(x)
    x2 = _rows(x)
    y = np.empty_like(x2)
    run_split(_softmax_fwd_rows, _softmax_fwd_par, x2.shape[0], y, x2, work=x2.size, min_work=_PAR_MIN_SM_FWD)
    return y.reshape(x.shape)


def log_softmax_fwd(x: np.ndarray) -> np.ndarray:
    """沿最后一维的 log_softmax：x − max − log Σ exp(x − max)（整行 −inf 给出全 −inf）。"""
    x = _check_last_axis(x, "x", _OP_LSM)
    if not use_numba():
        return log_softmax_fwd_numpy(x)
    x2 = _rows(x)
    y = np.empty_like(x2)
    run_split(_log_softmax_fwd_rows, _log_softmax_fwd_par, x2.shape[0], y, x2, work=x2.size, min_work=_PAR_MIN_SM_FWD)
    return y.reshape(x.shape)


def _check_pair(g: object, y: object, op: str) -> tuple[np.ndarray, np.ndarray]:
    y = _check_last_axis(y, "y", op)
    g = float_like(g, "grad", y.dtype, op)
    check_shape(g, "grad", y.shape, op)
    return g, y


def softmax_bwd(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """softmax 反向：dx = y·(g − Σ g·y)，y 为前向输出。"""
    g, y = _check_pair(g, y, _OP_SM)
    if not use_numba():
        return softmax_bwd_numpy(g, y)
    y2 = _rows(y)
    dx = np.empty_like(y2)
    g2 = _rows(g)
    run_split(_softmax_bwd_rows, _softmax_bwd_par, y2.shape[0], dx, g2, y2, work=y2.size, min_work=_PAR_MIN_SM_BWD)
    return dx.reshape(y.shape)


def log_softmax_bwd(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log_softmax 反向：dx = g − exp(y)·Σ g，y 为前向输出。"""
    g, y = _check_pair(g, y, _OP_LSM)
    if not use_numba():
        return log_softmax_bwd_numpy(g, y)
    y2 = _rows(y)
    dx = np.empty_like(y2)
    g2 = _rows(g)
    run_split(
        _log_softmax_bwd_rows, _log_softmax_bwd_par, y2.shape[0], dx, g2, y2,
        work=y2.size, min_work=_PAR_MIN_SM_BWD,
    )
    return dx.reshape(y.shape)
