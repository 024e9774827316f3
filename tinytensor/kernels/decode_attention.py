"""解码时（每次一个新词元）的注意力：一行查询对缓存里的全部键值，支持分组查询注意力 (GQA)。

公式
----
q (B, nh, hs)，k、v (B, nkv, S, hs)，g = nh / nkv；第 h 个查询头用第 h // g 组的键值：

    p_j = softmax_j(q_h · k_j · scale)（j < S），    out_h = Σ_j p_j · v_j

没有掩码：新词元排在缓存的最后，能看到缓存里的全部位置。nkv = nh（g = 1）就是普通的多头注意力。

为什么单独一个内核
------------------
批大小 1 的解码时，注意力只是每个头一次“向量 × 矩阵”：NumPy 写法要一次批量矩阵乘、一趟 softmax、
再一次批量矩阵乘，每一步都有调用开销，同组的 g 个查询头还各读一遍键值。这里每个 (批, kv 组) 是一个任务：
键读一遍、值读一遍，这组的 g 个查询头一起算；任务按 kv 组分给各线程。提示很长时键值缓存比权重还大，
读它的时间就是解码时间的大头。

契约
----
- ``decode_attention(q, k, v, scale, length=None) -> out (B, nh, hs)``：float32/float64；k、v 形状
  (B, nkv, T_max, hs)，只用前 ``length`` 个位置（默认全部）——直接传 KV 缓存的整块数组，不要传切片视图：
  内核按 C 连续的数组编译才能向量化（视图会先拷成连续的，慢）。nh 须是 nkv 的整数倍，1 ≤ length ≤ T_max。
- ``decode_attention_numpy``：参考实现，是 ``grouped_attention_numpy``（任意个查询、带因果偏移的分组注意力，
  批量矩阵乘 + ``softmax_fwd_numpy``）的特例；内核与它只差求和顺序的舍入（测试检查）。
- 工作量小（短缓存、小模型）时走串行内核，否则按 kv 组并行（见 backend.run_split）。
"""

from __future__ import annotations

import numpy as np

from ._checks import float_array, float_like
from .backend import njit, prange, run_split, use_numba
from .softmax import softmax_fwd_numpy

_PAR_MIN = 1 << 18  # 工作量（nh·S·hs）低于它时不启动并行内核
_OP = "decode_attention"


def cached_attention_mask(t_new: int, pos: int) -> np.ndarray | None:
    """有缓存时的因果掩码：第 i 个新词元（绝对位置 pos+i）只能看到位置 ≤ pos+i 的键。

    返回布尔数组 (t_new, pos+t_new)，True 表示可见；只有一个新词元时它能看到全部，返回 None。
    """
    if t_new == 1:
        return None
    return np.arange(pos + t_new)[None, :] <= (pos + np.arange(t_new))[:, None]


def grouped_attention_numpy(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, start: int) -> np.ndarray:
    """分组查询注意力的 NumPy 参考实现（带因果偏移）：q (B, nh, T, hs)，k、v (B, nkv, S, hs) → (B, nh, T, hs)。

    S = start + T：第 i 个查询是位置 start + i 的词元，只看位置 ≤ start + i 的键（``cached_attention_mask``）。
    同组的 g = nh / nkv 个查询头排成一列 (B, nkv, g·T, hs)，与这组唯一的键值各做一次批量矩阵乘，不必把键值复制 g 份。
    解码（T = 1、start = S − 1）是它的特例，见 ``decode_attention_numpy``；Qwen3 的预填充直接用它。
    """
    b, nh, t, hs = q.shape
    nkv, s = k.shape[1], k.shape[2]
    g = nh // nkv
    if s != start + t:
        raise ValueError(f"grouped_attention_numpy：键值应有 start + T = {start + t} 个位置，收到 {s}")
    scores = (q.reshape(b, nkv, g * t, hs) @ k.transpose(0, 1, 3, 2)) * q.dtype.type(scale)  # (B, nkv, g·T, S)
    allowed = cached_attention_mask(t, start)  # (T, S)；只有一个查询时为 None（全部可见）
    if allowed is not None:
        scores = np.where(np.tile(allowed, (g, 1)), scores, -np.inf)
    return (softmax_fwd_numpy(scores) @ v).reshape(b, nh, t, hs)


