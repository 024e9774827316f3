"""Adam / AdamW 单步更新（原地）：numba 内核与 NumPy 参考实现。

公式（第 step 步，step 从 1 开始；与 torch.optim.Adam/AdamW 非 foreach 的单张量实现逐步一致）
-----------------------------------------------------------------------------------
    AdamW（解耦权重衰减）：p ← p·(1 − lr·wd)            （wd ≠ 0 时）
    Adam（耦合 L2）：      g ← g + wd·p                   （wd ≠ 0 时）
    m ← lerp(m, g, 1 − β1)     即 m + w·(g − m)（w < 0.5），否则 g − (g − m)·(1 − w)，w = 1 − β1
    v ← v·β2 + (1 − β2)·g·g
    bc1 = 1 − β1^step,  bc2 = 1 − β2^step,  step_size = lr / bc1
    denom = √v / √bc2 + eps
    p ← p + (−step_size)·m / denom

导数：优化器不求导；梯度 g 由反向传播给出。

契约
----
- ``adamw_step(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay, step)``
  原地更新 param、exp_avg、exp_avg_sq，返回 None；``adam_step`` 参数相同（耦合 L2）。
- 四个数组形状相同、dtype 相同（float32 或 float64）；step 为本次的步数（≥ 1）。
- 标量（lr、1−β1 等）先在 Python 的 float64 中算好，再转成参数的 dtype 参与逐元素运算——
  与 torch 把 Python 标量转成张量 dtype 的做法相同；运算顺序也与 torch 相同
  （addcmul 为 (value·g)·g，addcdiv 为 (value·m)/denom）。float64 下与 torch.optim 的差异在 1e−15 量级。
- numba 路径要求四个数组都是 C 连续的（通常如此）；否则自动改走 NumPy 参考实现（同样原地）。
- 逐元素运算，小数组走串行内核，大数组分成与线程数相同的连续段并行（见 backend.py），每段只写自己的
  元素，结果与线程数、与走哪条路径都无关；numba 内核与 NumPy 参考逐位相同
  （运算顺序相同，且不开 fastmath，LLVM 不会合成 FMA）。
- 全程只读写一遍内存（4 个数组读、3 个写），NumPy 参考要十来个临时数组（实测见 docs/performance.md）。
"""

from __future__ import annotations

import functools

import numpy as np

from ._checks import float_array, float_like
from .backend import njit, prange, run_split, use_numba

# 元素个数低于阈值时走串行内核，否则走并行内核；两条路径逐位相同（见 backend.py）。
_PAR_MIN = 1 << 16

_OP = "adam 更新"


# ---------------------------------------------------------------------------
# 标量准备（两种实现共用）
# ---------------------------------------------------------------------------


def _scalars(
    dtype: np.dtype, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
    decoupled: bool,
) -> dict[str, object]:  # fmt: skip
    """逐元素运算要用的标量（已转成参数的 dtype）；同一步里各个参数的超参数相同，所以按参数缓存。"""
    if step < 1:
        raise ValueError(f"{_OP}：step 从 1 开始计数，收到 {step}")
    key = (dtype, lr, beta1, beta2, eps, weight_decay, step, decoupled)
    try:
        return _scalars_cached(*key)
    except TypeError:  # 不可哈希的超参数（如 0 维数组）：不缓存
        return _scalars_cached.__wrapped__(*key)


@functools.lru_cache(maxsize=64, typed=True)  # typed：1.0 与 np.float32(1.0) 算出的标量可能不同，分开缓存
def _scalars_cached(
    dtype: np.dtype, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
    decoupled: bool,
) -> dict[str, object]:  # fmt: skip
    dt = np.dtype(dtype).type
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    step_size = lr / bc1
    w = 1 - beta1
    s = {  # 返回的字典被缓存共享，调用方不得修改
        "decay": dt(1 - lr * weight_decay) if (decoupled and weight_decay != 0) else dt(1.0),
        "l2": dt(weight_decay) if (not decoupled and weight_decay != 0) else dt(0.0),
        "w": dt(w),
        "one_minus_w": dt(1.0) - dt(w),  # torch 的 lerp 在张量精度下算 1 − w
        "small_w": bool(abs(w) < 0.5),
        "beta2": dt(beta2),
        "one_minus_beta2": dt(1 - beta2),
        "neg_step_size": dt(-step_size),
        "bc2_sqrt": dt(bc2**0.5),
        "eps": dt(eps),
    }
    s["kernel_args"] = tuple(s[k] for k in _KERNEL_SCALARS)
    return s


_KERNEL_SCALARS = (
    "decay", "l2", "w", "one_minus_w", "small_w", "beta2", "one_minus_beta2", "neg_step_size", "bc2_sqrt", "eps",
)  # fmt: skip


# ---------------------------------------------------------------------------
# NumPy 参考实现（原地，适用于任意步幅的数组）
# ---------------------------------------------------------------------------


