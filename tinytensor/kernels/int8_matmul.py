"""量化权重的矩阵乘：int8 权重（按组缩放）与 bf16 权重，numba 内核直接读紧凑的权重。

生成一个新词元时，每个线性层只是“一行向量 × 权重矩阵”：每个权重只用一次，计算量很小，
时间几乎全花在把权重从内存搬进 CPU 上。所以权重存得越小越快：float32 每个 4 字节，bf16 2 字节，int8 1 字节。
这里的内核直接读 int8 / bf16 的权重，内存里从来不出现 float32 的权重副本。

格式
----
- int8，按组缩放 (per-group)：权重 W (N, K) 的每一行按 K 方向每 ``group`` 个元素分一组，
  每组一个 float32 缩放 s = max|w| / 127，q = round(w / s) ∈ [-127, 127]；W ≈ q · s。
  ``group = K`` 就是按通道 (per-channel) 缩放。存储：q int8 (N, K)，scale float32 (N, K/group)。
- bf16：float32 的高 16 位，以 uint16 存放；转回 float32 是精确的（左移 16 位）。

int8 的矩阵乘同时量化激活 (W8A8)
--------------------------------
把 int8 转成 float32 再乘加，每个权重要一次整数扩展、一次整数→浮点转换和一次乘加：CPU 花在转换上的时间
比读内存还多，int8 只比 float32 快两成。所以输入 x 的每一行也按同样的分组量化成 int8（每组一个缩放
s_x = max|x| / 127，与权重的做法相同，见 ``quantize_int8``），点积在整数里做：

    y[m, n] = Σ_g  s_w[n, g] · s_x[m, g] · Σ_{i∈g} q[n, i] · xq[m, i]

组内的整数和是精确的（|q·xq| ≤ 127² 放得进 int16，128 个相加放得进 int32），LLVM 把它编译成
“int16 乘、相邻两个相加成 int32”的 SIMD 指令（x86 的 pmaddwd），每条指令做 16 个乘加。
代价是激活也有了量化误差（每个元素至多差半个 s_x），与 llama.cpp 的 Q8_0 做法相同；
它对困惑度与 top-1 的影响在第 8 章用训练好的 GPT 量出来。

契约
----
- ``int8_matmul(x, q, scale) -> y``：x (M, K) float32，y (M, N) float32，
  y = fq(x) @ (q·s).T，其中 fq(x) 是 x 按组量化再反量化（``fake_quantize_int8``）。
- ``bf16_matmul(x, w) -> y``：x (M, K) float32，w (N, K) uint16，y = x @ float32(w).T（激活不量化）。
- ``f32_matvec(x, w) -> y``：同样按输出行切分的 float32 版本（对照用，也是 fp32 权重在生成时的路径：
  与多线程 BLAS 的矩阵-向量乘同样受内存带宽限制，但机器被其他进程占用时不会因 BLAS 线程互相等待而变慢）。
- M ≤ ``SMALL_M``（生成时 M = 1）走 numba 内核：按输出行 N 切给各线程，每行的权重只读一次；
  M 更大（预填充 prefill）时计算量成了主要矛盾，改为把权重一块块（``BLOCK_ROWS`` 行）转成 float32，
  交给 BLAS 的矩阵乘——临时内存只有一块；int8 时输入先做 fq(x)，结果与逐行内核的公式相同。
- NumPy 参考实现 ``*_numpy`` 先整体反量化再矩阵乘；内核与它只差 float32 求和顺序带来的舍入（测试检查）。
- 只支持 float32 输入（量化本来就是为了省内存与带宽，float64 没有意义）。
"""

from __future__ import annotations

import numpy as np

from .backend import njit, prange, run_split, use_numba

SMALL_M = 8  # M 不超过它时走逐行内核
BLOCK_ROWS = 2048  # 预填充时每次反量化的权重行数
_PAR_MIN = 1 << 16  # 权重元素少于它时不启动并行内核


# ---------------------------------------------------------------------------
# 量化 / 反量化（NumPy）
# ---------------------------------------------------------------------------


def _check_group(k: int, group: int) -> None:
    if group < 1 or k % group:
        raise ValueError(f"分组大小 group={group} 必须整除输入维度 K={k}")