def decode_attention_numpy(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """``decode_attention`` 的参考实现：一行查询 (B, nh, hs) 看全部 S 个键，即上面 T = 1、start = S − 1 的情形。"""
    return grouped_attention_numpy(q[:, :, None], k, v, scale, k.shape[2] - 1)[:, :, 0]


@njit(cache=True, fastmath=True, nogil=True)
def _decode_part(out, q, k, v, s_len, scale, lo, hi):
    """第 [lo, hi) 个任务（任务 t = 批 t // nkv 的第 t % nkv 组），只用键值的前 s_len 个位置。"""
    nh, hs = q.shape[1], q.shape[2]
    nkv = k.shape[1]
    g = nh // nkv
    p = np.empty((g, s_len), q.dtype)
    acc = np.empty((g, hs), q.dtype)
    for t in range(lo, hi):
        b, c = t // nkv, t % nkv
        # 分数：每个键读一次，给这组的 g 个查询头各算一个点积
        for j in range(s_len):
            kr = k[b, c, j]
            for r in range(g):
                qr = q[b, c * g + r]
                d = q.dtype.type(0.0)
                for i in range(hs):
                    d += qr[i] * kr[i]
                p[r, j] = d * scale
        # softmax（先减最大值），1/Σ 留到最后乘
        for r in range(g):
            m = p[r, 0]
            for j in range(1, s_len):
                m = max(m, p[r, j])
            tot = q.dtype.type(0.0)
            for j in range(s_len):
                e = np.exp(p[r, j] - m)
                p[r, j] = e
                tot += e
            inv = q.dtype.type(1.0) / tot
            for j in range(s_len):
                p[r, j] *= inv
        # 加权求和：每个值读一次
        acc[:, :] = 0
        for j in range(s_len):
            vr = v[b, c, j]
            for r in range(g):
                w = p[r, j]
                for i in range(hs):
                    acc[r, i] += w * vr[i]
        for r in range(g):
            out[b, c * g + r, :] = acc[r]


@njit(parallel=True, cache=True)
def _decode_par(out, q, k, v, s_len, scale, nt):
    n = q.shape[0] * k.shape[1]
    parts = max(1, min(nt, n))
    for c in prange(parts):
        _decode_part(out, q, k, v, s_len, scale, c * n // parts, (c + 1) * n // parts)


def decode_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, length: int | None = None
) -> np.ndarray:
    """一行查询对缓存前 length 个位置的注意力（契约见模块说明），返回 (B, nh, hs)。"""
    q = np.ascontiguousarray(float_array(q, "q", _OP))
    k = float_like(k, "k", q.dtype, _OP)
    v = float_like(v, "v", q.dtype, _OP)
    if q.ndim != 3 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(
            f"{_OP}：q 应为 (B, nh, hs)，k、v 应为同形状的 (B, nkv, T, hs)，收到 {q.shape}、{k.shape}、{v.shape}"
        )
    b, nh, hs = q.shape
    length = k.shape[2] if length is None else int(length)
    if k.shape[0] != b or k.shape[3] != hs or nh % k.shape[1]:
        raise ValueError(f"{_OP}：形状不匹配：q {q.shape}、k {k.shape}（需批与 hs 相同、nh 是 nkv 的整数倍）")
    if not 1 <= length <= k.shape[2]:
        raise ValueError(f"{_OP}：length={length} 应在 [1, {k.shape[2]}] 内")
    if not use_numba():
        return decode_attention_numpy(q, k[:, :, :length], v[:, :, :length], scale)
    if not (k.flags.c_contiguous and v.flags.c_contiguous):
        k, v = np.ascontiguousarray(k[:, :, :length]), np.ascontiguousarray(v[:, :, :length])
    out = np.empty_like(q)
    run_split(_decode_part, _decode_par, b * k.shape[1], out, q, k, v, length, q.dtype.type(scale),
              work=nh * length * hs, min_work=_PAR_MIN)  # fmt: skip
    return out
