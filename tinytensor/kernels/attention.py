"""缩放点积注意力（可选因果掩码）：BLAS 矩阵乘 + numba 融合的“缩放·掩码·softmax”，与 NumPy 参考实现。

公式（q: (..., T, hs)，k: (..., Tk, hs)，v: (..., Tk, hv)；scale 通常为 1/√hs）
---------------------------------------------------------------------------
    S = scale · q kᵀ                      (..., T, Tk)
    因果时 S[i, j] = −inf（j > i，与 torch 的 is_causal 相同：掩码左上对齐）
    P = softmax(S)（逐行）,   out = P v

导数（g = ∂L/∂out）
-----------------
    dv = Pᵀ g,   dP = g vᵀ
    dS = P ⊙ (dP − Σ_j dP⊙P)             （softmax 反向；被掩码处 P = 0，所以 dS = 0）
    dq = scale · dS k,   dk = scale · dSᵀ q

契约
----
- ``attention_fwd(q, k, v, scale, causal=True, out=None, dmask=None) -> (out, probs)``：前导维（通常 (B, nh)）
  相同，dtype 相同（float32/float64），可不连续；probs 为 dropout 之前的 P（(..., T, Tk)，C 连续），留给反向。
  给出 out 时结果写进它（可以是不连续的视图，模型里直接写成 (B, T, nh·hs) 布局，省一次拷贝）。
- ``attention_bwd(g, q, k, v, probs, scale, causal=True, out=None, dmask=None) -> (dq, dk, dv)``；
  out=(dq, dk, dv) 同上（模型里直接写进拼接的 dqkv）。
- dmask（可选，与 P 同形状）是 dropout 掩码（0 或 1/(1−p)）：out = (P ⊙ M) v，dL/dP = (g vᵀ) ⊙ M，dv = (P ⊙ M)ᵀ g。
- 因果且 T ≤ Tk 时每行至少有一个未被掩码的位置，不会出现整行 −inf。
- 实现：矩阵乘（前向两次、反向四次）交给 ``np.matmul``（BLAS）；其余逐元素/逐行的工作在 numba 中融合：
  前向一遍完成“乘 scale → 掩码 → 减最大值 → exp → 归一化”，只处理每行未被掩码的前缀；
  反向一遍完成“softmax 反向 → 乘 scale”。numba 里手写矩阵乘远慢于 BLAS，所以不做完全融合的
  flash-attention，但借用它的两个想法：
  * **因果分块**：行块 [i0, i1) 的查询只看得到前 i1 个键，分数与 dP、dq 只算下三角的块；dv、dk 按列块算，
    列块 [j0, j1) 只被第 j0 行以后的查询看到。块大小 ``_BLOCK``，T = 256、块 64 时只算约 62.5% 的乘加。
  * **按头切给线程**：前导第 0 维（训练时即批维）切成几段，每段一个线程、段内 BLAS 单线程（threads.py），
    而不是让多线程 BLAS 去切每一个小矩阵。每个头的运算与不切分时完全相同，结果逐位相同。
  NumPy 参考实现用整块的矩阵乘，其余用 NumPy 的多遍运算。
- 数值：softmax 先减行最大值，Σexp 与 Σ dP⊙P 在 float64 中累加后舍入到输入精度。
- 分块与切分带来的速度差别见 docs/performance.md。
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import backend, threads
from ._checks import float_array, float_like
from ._vmath import row_dot, row_max, row_sum, vexp
from .backend import njit, use_numba
from .softmax import softmax_bwd_numpy, softmax_fwd_numpy

# 分数矩阵的元素个数低于阈值时在调用者线程里一次做完，否则按前导第 0 维切给多个线程（threads.py）；
# 每个头的运算相同，两条路径逐位相同（tests/test_kernels.py 检查）。
_PAR_MIN_FWD = 1 << 16
_PAR_MIN_BWD = 1 << 16
# 因果分块的行/列块大小：块越小，跳过的上三角越多（T 个块时只算约 (1 + 1/块数)/2），但每次 BLAS 调用越小。
_BLOCK = 64

_OP_FWD = "attention 前向"
_OP_BWD = "attention 反向"


def _t(a: np.ndarray) -> np.ndarray:
    return a.swapaxes(-1, -2)


# ---------------------------------------------------------------------------
# NumPy 参考实现
# ---------------------------------------------------------------------------


def attention_fwd_numpy(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool = True, dmask: np.ndarray | None = None,
    attn_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """注意力前向的 NumPy 参考实现，返回 (out, probs)；probs 是 dropout 之前的 P。

    这是注意力唯一的 NumPy 写法：``TINYTENSOR_BACKEND=numpy`` 时、带额外掩码或前导维需要广播时，算子都用它。
    前导维可以广播；attn_mask（可选，可广播到 (..., T, Tk)）为布尔时 False 处屏蔽，为浮点时加到分数上。
    被完全屏蔽的行 P 全为 0（softmax 参考实现的约定），不产生 NaN。
    """
    dt = q.dtype.type
    s = np.matmul(q, _t(k))
    s *= dt(scale)
    T, Tk = s.shape[-2:]
    if causal:  # 与 torch 相同：掩码左上角对齐
        s[..., np.triu(np.ones((T, Tk), dtype=bool), k=1)] = -np.inf
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            s = np.where(attn_mask, s, np.asarray(-np.inf, dtype=s.dtype))
        else:
            s = s + attn_mask
    p = softmax_fwd_numpy(s)
    return np.matmul(p if dmask is None else p * dmask, v), p


def attention_bwd_numpy(
    g: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, probs: np.ndarray, scale: float,
    dmask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """注意力反向的 NumPy 参考实现，返回 (dq, dk, dv)；前导维广播时梯度是广播后的形状（由调用方求和）。"""
    dt = q.dtype.type
    dv = np.matmul(_t(probs if dmask is None else probs * dmask), g)
    dp = np.matmul(g, _t(v))
    if dmask is not None:
        dp *= dmask
    ds = softmax_bwd_numpy(dp, probs)  # dS = P ⊙ (dP − Σ dP⊙P)
    ds *= dt(scale)
    return np.matmul(ds, k), np.matmul(_t(ds), q), dv


# ---------------------------------------------------------------------------
# numba 内核：原地处理 (R, Tk) 的分数矩阵，R = 前导维之积 · T；串行处理第 [lo, hi) 行、每行只写自己。
# nogil：几个 Python 线程各自对不同的头调用它们（见 threads.py），必须释放 GIL 才能真正并行。
# ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def _smax_fwd_rows(s, scale, T, causal, lo, hi):
    Tk = s.shape[1]
    zero = s.dtype.type(0.0)
    for r in range(lo, hi):
        row = s[r]
        n = min(r % T + 1, Tk) if causal else Tk  # 未被掩码的前缀长度
        head = row[:n]
        for j in range(n):
            head[j] = head[j] * scale
        m = row_max(head)
        for j in range(n):
            head[j] = vexp(head[j] - m)
        inv = s.dtype.type(1.0) / s.dtype.type(row_sum(head))
        for j in range(n):
            head[j] = head[j] * inv
        for j in range(n, Tk):
            row[j] = zero


@njit(cache=True, error_model="numpy", nogil=True)
def _smax_bwd_rows(dp, p, scale, T, causal, lo, hi):
    Tk = dp.shape[1]
    zero = dp.dtype.type(0.0)
    for r in range(lo, hi):
        drow = dp[r]
        prow = p[r]
        n = min(r % T + 1, Tk) if causal else Tk
        d = dp.dtype.type(row_dot(drow[:n], prow[:n]))
        for j in range(n):
            drow[j] = prow[j] * (drow[j] - d) * scale
        for j in range(n, Tk):
            drow[j] = zero


# ---------------------------------------------------------------------------
# 分块与切分：每段处理前导第 0 维的 [lo, hi)（训练时即批维），段内按因果分块调用 BLAS
# ---------------------------------------------------------------------------


def _row_blocks(T: int, Tk: int, causal: bool) -> list[tuple[int, int, int]]:
    """(i0, i1, c)：第 [i0, i1) 行的查询只需要前 c 个键（因果时 c = min(i1, Tk)，否则 c = Tk）。"""
    if not causal:
        return [(0, T, Tk)]
    return [(i0, min(T, i0 + _BLOCK), min(min(T, i0 + _BLOCK), Tk)) for i0 in range(0, T, _BLOCK)]


def _col_blocks(T: int, Tk: int, causal: bool) -> list[tuple[int, int, int]]:
    """(j0, j1, r0)：第 [j0, j1) 列的键只被第 r0 行及以后的查询看到（因果时 r0 = j0，否则 0）。"""
    if not causal:
        return [(0, Tk, 0)]
    return [(j0, min(Tk, j0 + _BLOCK), j0) for j0 in range(0, Tk, _BLOCK)]


def _fwd_part(q, k, v, s, out, dm, scale, causal, lo, hi):
    """第 [lo, hi) 段的前向：分数（只算因果下三角的块）→ 缩放·掩码·softmax →（dropout）→ 加权求和。"""
    T, Tk = s.shape[-2:]
    q, k, v, sp, op = q[lo:hi], k[lo:hi], v[lo:hi], s[lo:hi], out[lo:hi]
    dm = None if dm is None else dm[lo:hi]
    blocks = _row_blocks(T, Tk, causal)
    for i0, i1, c in blocks:
        np.matmul(q[..., i0:i1, :], _t(k[..., :c, :]), out=sp[..., i0:i1, :c])
    s2 = sp.reshape(-1, Tk)  # s 是 C 连续的，沿第 0 维切片后仍可无拷贝地摊平
    _smax_fwd_rows(s2, scale, T, causal, 0, s2.shape[0])  # 被跳过的块在这里写成 0
    for i0, i1, c in blocks:
        pb = sp[..., i0:i1, :c] if dm is None else sp[..., i0:i1, :c] * dm[..., i0:i1, :c]
        np.matmul(pb, v[..., :c, :], out=op[..., i0:i1, :])


def _bwd_part(g, q, k, v, p, ds, dq, dk, dv, dm, scale, causal, lo, hi):
    """第 [lo, hi) 段的反向：dP 与 dq 按行块，dv 与 dk 按列块，都跳过因果上三角。"""
    T, Tk = p.shape[-2:]
    g, q, k, v, p, ds = g[lo:hi], q[lo:hi], k[lo:hi], v[lo:hi], p[lo:hi], ds[lo:hi]
    dq, dk, dv = dq[lo:hi], dk[lo:hi], dv[lo:hi]
    dm = None if dm is None else dm[lo:hi]
    rows = _row_blocks(T, Tk, causal)
    for i0, i1, c in rows:
        np.matmul(g[..., i0:i1, :], _t(v[..., :c, :]), out=ds[..., i0:i1, :c])
        if dm is not None:  # dL/dP = (g vᵀ) ⊙ M
            ds[..., i0:i1, :c] *= dm[..., i0:i1, :c]
    ds2 = ds.reshape(-1, Tk)
    _smax_bwd_rows(ds2, p.reshape(-1, Tk), scale, T, causal, 0, ds2.shape[0])  # 原地变成 dS·scale
    for i0, i1, c in rows:
        np.matmul(ds[..., i0:i1, :c], k[..., :c, :], out=dq[..., i0:i1, :])
    for j0, j1, r0 in _col_blocks(T, Tk, causal):
        if r0 >= T:  # 没有查询看得到这些键
            dv[..., j0:j1, :] = 0
            dk[..., j0:j1, :] = 0
            continue
        pb = p[..., r0:, j0:j1] if dm is None else p[..., r0:, j0:j1] * dm[..., r0:, j0:j1]
        np.matmul(_t(pb), g[..., r0:, :], out=dv[..., j0:j1, :])
        np.matmul(_t(ds[..., r0:, j0:j1]), q[..., r0:, :], out=dk[..., j0:j1, :])


def _split_view(arrs: tuple[np.ndarray | None, ...]) -> tuple[np.ndarray | None, ...]:
    """让第 0 维成为可切分的维：二维输入补一维；前导维为 1（如批大小 1 的生成）时去掉它，改按头切。"""
    a0 = arrs[0]
    if a0.ndim == 2:
        return tuple(None if a is None else a[None] for a in arrs)
    while a0.ndim > 3 and a0.shape[0] == 1:
        arrs = tuple(None if a is None else a[0] for a in arrs)
        a0 = arrs[0]
    return arrs


def _run(part: Callable[[int, int], None], n: int, work: int, min_work: int) -> None:
    """工作量小（如生成时的单个新词元）时在本线程一次做完，否则按第 0 维切给多个线程（threads.run_parts）。"""
    threads.run_parts(part, n, 1 if work < min_work else backend.get_num_threads())  # 经模块属性读取，测试可替换


# ---------------------------------------------------------------------------
# 公开函数
# ---------------------------------------------------------------------------


def _check_qkv(q: object, k: object, v: object, op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = float_array(q, "q", op)
    k = float_like(k, "k", q.dtype, op)
    v = float_like(v, "v", q.dtype, op)
    qs, ks, vs = q.shape, k.shape, v.shape
    if len(qs) < 2 or len(ks) != len(qs) or len(vs) != len(qs):
        raise ValueError(f"{op}：q、k、v 应为同维数的 (..., T, hs) 数组，收到 {qs}、{ks}、{vs}")
    if qs[:-2] != ks[:-2] or qs[:-2] != vs[:-2]:
        raise ValueError(f"{op}：q、k、v 的前导维不同：{qs}、{ks}、{vs}")
    if qs[-1] != ks[-1] or ks[-2] != vs[-2]:
        raise ValueError(f"{op}：形状不匹配：q {qs}、k {ks}、v {vs}（需 q/k 的 hs 相同、k/v 的 Tk 相同）")
    if qs[-2] == 0 or ks[-2] == 0:
        raise ValueError(f"{op}：序列长度不能为 0：q {qs}、k {ks}")
    return q, k, v


def _check_out(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype, name: str, op: str) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        got = (getattr(out, "shape", None), getattr(out, "dtype", type(out).__name__))
        raise ValueError(f"{op}：{name} 应为形状 {shape}、dtype {dtype} 的数组，收到 {got}")
    return out


def _check_dmask(dmask: object, shape: tuple[int, ...], dtype: np.dtype, op: str) -> np.ndarray | None:
    if dmask is None:
        return None
    m = float_like(dmask, "dmask", dtype, op)
    if m.shape != shape:
        raise ValueError(f"{op}：dropout 掩码 dmask 的形状应为 {shape}（与 P 相同），收到 {m.shape}")
    return m


def attention_fwd(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool = True, out: np.ndarray | None = None,
    dmask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """缩放点积注意力前向，返回 (out, probs)。契约见模块说明；给出 out 时结果写进它（可以是不连续的视图）。"""
    q, k, v = _check_qkv(q, k, v, _OP_FWD)
    Tk, hv = k.shape[-2], v.shape[-1]
    o = _check_out(out, (*q.shape[:-1], hv), q.dtype, "out", _OP_FWD)
    dmask = _check_dmask(dmask, (*q.shape[:-1], Tk), q.dtype, _OP_FWD)
    if not use_numba():
        res, probs = attention_fwd_numpy(q, k, v, scale, causal, dmask)
        o[...] = res
        return o, probs
    s = np.empty((*q.shape[:-1], Tk), dtype=q.dtype)  # 原地变成 P
    arrs = _split_view((q, k, v, s, o, dmask))
    sc = q.dtype.type(scale)
    _run(lambda lo, hi: _fwd_part(*arrs, sc, bool(causal), lo, hi), arrs[0].shape[0], s.size, _PAR_MIN_FWD)
    return o, s


def attention_bwd(
    g: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, probs: np.ndarray, scale: float,
    causal: bool = True, out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    dmask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """缩放点积注意力反向，返回 (dq, dk, dv)。

    causal 用来跳过被掩码的块（P 在那里本来就是 0）；给出 out=(dq, dk, dv) 时结果写进这三个数组。
    """
    q, k, v = _check_qkv(q, k, v, _OP_BWD)
    g = float_like(g, "grad", q.dtype, _OP_BWD)
    probs = float_like(probs, "probs", q.dtype, _OP_BWD)
    Tk = k.shape[-2]
    if g.shape != (*q.shape[:-1], v.shape[-1]) or probs.shape != (*q.shape[:-1], Tk):
        raise ValueError(f"{_OP_BWD}：grad {g.shape} 或 probs {probs.shape} 与 q {q.shape}、v {v.shape} 不匹配")
    outs = out if out is not None else (None, None, None)
    if len(outs) != 3:
        raise ValueError(f"{_OP_BWD}：out 应为 (dq, dk, dv) 三个数组，收到 {len(outs)} 个")
    dq = _check_out(outs[0], q.shape, q.dtype, "out[0] (dq)", _OP_BWD)
    dk = _check_out(outs[1], k.shape, q.dtype, "out[1] (dk)", _OP_BWD)
    dv = _check_out(outs[2], v.shape, q.dtype, "out[2] (dv)", _OP_BWD)
    dmask = _check_dmask(dmask, probs.shape, q.dtype, _OP_BWD)
    if not use_numba():
        for o, res in zip((dq, dk, dv), attention_bwd_numpy(g, q, k, v, probs, scale, dmask)):
            o[...] = res
        return dq, dk, dv
    p = np.ascontiguousarray(probs)
    ds = np.empty_like(p)
    arrs = _split_view((g, q, k, v, p, ds, dq, dk, dv, dmask))
    sc = q.dtype.type(scale)
    _run(lambda lo, hi: _bwd_part(*arrs, sc, bool(causal), lo, hi), arrs[0].shape[0], p.size, _PAR_MIN_BWD)
    return dq, dk, dv