def _adam_numpy(param, grad, exp_avg, exp_avg_sq, s):
    if s["decay"] != 1:
        param *= s["decay"]
    if s["l2"] != 0:
        grad = grad + s["l2"] * param
    if s["small_w"]:
        exp_avg += s["w"] * (grad - exp_avg)
    else:
        exp_avg[...] = grad - (grad - exp_avg) * s["one_minus_w"]
    exp_avg_sq *= s["beta2"]
    exp_avg_sq += s["one_minus_beta2"] * grad * grad
    denom = np.sqrt(exp_avg_sq) / s["bc2_sqrt"]
    denom += s["eps"]
    param += s["neg_step_size"] * exp_avg / denom


def adamw_step_numpy(
    param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, *,
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
) -> None:  # fmt: skip
    """AdamW 单步的 NumPy 参考实现（原地）。"""
    s = _scalars(param.dtype, lr, beta1, beta2, eps, weight_decay, step, decoupled=True)
    _adam_numpy(param, grad, exp_avg, exp_avg_sq, s)


def adam_step_numpy(
    param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, *,
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
) -> None:  # fmt: skip
    """Adam（耦合 L2）单步的 NumPy 参考实现（原地）。"""
    s = _scalars(param.dtype, lr, beta1, beta2, eps, weight_decay, step, decoupled=False)
    _adam_numpy(param, grad, exp_avg, exp_avg_sq, s)


# ---------------------------------------------------------------------------
# numba 内核（1-D 连续数组；param/exp_avg/exp_avg_sq 既是输入也是输出）：串行的区间内核 + 并行驱动
# ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def _adam_range(
    param, exp_avg, exp_avg_sq, grad,
    decay, l2, w, one_minus_w, small_w, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps, lo, hi,
):  # fmt: skip
    """串行更新第 [lo, hi) 个元素。"""
    ps, ms, vs, gs = param[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], grad[lo:hi]  # 下标从 0 起才能向量化
    for i in range(ps.shape[0]):
        p = ps[i] * decay  # decay = 1 时精确不变
        gi = gs[i]
        if l2 != 0:
            gi = gi + l2 * ps[i]
        m = ms[i]
        if small_w:
            m = m + w * (gi - m)
        else:
            m = gi - (gi - m) * one_minus_w
        v = vs[i] * beta2 + one_minus_beta2 * gi * gi
        denom = np.sqrt(v) / bc2_sqrt + eps
        ps[i] = p + neg_step_size * m / denom
        ms[i] = m
        vs[i] = v


@njit(parallel=True, cache=True, error_model="numpy")
def _adam_par(
    param, exp_avg, exp_avg_sq, grad,
    decay, l2, w, one_minus_w, small_w, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps, nt,
):  # fmt: skip
    """把下标分成与线程数相同的连续段，每段交给 _adam_range。"""
    n = param.shape[0]
    k = max(1, min(nt, n))
    for c in prange(k):
        _adam_range(
            param, exp_avg, exp_avg_sq, grad, decay, l2, w, one_minus_w, small_w, beta2, one_minus_beta2,
            neg_step_size, bc2_sqrt, eps, c * n // k, (c + 1) * n // k,
        )  # fmt: skip


# ---------------------------------------------------------------------------
# 公开函数
# ---------------------------------------------------------------------------


def _check(param: object, grad: object, exp_avg: object, exp_avg_sq: object) -> None:
    p = float_array(param, "param", _OP)
    dt, shape = p.dtype, p.shape
    for name, a in (("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        arr = float_like(a, name, dt, _OP)
        if arr.shape != shape:
            raise ValueError(f"{_OP}：{name} 的形状 {arr.shape} 与 param 的形状 {shape} 不同")
    for name, a in (("param", param), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if not isinstance(a, np.ndarray) or not a.flags.writeable:
            raise TypeError(f"{_OP}：{name} 必须是可写的 numpy 数组（原地更新）")


def _step(
    param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, s: dict[str, object]
) -> None:
    contiguous = (
        param.flags.c_contiguous and grad.flags.c_contiguous
        and exp_avg.flags.c_contiguous and exp_avg_sq.flags.c_contiguous
    )  # fmt: skip
    if not contiguous or not use_numba():
        _adam_numpy(param, grad, exp_avg, exp_avg_sq, s)
        return
    # C 连续时 reshape 是视图，原地写回原数组
    p, g, m, v = param.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1)
    run_split(_adam_range, _adam_par, p.shape[0], p, m, v, g, *s["kernel_args"], work=p.shape[0], min_work=_PAR_MIN)


def adamw_step(
    param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, *,
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
) -> None:  # fmt: skip
    """AdamW 单步（解耦权重衰减），原地更新 param、exp_avg、exp_avg_sq。契约见模块说明。"""
    _check(param, grad, exp_avg, exp_avg_sq)
    s = _scalars(param.dtype, lr, beta1, beta2, eps, weight_decay, step, decoupled=True)
    _step(param, np.asarray(grad), exp_avg, exp_avg_sq, s)


def adam_step(
    param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, *,
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int,
) -> None:  # fmt: skip
    """Adam 单步（耦合 L2：g ← g + wd·p），原地更新 param、exp_avg、exp_avg_sq。契约见模块说明。"""
    _check(param, grad, exp_avg, exp_avg_sq)
    s = _scalars(param.dtype, lr, beta1, beta2, eps, weight_decay, step, decoupled=False)
    _step(param, np.asarray(grad), exp_avg, exp_avg_sq, s)