def quantize_int8(w: np.ndarray, group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """对称 int8 量化：返回 (q int8 (N, K), scale float32 (N, K/group))。group=None 表示按通道（group = K）。"""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"只能量化二维权重 (N, K)，收到形状 {w.shape}")
    n, k = w.shape
    group = k if group is None else int(group)
    _check_group(k, group)
    wg = w.reshape(n, k // group, group)
    amax = np.abs(wg).max(axis=-1)
    scale = (amax / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(wg / safe[..., None]), -127, 127).astype(np.int8)
    return q.reshape(n, k), scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """把第 [lo, hi) 行反量化成 float32。"""
    hi = q.shape[0] if hi is None else hi
    n_groups = scale.shape[1]
    qs = q[lo:hi].reshape(hi - lo, n_groups, -1).astype(np.float32)
    qs *= scale[lo:hi, :, None]
    return qs.reshape(hi - lo, -1)


def fake_quantize_int8(x: np.ndarray, group: int) -> np.ndarray:
    """x (M, K) 按组量化成 int8 再反量化（int8 矩阵乘对输入做的事，见模块说明）。"""
    return dequantize_int8(*quantize_int8(x, group))


def bf16_rows_to_float32(w: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """把 uint16 形式的 bf16 矩阵第 [lo, hi) 行转成 float32。"""
    hi = w.shape[0] if hi is None else hi
    u = w[lo:hi].astype(np.uint32)
    u <<= 16
    return u.view(np.float32)


def int8_matmul_numpy(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """参考实现：输入按组量化再反量化，权重整体反量化，再做浮点矩阵乘。"""
    group = q.shape[1] // scale.shape[1]
    return fake_quantize_int8(np.asarray(x, np.float32), group) @ dequantize_int8(q, scale).T


def bf16_matmul_numpy(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """参考实现：整体转成 float32 后矩阵乘。"""
    return np.asarray(x, np.float32) @ bf16_rows_to_float32(w).T


# ---------------------------------------------------------------------------
# numba 内核：每个输出行读一次权重，对 M 个输入行各做一次点积
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _quantize_rows(x, group):
    """quantize_int8 的 numba 版（生成时每次矩阵乘都要量化一行输入，NumPy 的十来次小调用比量化本身还慢）。
    不开 fastmath：除法须与 NumPy 逐位相同，四舍五入才落在同一个整数上。"""
    m_rows, k = x.shape
    n_groups = k // group
    xq = np.empty((m_rows, k), np.int8)
    xs = np.empty((m_rows, n_groups), np.float32)
    for m in range(m_rows):
        for g in range(n_groups):
            b = g * group
            amax = np.float32(0.0)
            for i in range(group):
                a = abs(x[m, b + i])
                if a > amax:
                    amax = a
            s = np.float32(amax / np.float32(127.0))
            xs[m, g] = s
            d = s if s > 0 else np.float32(1.0)
            for i in range(group):
                v = np.rint(x[m, b + i] / d)
                xq[m, b + i] = np.int8(min(max(v, np.float32(-127.0)), np.float32(127.0)))
    return xq, xs


@njit(cache=True, fastmath=True, nogil=True)
def _int8_rows(out, xq, xs, q, scale, lo, hi):
    """串行计算输出的第 [lo, hi) 列（即权重的第 [lo, hi) 行）：组内整数点积，组间乘上两边的缩放。"""
    m_rows, k = xq.shape
    n_groups = scale.shape[1]
    group = k // n_groups
    for n in range(lo, hi):
        qrow = q[n]
        for m in range(m_rows):
            xrow = xq[m]
            total = np.float32(0.0)
            for g in range(n_groups):
                b = g * group
                acc = np.int32(0)
                for i in range(group):
                    # 每一步都截回 int32：numba 默认把整数运算提升到 int64，那样 LLVM 就用不上 pmaddwd
                    acc = np.int32(acc + np.int32(np.int32(xrow[b + i]) * np.int32(qrow[b + i])))
                total += np.float32(acc) * (scale[n, g] * xs[m, g])
            out[m, n] = total


@njit(parallel=True, cache=True)
def _int8_rows_par(out, xq, xs, q, scale, nt):
    n = q.shape[0]
    parts = max(1, min(nt, n))
    for c in prange(parts):
        _int8_rows(out, xq, xs, q, scale, c * n // parts, (c + 1) * n // parts)


@njit(cache=True, fastmath=True, nogil=True)
def _bf16_rows(out, x, w, lo, hi):
    """串行计算输出的第 [lo, hi) 列。bf16 → float32：放进 uint32 的高 16 位，再按 float32 解释。"""
    m_rows, k = x.shape
    tmp = np.empty(k, dtype=np.uint32)
    f = tmp.view(np.float32)
    for n in range(lo, hi):
        wrow = w[n]
        for i in range(k):
            tmp[i] = np.uint32(wrow[i]) << np.uint32(16)
        for m in range(m_rows):
            xrow = x[m]
            acc = np.float32(0.0)
            for i in range(k):
                acc += xrow[i] * f[i]
            out[m, n] = acc


@njit(parallel=True, cache=True)
def _bf16_rows_par(out, x, w, nt):
    n = w.shape[0]
    parts = max(1, min(nt, n))
    for c in prange(parts):
        _bf16_rows(out, x, w, c * n // parts, (c + 1) * n // parts)


@njit(cache=True, fastmath=True, nogil=True)
def _f32_rows(out, x, w, lo, hi):
    """串行计算输出的第 [lo, hi) 列（float32 权重）。"""
    m_rows, k = x.shape
    for n in range(lo, hi):
        wrow = w[n]
        for m in range(m_rows):
            xrow = x[m]
            acc = np.float32(0.0)
            for i in range(k):
                acc += xrow[i] * wrow[i]
            out[m, n] = acc


@njit(parallel=True, cache=True)
def _f32_rows_par(out, x, w, nt):
    n = w.shape[0]
    parts = max(1, min(nt, n))
    for c in prange(parts):
        _f32_rows(out, x, w, c * n // parts, (c + 1) * n // parts)


# ---------------------------------------------------------------------------
# 公开函数
# ---------------------------------------------------------------------------


def _as_x(x: np.ndarray, k: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(f"输入应为 (M, {k}) 的二维数组，收到形状 {x.shape}")
    return x


def int8_matmul(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """y = x @ (q·scale).T，x (M, K) float32 → y (M, N) float32。"""
    n, k = q.shape
    if q.dtype != np.int8 or scale.dtype != np.float32 or scale.ndim != 2 or scale.shape[0] != n:
        raise ValueError(f"int8 权重应为 int8 (N, K) 与 float32 (N, K/group)，收到 {q.dtype}{q.shape}、"
                         f"{scale.dtype}{scale.shape}")
    _check_group(k, k // scale.shape[1] if scale.shape[1] else 0)
    x = _as_x(x, k)
    m = x.shape[0]
    if not use_numba():
        return int8_matmul_numpy(x, q, scale)
    group = k // scale.shape[1]
    if m > SMALL_M:
        xf = fake_quantize_int8(x, group)
        out = np.empty((m, n), np.float32)
        for lo in range(0, n, BLOCK_ROWS):
            hi = min(n, lo + BLOCK_ROWS)
            np.matmul(xf, dequantize_int8(q, scale, lo, hi).T, out=out[:, lo:hi])
        return out
    xq, xs = _quantize_rows(x, group)
    out = np.empty((m, n), np.float32)
    run_split(_int8_rows, _int8_rows_par, n, out, xq, xs, q, scale, work=n * k, min_work=_PAR_MIN)
    return out


def bf16_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y = x @ float32(w).T，w 是 uint16 形式的 bf16 (N, K)。"""
    if w.dtype != np.uint16 or w.ndim != 2:
        raise ValueError(f"bf16 权重应以 uint16 (N, K) 存放，收到 {w.dtype}{w.shape}")
    n, k = w.shape
    x = _as_x(x, k)
    m = x.shape[0]
    if not use_numba():
        return bf16_matmul_numpy(x, w)
    out = np.empty((m, n), np.float32)
    if m > SMALL_M:
        for lo in range(0, n, BLOCK_ROWS):
            hi = min(n, lo + BLOCK_ROWS)
            np.matmul(x, bf16_rows_to_float32(w, lo, hi).T, out=out[:, lo:hi])
        return out
    run_split(_bf16_rows, _bf16_rows_par, n, out, x, w, work=n * k, min_work=_PAR_MIN)
    return out


def f32_matvec(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y = x @ w.T，w (N, K) float32、C 连续；M 大于 SMALL_M 或 NumPy 后端时直接用 BLAS。"""
    if w.dtype != np.float32 or w.ndim != 2 or not w.flags.c_contiguous:
        raise ValueError(f"权重应为 C 连续的 float32 (N, K)，收到 {w.dtype}{w.shape}")
    n, k = w.shape
    x = _as_x(x, k)
    m = x.shape[0]
    if not use_numba() or m > SMALL_M:
        return x @ w.T
    out = np.empty((m, n), np.float32)
    run_split(_f32_rows, _f32_rows_par, n, out, x, w, work=n * k, min_work=_PAR_MIN)
    return out
