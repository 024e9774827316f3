"""LayerNorm 前向/反向：numba 内核与 NumPy 参考实现。

公式（对最后一维 C 归一化，N 为其余各维之积）
-------------------------------------------
    μ = mean(x),  σ² = mean((x − μ)²)（有偏方差，与 torch 一致），  r = 1/√(σ² + eps)
    x̂ = (x − μ)·r,   y = x̂·w + b

导数（g = ∂L/∂y）
---------------
    ĝ  = g·w
    dx = r · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))
    dw = Σ_行 g·x̂,   db = Σ_行 g

契约
----
- ``layer_norm_fwd(x, w, b, eps) -> (y, mean, rstd)``：x 形状 (..., C)，通常为 2-D (N, C)，
  可以不连续；w、b 形状 (C,) 或 None；y 与 x 同形状（C 连续），mean/rstd 形状 x.shape[:-1]；
  所有输出 dtype 与 x 相同（float32 或 float64），w/b 的 dtype 必须与 x 相同。
- ``layer_norm_bwd(g, x, w, mean, rstd) -> (dx, dw, db)``：g 与 x 同形状；w 为 None 时 dw、db 为 None
  （有 b 无 w 的少见情形，db 就是 g 对前面各维求和，由调用方自行计算）。
- 数值：均值与方差用两遍法（先均值、再 Σ(x−μ)²），两遍都在 float64 中累加（float32 输入也是），
  结果再舍入到输入精度保存；y、dx 的逐元素运算在输入精度下进行。torch 在 CPU 上用 float32 的
  Welford/两遍法，两者差在末位。反向里每行的 mean(ĝ)、mean(ĝ·x̂) 同样在 float64 中累加。
  dw、db：numba 内核先在每块 ``LN_BWD_ROWS``（32）行内按输入精度累加，块与块之间再用 float64 相加
  （32 项的 float32 和误差约 1e−7 量级，与 NumPy 成对求和相当，却快得多，见 docs/performance.md）；
  NumPy 参考直接在 float64 中对所有行求和。
- 并行：前向每行独立；反向把行分成固定大小（``LN_BWD_ROWS`` 行）的块，每块写自己的 dw/db 部分和，
  再按块号顺序相加——块划分与线程数、与走串行还是并行路径都无关，所以结果逐位相同。
  小输入走串行内核，大输入把行（反向为块）分成与线程数相同的连续段并行处理（见 backend.py）。
"""

from __future__ import annotations

import numpy as np

from ._checks import check_shape, float_array, float_like
from ._vmath import row_dot, row_sq_dev_sum, row_sum
from .backend import njit, prange, run_split, use_numba

LN_BWD_ROWS = 32  # 反向每块的行数；固定常数，保证结果与线程数、与走串行还是并行路径都无关

# 工作量（N·C 个元素）低于阈值时走串行内核，否则走并行内核；两条路径逐位相同（见 backend.py）。
_PAR_MIN_FWD = 1 << 16
_PAR_MIN_BWD = 1 << 16

_OP_FWD = "layer_norm 前向"
_OP_BWD = "layer_norm 反向"


# ---------------------------------------------------------------------------
# NumPy 参考实现
# ---------------------------------------------------------------------------


