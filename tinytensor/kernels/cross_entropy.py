"""softmax + 交叉熵（融合）：numba 内核与 NumPy 参考实现。

公式（逐行，行长为 V；m 为行最大值）
---------------------------------
    lse = m + log Σ_j exp(x_j − m)              （先减行最大值，exp 不会上溢）
    交叉熵：loss_i = lse_i − x_{i,t_i}；t_i == ignore_index 的行 loss 为 0

导数
----
    ∂loss_i/∂x_{i,j} = softmax(x_i)_j − [j == t_i]，即 p − onehot；乘以调用方给的 row_scale_i，
    被忽略的行梯度全为 0。

契约
----
- ``cross_entropy_fwd(logits, targets, ignore_index=-100) -> (loss_rows, lse)``：logits (N, V)
  float32/float64（可不连续），targets 整数 (N,)；输出 (N,)，dtype 同 logits。
  不等于 ignore_index 且不在 [0, V) 内的目标抛出 IndexError（包装层向量化检查，不在内核里）。
- ``cross_entropy_bwd(logits, targets, lse, row_scale, ignore_index=-100) -> dlogits``：
  dlogits = (softmax(logits) − onehot(targets)) · row_scale[:, None]，被忽略的行全 0。
  row_scale 为标量或 (N,)，由调用方按 reduction 算好（如 mean 时为 1/有效行数），这里只负责乘上。
- ``cross_entropy_fwd_bwd(logits, targets, row_scale, ignore_index=-100, out=None) -> (loss_rows, lse, dlogits)``：
  前向与反向一次做完（融合输出层用：梯度在前向时就能算出）。每个元素只算一次 exp：先把 exp(x − m) 写进
  dlogits 并求和，再乘 row_scale/Σ、目标处减 row_scale。与先 fwd 再 bwd 的结果只差舍入。
- 数值：Σexp 在 float64 中累加；lse 在 float64 中算出后舍入到输入精度保存；每行 loss 用 float64 的
  lse 减去目标 logit 再舍入。logits 中的 −inf（被屏蔽的词）没有问题：exp(−inf) = 0。
  整行都是 −inf（完全屏蔽）时不产生 NaN：lse = −inf；该行若被忽略则 loss = 0、梯度全 0；
  若未被忽略则 loss = +inf（目标的概率为 0），softmax 视为全 0，梯度为 −onehot·row_scale。
  +inf 或 NaN 的 logits 会得到 NaN（有意让发散可见）；±1e4 这类大有限值没有问题。
- exp 用 ``_vmath.vexp``（可向量化，速度与 np.exp 相当），因此前向只需读一遍 logits、不写 (N, V) 的
  中间结果，且可按行并行（小输入走串行内核，见 backend.py）。若把 exp 交给 np.exp，前向就得先写出
  (N, V) 的 x − m，再回读求和，至少多两遍内存（实测的差别见 docs/performance.md）。
- softmax / log_softmax 本身在 softmax.py。
"""

from __future__ import annotations

import numpy as np

from ._checks import check_ndim, check_shape, float_array, float_like, int_array
from ._vmath import row_max, row_sum, vexp
from .backend import njit, prange, run_split, use_numba

# 工作量（N·V 个元素）低于阈值时走串行内核，否则走并行内核；两条路径逐位相同（见 backend.py）。
_PAR_MIN_CE_FWD = 1 << 16
_PAR_MIN_CE_BWD = 1 << 16
_PAR_MIN_CE_FUSED = 1 << 16

_OP_CE = "cross_entropy"


# ---------------------------------------------------------------------------
# 输入检查
# ---------------------------------------------------------------------------


