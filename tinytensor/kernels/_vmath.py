"""numba 内核共用的数学积木：可向量化的 exp/tanh 与按行归约。

为什么自己写 exp/tanh
--------------------
numba 没有向量化数学库（SVML 不可用）时，循环里的 ``math.exp`` / ``math.tanh`` 会逐个调用 libm，
无法向量化，比 ``np.exp`` 慢数倍（实测见 docs/performance.md）。

``vexp`` 只用加减乘、``int`` 位操作和比较，LLVM 能把它向量化，单线程就和 NumPy 的 SIMD exp 一样快，
而且能和前后的计算融合在一个循环、一次读内存里完成，还能用 prange 多线程。因此内核里的超越函数用
``vexp`` / ``vtanh``，而不是交给 NumPy。

算法（Cody–Waite 约化 + Taylor 多项式）
--------------------------------------
exp(x) = 2^n · exp(r)，n = round(x / ln2)，r = x − n·ln2 ∈ [−ln2/2, ln2/2]；
ln2 拆成高低两段（高段尾部全零，n·ln2_hi 精确），exp(r) 用 Taylor 多项式（float32 取 7 阶，
截断误差 < 6e−9；float64 取 13 阶，截断误差 < 5e−18），2^n 直接拼指数位，拆成两个因子以覆盖次正规数。
最大误差（允许 FMA 后，见下；tests/test_kernels.py 检查误差界）：float32 约 0.84 ulp，float64 约 0.79 ulp。
x 为 NaN 返回 NaN，+inf → inf，−inf → 0，上溢为 inf，下溢为 0。

tanh(u) = sign(u) · (1 − e)/(1 + e)，e = exp(−2|u|) ∈ (0, 1]，不会溢出；绝对误差约 2 ulp(1)
（u 很小时相对误差变大，但 GELU 只用到 1 ± t，需要的正是绝对精度）。

注意
----
- ``vexp`` 中“加再减 1.5·2^23（或 1.5·2^52）”是舍入到整数的技巧，``fastmath`` 的重结合会把它消掉；
  所以 vexp/vtanh 自己只开 ``contract``（允许 FMA，见下方代码注释），调用它们的内核不开 fastmath。
- 除法要向量化，调用方须用 ``error_model="numpy"``（默认的 "python" 模型会为除零检查插入分支）。
- 按行归约（``row_sum`` 等）用 ``fastmath={"reassoc"}``：只允许重结合，于是 LLVM 能用多个
  向量累加器并行求和；累加一律用 float64。求和顺序由编译出的
  机器码决定，与线程数无关（线程只分配不同的行），所以 NUMBA_NUM_THREADS=1 与默认线程数逐位相同；
  换一台向量宽度不同的机器，末位可能不同（NumPy 的成对求和也是如此）。
- numba 的 ``cache=True`` 只看函数自己所在的文件；改了本文件，用到它的内核缓存也必须失效。
  backend.py 把整个目录源码的哈希写进每个内核的缓存索引，所以这件事自动完成，不用手工删缓存。
"""

from __future__ import annotations

import math

import numpy as np

from .backend import njit, overload

# ---------------------------------------------------------------------------
# 纯 Python 版本：numba 缺失或 NUMBA_DISABLE_JIT=1 时直接执行这些函数体
# ---------------------------------------------------------------------------


def vexp(x: float) -> float:
    """可向量化的 exp（numba 内核中按 float32/float64 分派到下方实现）。"""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def vtanh(u: float) -> float:
    """可向量化的 tanh（numba 内核中按 float32/float64 分派到下方实现）。"""
    return math.tanh(u)


# ---------------------------------------------------------------------------
# numba 实现
# ---------------------------------------------------------------------------

_MAGIC32 = 12582912.0  # 1.5·2^23：float32 加上再减去即舍入到整数
_MAGIC64 = 6755399441055744.0  # 1.5·2^52


def _exp32(x):
    xc = min(max(x, np.float32(-104.0)), np.float32(88.72284))
    if xc != xc:  # NaN：先换成 0 免得整数转换出未定义值，最后再还原
        xc = np.float32(0.0)
    n = (xc * np.float32(1.4426950408889634) + np.float32(_MAGIC32)) - np.float32(_MAGIC32)
    r = xc - n * np.float32(0.693359375)
    r = r - n * np.float32(-2.12194440e-4)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    ni = np.int32(n)
    n1 = ni >> 1
    n2 = ni - n1
    s1 = np.int32((n1 + 127) << 23).view(np.float32)
    s2 = np.int32((n2 + 127) << 23).view(np.float32)
    res = p * s1 * s2
    if x > np.float32(88.72284):
        res = np.float32(np.inf)
    if x < np.float32(-104.0):
        res = np.float32(0.0)
    if x != x:
        res = x
    return res