def layer_norm_fwd_numpy(
    x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LayerNorm 前向的 NumPy 参考实现（契约见模块说明）。"""
    dt = x.dtype
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    mean64 = x2.mean(axis=1, dtype=np.float64)
    d = x2 - mean64[:, None]  # float64
    var = np.mean(d * d, axis=1)
    mean = mean64.astype(dt)
    rstd = (1.0 / np.sqrt(var + eps)).astype(dt)
    y = (x2 - mean[:, None]) * rstd[:, None]
    if w is not None:
        y *= w
    if b is not None:
        y += b
    lead = x.shape[:-1]
    return y.reshape(x.shape), mean.reshape(lead), rstd.reshape(lead)


def layer_norm_bwd_numpy(
    g: np.ndarray, x: np.ndarray, w: np.ndarray | None, mean: np.ndarray, rstd: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """LayerNorm 反向的 NumPy 参考实现（契约见模块说明）。"""
    dt = x.dtype
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    g2 = g.reshape(-1, C)
    m = mean.reshape(-1, 1)
    r = rstd.reshape(-1, 1)
    xhat = (x2 - m) * r
    dxhat = g2 * w if w is not None else g2
    a = dxhat.mean(axis=1, dtype=np.float64).astype(dt)[:, None]
    c = (dxhat * xhat).mean(axis=1, dtype=np.float64).astype(dt)[:, None]
    dx = ((dxhat - a - xhat * c) * r).reshape(x.shape)
    if w is None:
        return dx, None, None
    dw = (g2 * xhat).sum(axis=0, dtype=np.float64).astype(dt)
    db = g2.sum(axis=0, dtype=np.float64).astype(dt)
    return dx, dw, db


# ---------------------------------------------------------------------------
# numba 内核（输出在前、由包装层预先分配；所有数组 C 连续）
# ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def _ln_fwd_rows(y, mean, rstd, x, w, b, eps, lo, hi):
    """串行处理第 [lo, hi) 行；只写这些行的 y、mean、rstd。"""
    C = x.shape[1]
    for i in range(lo, hi):
        xi = x[i]
        mu = row_sum(xi) / C
        var = row_sq_dev_sum(xi, mu) / C
        mean[i] = mu  # 存储时舍入到输入精度；下面用舍入后的值，与反向完全一致
        rstd[i] = 1.0 / np.sqrt(var + eps)
        m = mean[i]
        r = rstd[i]
        yi = y[i]
        for j in range(C):
            yi[j] = (xi[j] - m) * r * w[j] + b[j]


@njit(parallel=True, cache=True, error_model="numpy")
def _ln_fwd_par(y, mean, rstd, x, w, b, eps, nt):
    """把行分成与线程数相同的连续段，每段交给 _ln_fwd_rows（每段只写自己的行）。"""
    N = x.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _ln_fwd_rows(y, mean, rstd, x, w, b, eps, c * N // k, (c + 1) * N // k)


@njit(cache=True, error_model="numpy", nogil=True)
def _ln_bwd_blocks(dx, dw_part, db_part, g, x, w, mean, rstd, rows, need_wb, blo, bhi):
    """串行处理第 [blo, bhi) 块（每块 rows 行）；只写这些块的 dx 行与 dw_part、db_part 行。"""
    N, C = x.shape
    xhat = np.empty(C, x.dtype)
    dxhat = np.empty(C, x.dtype)
    for c in range(blo, bhi):
        pw = dw_part[c]
        pb = db_part[c]
        for i in range(c * rows, min(N, (c + 1) * rows)):
            m = mean[i]
            r = rstd[i]
            xi = x[i]
            gi = g[i]
            if need_wb:
                for j in range(C):
                    xh = (xi[j] - m) * r
                    xhat[j] = xh
                    dxhat[j] = gi[j] * w[j]
                    pw[j] += gi[j] * xh
                    pb[j] += gi[j]
            else:
                for j in range(C):
                    xhat[j] = (xi[j] - m) * r
                    dxhat[j] = gi[j] * w[j]
            a = x.dtype.type(row_sum(dxhat) / C)
            cc = x.dtype.type(row_dot(dxhat, xhat) / C)
            dxi = dx[i]
            for j in range(C):
                dxi[j] = (dxhat[j] - a - xhat[j] * cc) * r


@njit(parallel=True, cache=True, error_model="numpy")
def _ln_bwd_par(dx, dw_part, db_part, g, x, w, mean, rstd, rows, need_wb, nt):
    """把块分成与线程数相同的连续段；块的划分（每块 rows 行）与走哪条路径无关。"""
    nb = dw_part.shape[0]
    k = max(1, min(nt, nb))
    for c in prange(k):
        _ln_bwd_blocks(dx, dw_part, db_part, g, x, w, mean, rstd, rows, need_wb, c * nb // k, (c + 1) * nb // k)


# ---------------------------------------------------------------------------
# 公开函数：检查输入，调用时按后端分派
# ---------------------------------------------------------------------------


def _check_affine(p: object, name: str, C: int, dtype: np.dtype, op: str) -> np.ndarray | None:
    if p is None:
        return None
    a = float_like(p, name, dtype, op)
    check_shape(a, name, (C,), op)
    return a


def layer_norm_fwd(
    x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LayerNorm 前向，返回 (y, mean, rstd)；契约见模块说明。"""
    x = float_array(x, "x", _OP_FWD)
    shape = x.shape
    if not shape or shape[-1] == 0:
        raise ValueError(f"{_OP_FWD}：x 的最后一维（C）不能为空，收到形状 {shape}")
    C = shape[-1]
    dt = x.dtype
    w = _check_affine(w, "weight", C, dt, _OP_FWD)
    b = _check_affine(b, "bias", C, dt, _OP_FWD)
    if not use_numba():
        return layer_norm_fwd_numpy(x, w, b, eps)
    x2 = np.ascontiguousarray(x if len(shape) == 2 else x.reshape(-1, C))
    N = x2.shape[0]
    y = np.empty((N, C), dt)
    mean = np.empty(N, dt)
    rstd = np.empty(N, dt)
    wk = np.ascontiguousarray(w) if w is not None else np.ones(C, dt)
    bk = np.ascontiguousarray(b) if b is not None else np.zeros(C, dt)
    run_split(_ln_fwd_rows, _ln_fwd_par, N, y, mean, rstd, x2, wk, bk, float(eps), work=N * C, min_work=_PAR_MIN_FWD)
    if len(shape) == 2:
        return y, mean, rstd
    lead = shape[:-1]
    return y.reshape(shape), mean.reshape(lead), rstd.reshape(lead)


def layer_norm_bwd(
    g: np.ndarray, x: np.ndarray, w: np.ndarray | None, mean: np.ndarray, rstd: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """LayerNorm 反向，返回 (dx, dw, db)；w 为 None 时 dw、db 为 None。契约见模块说明。"""
    x = float_array(x, "x", _OP_BWD)
    shape = x.shape
    if not shape or shape[-1] == 0:
        raise ValueError(f"{_OP_BWD}：x 的最后一维（C）不能为空，收到形状 {shape}")
    C = shape[-1]
    dt = x.dtype
    g = float_like(g, "grad", dt, _OP_BWD)
    check_shape(g, "grad", shape, _OP_BWD)
    w = _check_affine(w, "weight", C, dt, _OP_BWD)
    mean = float_like(mean, "mean", dt, _OP_BWD)
    rstd = float_like(rstd, "rstd", dt, _OP_BWD)
    check_shape(mean, "mean", shape[:-1], _OP_BWD)
    check_shape(rstd, "rstd", shape[:-1], _OP_BWD)
    if not use_numba():
        return layer_norm_bwd_numpy(g, x, w, mean, rstd)
    x2 = np.ascontiguousarray(x.reshape(-1, C))
    g2 = np.ascontiguousarray(g.reshape(-1, C))
    N = x2.shape[0]
    nchunk = (N + LN_BWD_ROWS - 1) // LN_BWD_ROWS
    need_wb = w is not None
    dx = np.empty((N, C), dt)
    shape_part = (nchunk, C) if need_wb else (nchunk, 1)
    dw_part = np.zeros(shape_part, dt)  # 块内按输入精度累加（见模块说明）
    db_part = np.zeros(shape_part, dt)
    wk = np.ascontiguousarray(w) if w is not None else np.ones(C, dt)
    m1 = np.ascontiguousarray(mean.reshape(-1))
    r1 = np.ascontiguousarray(rstd.reshape(-1))
    run_split(
        _ln_bwd_blocks, _ln_bwd_par, nchunk, dx, dw_part, db_part, g2, x2, wk, m1, r1, LN_BWD_ROWS, need_wb,
        work=N * C, min_work=_PAR_MIN_BWD,
    )
    dx = dx.reshape(shape)
    if not need_wb:
        return dx, None, None
    # 块间按块号顺序在 float64 中相加（NumPy 沿 axis 0 逐行累加，顺序固定）
    dw = dw_part.sum(axis=0, dtype=np.float64).astype(dt)
    db = db_part.sum(axis=0, dtype=np.float64).astype(dt)
    return dx, dw, db