def _check_targets(targets: object, N: int, V: int, ignore_index: int, op: str) -> np.ndarray:
    """targets 转 int64 (N,)；越界（且不是 ignore_index）时抛出中文 IndexError。"""
    t = int_array(targets, "targets", op)
    check_shape(t, "targets", (N,), op)
    if N == 0 or (t.min() >= 0 and t.max() < V):  # 快路径：全部在范围内（无论是否被忽略）
        return np.ascontiguousarray(t)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= V))
    if bad.any():
        first = int(t[np.argmax(bad)])
        raise IndexError(
            f"{op}：目标类别 {first} 超出范围 [0, {V})（V={V}；ignore_index={ignore_index} 的行会被忽略）"
        )
    return np.ascontiguousarray(t)


def _safe_max(x2: np.ndarray) -> np.ndarray:
    """逐行最大值；整行 −inf 的行用 0 代替（exp 后全为 0，不产生 NaN）。"""
    m = x2.max(axis=1)
    return np.where(np.isneginf(m), np.zeros((), x2.dtype), m)


# ---------------------------------------------------------------------------
# NumPy 参考实现
# ---------------------------------------------------------------------------


def cross_entropy_fwd_numpy(
    logits: np.ndarray, targets: np.ndarray, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray]:
    """交叉熵前向的 NumPy 参考实现，返回 (loss_rows, lse)。"""
    dt = logits.dtype
    N = logits.shape[0]
    m = _safe_max(logits)
    e = np.exp(logits - m[:, None])
    s = e.sum(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        lse64 = m + np.log(s)  # s == 0 ⇔ 整行 −inf ⇒ lse = −inf
    ignored = targets == ignore_index
    t = np.where(ignored, 0, targets)
    picked = logits[np.arange(N), t].astype(np.float64)
    with np.errstate(invalid="ignore"):
        loss = np.where(np.isneginf(lse64), np.inf, lse64 - picked)
    loss = np.where(ignored, 0.0, loss)
    return loss.astype(dt), lse64.astype(dt)


def cross_entropy_bwd_numpy(
    logits: np.ndarray,
    targets: np.ndarray,
    lse: np.ndarray,
    row_scale: np.ndarray,
    ignore_index: int = -100,
) -> np.ndarray:
    """交叉熵反向的 NumPy 参考实现：(softmax − onehot)·row_scale，被忽略的行为 0。"""
    shift = np.where(np.isneginf(lse), np.zeros((), lse.dtype), lse)
    with np.errstate(invalid="ignore"):
        p = np.exp(logits - shift[:, None])
    ignored = targets == ignore_index
    rows = np.nonzero(~ignored)[0]
    p[rows, targets[rows]] -= 1
    p *= row_scale[:, None]
    p[ignored] = 0
    return p


def cross_entropy_fwd_bwd_numpy(
    logits: np.ndarray, targets: np.ndarray, row_scale: np.ndarray, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """前向 + 反向一次做完的 NumPy 参考实现：就是两个参考实现依次调用。"""
    loss, lse = cross_entropy_fwd_numpy(logits, targets, ignore_index)
    return loss, lse, cross_entropy_bwd_numpy(logits, targets, lse, row_scale, ignore_index)


# ---------------------------------------------------------------------------
# numba 内核（输出在前）：每个 ``*_rows`` 串行处理第 [lo, hi) 行、只写这些行；
# 对应的 ``*_par`` 把行分成与线程数相同的连续段并行调用它。两条路径逐行运算相同，结果逐位相同。
# ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def _ce_fwd_rows(loss, lse, logits, targets, ignore_index, lo, hi):
    V = logits.shape[1]
    buf = np.empty(V, logits.dtype)
    for i in range(lo, hi):
        xi = logits[i]
        m = row_max(xi)
        if m == -np.inf:  # 整行 −inf：平移 0，exp 全为 0，lse = −inf
            m = logits.dtype.type(0.0)
        for j in range(V):
            buf[j] = vexp(xi[j] - m)
        l64 = m + np.log(row_sum(buf))
        lse[i] = l64
        t = targets[i]
        if t == ignore_index:
            loss[i] = 0.0
        elif l64 == -np.inf:
            loss[i] = np.inf
        else:
            loss[i] = l64 - xi[t]


@njit(parallel=True, cache=True, error_model="numpy")
def _ce_fwd_par(loss, lse, logits, targets, ignore_index, nt):
    N = logits.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _ce_fwd_rows(loss, lse, logits, targets, ignore_index, c * N // k, (c + 1) * N // k)


@njit(cache=True, error_model="numpy", nogil=True)
def _ce_bwd_rows(dlogits, logits, targets, lse, row_scale, ignore_index, lo, hi):
    V = logits.shape[1]
    for i in range(lo, hi):
        di = dlogits[i]
        t = targets[i]
        if t == ignore_index:
            for j in range(V):
                di[j] = 0.0
            continue
        xi = logits[i]
        s = row_scale[i]
        l = lse[i]
        if l == -np.inf:  # 整行 −inf：softmax 视为全 0
            l = lse.dtype.type(0.0)
        xt = xi[t]  # 先读出目标 logit：dlogits 可以就是 logits 本身（原地写）
        for j in range(V):
            di[j] = vexp(xi[j] - l) * s
        di[t] = (vexp(xt - l) - logits.dtype.type(1.0)) * s  # 字面量 1 会把 float32 提升成 float64


@njit(parallel=True, cache=True, error_model="numpy")
def _ce_bwd_par(dlogits, logits, targets, lse, row_scale, ignore_index, nt):
    N = logits.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _ce_bwd_rows(dlogits, logits, targets, lse, row_scale, ignore_index, c * N // k, (c + 1) * N // k)


@njit(cache=True, error_model="numpy", nogil=True)
def _ce_fused_rows(loss, lse, dlogits, logits, targets, row_scale, ignore_index, lo, hi):
    V = logits.shape[1]
    one = logits.dtype.type(1.0)
    for i in range(lo, hi):
        xi = logits[i]
        di = dlogits[i]
        m = row_max(xi)
        if m == -np.inf:  # 整行 −inf：平移 0，exp 全为 0，lse = −inf
            m = logits.dtype.type(0.0)
        for j in range(V):
            di[j] = vexp(xi[j] - m)  # 先存 exp(x − m)，下面原地变成梯度（每个元素只算一次 exp）
        s = row_sum(di)
        l64 = m + np.log(s)
        lse[i] = l64
        t = targets[i]
        if t == ignore_index:
            loss[i] = 0.0
            for j in range(V):
                di[j] = 0.0
            continue
        loss[i] = np.inf if l64 == -np.inf else l64 - xi[t]
        sc = row_scale[i]
        if s == 0.0:  # 整行 −inf：softmax 视为全 0，梯度为 −onehot·row_scale
            di[t] = -sc
            continue
        inv = one / logits.dtype.type(s)
        f = inv * sc
        pt = di[t] * inv
        for j in range(V):
            di[j] = di[j] * f
        di[t] = (pt - one) * sc


@njit(parallel=True, cache=True, error_model="numpy")
def _ce_fused_par(loss, lse, dlogits, logits, targets, row_scale, ignore_index, nt):
    N = logits.shape[0]
    k = max(1, min(nt, N))
    for c in prange(k):
        _ce_fused_rows(loss, lse, dlogits, logits, targets, row_scale, ignore_index, c * N // k, (c + 1) * N // k)


# ---------------------------------------------------------------------------
# 公开函数
# ---------------------------------------------------------------------------


def _check_logits(logits: object) -> np.ndarray:
    x = float_array(logits, "logits", _OP_CE)
    check_ndim(x, "logits", 2, _OP_CE)
    if x.shape[1] == 0:
        raise ValueError(f"{_OP_CE}：类别数 V 不能为 0，收到形状 {x.shape}")
    return x


def cross_entropy_fwd(
    logits: np.ndarray, targets: np.ndarray, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray]:
    """softmax + 交叉熵前向，返回每行的 loss 与 lse（被忽略的行 loss 为 0）。契约见模块说明。"""
    x = _check_logits(logits)
    N, V = x.shape
    t = _check_targets(targets, N, V, int(ignore_index), _OP_CE)
    if not use_numba():
        return cross_entropy_fwd_numpy(x, t, int(ignore_index))
    x = np.ascontiguousarray(x)
    loss = np.empty(N, x.dtype)
    lse = np.empty(N, x.dtype)
    run_split(_ce_fwd_rows, _ce_fwd_par, N, loss, lse, x, t, int(ignore_index), work=N * V, min_work=_PAR_MIN_CE_FWD)
    return loss, lse


def cross_entropy_bwd(
    logits: np.ndarray,
    targets: np.ndarray,
    lse: np.ndarray,
    row_scale: float | np.ndarray,
    ignore_index: int = -100,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """交叉熵反向：(softmax − onehot)·row_scale[:, None]，被忽略的行全 0。契约见模块说明。

    ``out`` 给定时把结果写进它并返回它（调用方可跨调用复用缓冲区）。``out`` 也可以就是 logits 本身
    （原地覆盖），结果相同，但别名会让 LLVM 的运行时重叠检查失败、退回标量循环，慢得多（见 docs/performance.md）。
    """
    x = _check_logits(logits)
    N, V = x.shape
    t = _check_targets(targets, N, V, int(ignore_index), _OP_CE)
    lse = float_like(lse, "lse", x.dtype, _OP_CE)
    check_shape(lse, "lse", (N,), _OP_CE)
    rs = _check_row_scale(row_scale, N, x.dtype)
    _check_grad_out(out, x)
    if not use_numba():
        ref = cross_entropy_bwd_numpy(x, t, lse, rs, int(ignore_index))
        if out is None:
            return ref
        out[...] = ref
        return out
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty_like(x)
    lse = np.ascontiguousarray(lse)
    run_split(_ce_bwd_rows, _ce_bwd_par, N, out, x, t, lse, rs, int(ignore_index), work=N * V, min_work=_PAR_MIN_CE_BWD)
    return out


def cross_entropy_fwd_bwd(
    logits: np.ndarray,
    targets: np.ndarray,
    row_scale: float | np.ndarray,
    ignore_index: int = -100,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """交叉熵前向 + 反向一次做完，返回 (loss_rows, lse, dlogits)。契约见模块说明；out 同 cross_entropy_bwd。"""
    x = _check_logits(logits)
    N, V = x.shape
    t = _check_targets(targets, N, V, int(ignore_index), _OP_CE)
    rs = _check_row_scale(row_scale, N, x.dtype)
    _check_grad_out(out, x)
    if not use_numba():
        loss, lse, ref = cross_entropy_fwd_bwd_numpy(x, t, rs, int(ignore_index))
        if out is None:
            return loss, lse, ref
        out[...] = ref
        return loss, lse, out
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty_like(x)
    loss = np.empty(N, x.dtype)
    lse = np.empty(N, x.dtype)
    run_split(
        _ce_fused_rows, _ce_fused_par, N, loss, lse, out, x, t, rs, int(ignore_index),
        work=N * V, min_work=_PAR_MIN_CE_FUSED,
    )  # fmt: skip
    return loss, lse, out


def _check_row_scale(row_scale: float | np.ndarray, N: int, dtype: np.dtype) -> np.ndarray:
    rs = np.asarray(row_scale)
    if rs.ndim == 0:
        return np.full(N, rs, dtype=dtype)
    check_shape(rs, "row_scale", (N,), _OP_CE)
    return np.ascontiguousarray(rs, dtype=dtype)


def _check_grad_out(out: np.ndarray | None, x: np.ndarray) -> None:
    if out is not None:
        if type(out) is not np.ndarray or out.dtype != x.dtype or out.shape != x.shape or not out.flags.c_contiguous:
            raise ValueError(
                f"{_OP_CE}：out 必须是与 logits 同形状 {x.shape}、同 dtype {x.dtype} 的 C 连续数组，"
                f"收到 {getattr(out, 'shape', None)} / {getattr(out, 'dtype', None)}"
            )