def _exp64(x):
    xc = min(max(x, -745.8), 709.79)
    if xc != xc:
        xc = 0.0
    n = (xc * 1.4426950408889634 + _MAGIC64) - _MAGIC64
    r = xc - n * 6.93147180369123816490e-01  # ln2 高段（fdlibm）
    r = r - n * 1.90821492927058770002e-10  # ln2 低段
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    ni = np.int64(n)
    n1 = ni >> 1
    n2 = ni - n1
    s1 = np.int64((n1 + 1023) << 52).view(np.float64)
    s2 = np.int64((n2 + 1023) << 52).view(np.float64)
    res = p * s1 * s2
    if x > 709.79:
        res = np.inf
    if x < -745.8:
        res = 0.0
    if x != x:
        res = x
    return res


def _tanh32(u):
    e = vexp(np.float32(-2.0) * abs(u))
    t = (np.float32(1.0) - e) / (np.float32(1.0) + e)
    return np.copysign(t, u)


def _tanh64(u):
    e = vexp(-2.0 * abs(u))
    t = (1.0 - e) / (1.0 + e)
    return np.copysign(t, u)


# 这四个函数单独编译，只开 fastmath 的 "contract"：允许把 a·b + c 合成一条 FMA 指令，
# 不允许重结合、也不假设没有 NaN/inf。Cody–Waite 约化与 Horner 多项式用 FMA 只会更准、更快
# （实测见 docs/performance.md）。
# 调用者内联它们之后，这些指令仍带着各自的标志，调用者其余的运算不受影响（仍然不合成 FMA）。
_KERNEL_FLAGS = dict(cache=True, fastmath={"contract"}, error_model="numpy")
_exp32_jit = njit(**_KERNEL_FLAGS)(_exp32)
_exp64_jit = njit(**_KERNEL_FLAGS)(_exp64)
_tanh32_jit = njit(**_KERNEL_FLAGS)(_tanh32)
_tanh64_jit = njit(**_KERNEL_FLAGS)(_tanh64)


@overload(vexp)  # numba 加载时才注册（见 backend.py）
def _vexp_overload(x):
    from numba.core import types

    if isinstance(x, types.Float):
        f = _exp32_jit if x.bitwidth == 32 else _exp64_jit

        def impl(x):
            return f(x)

        return impl
    return None


@overload(vtanh)
def _vtanh_overload(u):
    from numba.core import types

    if isinstance(u, types.Float):
        f = _tanh32_jit if u.bitwidth == 32 else _tanh64_jit

        def impl(u):
            return f(u)

        return impl
    return None


# ---------------------------------------------------------------------------
# 按行归约（1-D 连续数组；float64 累加；只开 reassoc，见模块说明）
# ---------------------------------------------------------------------------


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def row_sum(a):
    """sum(a)，float64 累加。"""
    s = 0.0
    for j in range(a.shape[0]):
        s += a[j]
    return s


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def row_dot(a, b):
    """sum(a*b)：乘积在输入精度下算，求和用 float64（与 NumPy 参考 ``np.sum(a*b, dtype=float64)`` 一致）。"""
    s = 0.0
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def row_sq_dev_sum(a, m):
    """sum((a - m)^2)，m 为 float64，全程 float64（两遍法方差的第二遍）。"""
    s = 0.0
    for j in range(a.shape[0]):
        d = a[j] - m
        s += d * d
    return s


@njit(cache=True, error_model="numpy")
def row_max(a):
    """max(a)，a 至少 1 个元素；不开 fastmath。

    单个累加器 ``m = max(m, a[j])`` 是一条依赖链，LLVM 不会把它向量化；手工拆成 8 个独立的累加器后
    SLP 向量化生效（实测见 docs/performance.md）。
    最大值与比较顺序无关，所以结果与单累加器完全相同（NaN 会被跳过，但后续 Σexp 会把 NaN 传下去）。
    """
    n = a.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = a[0]
    n8 = n - n % 8
    for j in range(0, n8, 8):
        m0 = max(m0, a[j])
        m1 = max(m1, a[j + 1])
        m2 = max(m2, a[j + 2])
        m3 = max(m3, a[j + 3])
        m4 = max(m4, a[j + 4])
        m5 = max(m5, a[j + 5])
        m6 = max(m6, a[j + 6])
        m7 = max(m7, a[j + 7])
    for j in range(n8, n):
        m0 = max(m0, a[j])
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
