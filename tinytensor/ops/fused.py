"""融合算子：为了速度把多步计算合成一个节点，前向与反向都调用 kernels 里的内核。

每个融合算子在 tinytensor/composed.py 里都有一个由基本算子拼出来的“孪生”实现，
测试保证两者前向、反向一致。融合的好处：少建很多计算图节点、少存很多中间数组。
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..autograd import Function
from ..kernels import threads
from ..kernels.threads import matmul as _mm2


class LayerNorm(Function):
    """y = (x - μ) / √(σ² + ε) · w + b，沿最后一维归一化，σ² 为有偏方差。

    记 x̂ = (x - μ)·rstd，ĝ = g·w，则
    dL/dx = rstd · (ĝ - mean(ĝ) - x̂ · mean(ĝ · x̂))，dL/dw = Σ g·x̂，dL/db = Σ g。
    """

    @staticmethod
    def forward(ctx, x, w=None, b=None, *, eps=1e-5):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        y, mean, rstd = kernels.layer_norm_fwd(x2, w, b, eps)
        ctx.save_for_backward(x2, w, mean, rstd)
        ctx.shape = x.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, g):
        x2, w, mean, rstd = ctx.saved_tensors
        g2 = g.reshape(x2.shape)
        dx, dw, db = kernels.layer_norm_bwd(g2, x2, w, mean, rstd)
        dx = dx.reshape(ctx.shape)
        n = len(ctx.needs_input_grad)
        return (dx, dw, db)[:n]


class CrossEntropy(Function):
    """交叉熵：L_i = log Σ_j e^(z_ij) - z_{i,t_i}；dL_i/dz_i = softmax(z_i) - onehot(t_i)。

    logits 形状 (N, V)，targets 形状 (N,)（关键字参数）。target == ignore_index 的行
    不计损失也没有梯度；reduction="mean" 时除以未被忽略的行数。
    """

    @staticmethod
    def forward(ctx, logits, *, targets, ignore_index=-100, reduction="mean"):
        loss_rows, lse = kernels.cross_entropy_fwd(logits, targets, ignore_index)
        valid = targets != ignore_index
        # 被忽略的行换成类别 0 再交给反向内核（它们的 row_scale 为 0）：ignore_index 可以在 [0, V) 之外
        safe = np.where(valid, targets, 0) if not np.all(valid) else targets
        ctx.save_for_backward(logits, safe, lse, valid)
        ctx.reduction, ctx.ignore_index = reduction, ignore_index
        if reduction == "none":
            return loss_rows
        total = loss_rows.sum(dtype=logits.dtype)
        if reduction == "sum":
            return np.asarray(total)
        n = int(valid.sum())
        ctx.n = n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(total / np.asarray(n, dtype=logits.dtype))

    @staticmethod
    def backward(ctx, g):
        logits, targets, lse, valid = ctx.saved_tensors
        if ctx.reduction == "none":
            row_scale = g.astype(logits.dtype, copy=False)
        elif ctx.reduction == "sum":
            row_scale = np.full(len(targets), g, dtype=logits.dtype)
        else:
            row_scale = np.full(len(targets), g / max(ctx.n, 1), dtype=logits.dtype)
        row_scale = np.where(valid, row_scale, np.zeros((), dtype=logits.dtype))
        return kernels.cross_entropy_bwd(logits, targets, lse, row_scale)


class Gelu(Function):
    """GELU 的 tanh 近似（GPT-2 用的版本）：
    y = ½x(1 + tanh u)，u = √(2/π)(x + 0.044715x³)；
    dy/dx = ½(1 + t) + ½x(1 - t²)·√(2/π)(1 + 3·0.044715x²)，t = tanh u。
    """

    @staticmethod
    def forward(ctx, x):
        y, t = kernels.gelu_fwd(x)
        ctx.save_for_backward(x, t)
        return y

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        return kernels.gelu_bwd(g, x, t)


def attention_core_fwd(q, k, v, scale, is_causal=False, dropout_mask=None, attn_mask=None, out=None):
    """注意力的数组级前向，返回 (out, P)。

    无额外掩码、前导维相同时交给 ``kernels.attention_fwd``（numba 后端为融合内核，NumPy 后端为参考实现），
    否则直接用 NumPy 参考实现 ``kernels.attention_fwd_numpy``。给出 out（可以是不连续的视图）时结果写进它。
    """
    if _uses_kernel(q, k, v, dropout_mask, attn_mask):
        # 常见情形（训练、生成时单个新词元）：内核融合“缩放·掩码·softmax”，dropout 掩码在加权求和前乘上
        return kernels.attention_fwd(q, k, v, scale, is_causal, out=out, dmask=dropout_mask)
    res, p = kernels.attention_fwd_numpy(q, k, v, scale, is_causal, dropout_mask, attn_mask)
    if out is None:
        return res, p
    out[...] = res
    return out, p


def attention_core_bwd(g, q, k, v, p, scale, is_causal=False, dropout_mask=None, fused=False, out=None):
    """注意力的数组级反向，返回 (dq, dk, dv)；给出 out=(dq, dk, dv) 时写进这三个数组。"""
    if fused:
        return kernels.attention_bwd(g, q, k, v, p, scale, is_causal, out=out, dmask=dropout_mask)
    res = kernels.attention_bwd_numpy(g, q, k, v, p, scale, dropout_mask)
    if out is None:
        return res
    for o, r in zip(out, res):
        o[...] = r
    return out


def _uses_kernel(q, k, v, dropout_mask, attn_mask) -> bool:
    """没有额外掩码、前导维相同（不广播）、dropout 掩码与 P 同形状时用融合内核。"""
    if attn_mask is not None or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        return False
    return dropout_mask is None or dropout_mask.shape == (*q.shape[:-1], k.shape[-2])


class ScaledDotProductAttention(Function):
    """注意力：y = softmax(q kᵀ · s + mask) v，q/k/v 形状 (..., T, hs)，s = 1/√hs。

    记 P = softmax(S)，S = q kᵀ · s，则
    dL/dv = Pᵀ g，dL/dP = g vᵀ，dL/dS = P ⊙ (dL/dP - Σ_j dL/dP_ij P_ij)，
    dL/dq = dL/dS · k · s，dL/dk = dL/dSᵀ · q · s。
    因果掩码 (is_causal) 把 j > i 的分数置为 -inf；dropout 掩码（可选）作用在 P 上。
    """

    @staticmethod
    def forward(ctx, q, k, v, *, is_causal=False, scale=None, dropout_mask=None, attn_mask=None):
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        out, p = attention_core_fwd(q, k, v, s, is_causal, dropout_mask, attn_mask)
        ctx.save_for_backward(q, k, v, p, dropout_mask)
        ctx.scale, ctx.causal = s, is_causal
        ctx.fused = _uses_kernel(q, k, v, dropout_mask, attn_mask)
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, p, dmask = ctx.saved_tensors
        return attention_core_bwd(g, q, k, v, p, ctx.scale, ctx.causal, dmask, ctx.fused)


class CausalSelfAttention(Function):
    """多头因果自注意力（不含输出投影）融合成一个节点：

        [q | k | v] = x · [W_q; W_k; W_v]ᵀ + [b_q | b_k | b_v]     一次矩阵乘算出三个投影
        q, k, v 拆成 nh 个头 (B, nh, T, hs)，y = softmax(q kᵀ/√hs + 因果掩码) v，再合并回 (B, T, C)

    与逐个 Linear + reshape + transpose + SDPA 的组合（tinytensor/composed.py 里的孪生实现）完全等价，
    但只建一个计算图节点，三个投影合成一次更大的矩阵乘（反向时 dx 也只需一次矩阵乘）。
    位置参数：x、W_q、W_k、W_v，以及可选的 b_q、b_k、b_v（qkv_bias=True 时）。
    """

    @staticmethod
    def forward(ctx, x, wq, wk, wv, *biases, n_heads, dropout_mask=None):
        b_, t, c_in = x.shape
        c = wq.shape[0]
        nh, hs = n_heads, c // n_heads
        w = np.concatenate([wq, wk, wv], axis=0)  # (3C, C_in)
        x2 = x.reshape(-1, c_in)
        qkv = _mm2(x2, w.T)  # (B·T, 3C)
        if biases:
            qkv += np.concatenate(biases)
        heads = qkv.reshape(b_, t, 3, nh, hs).transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = heads[0], heads[1], heads[2]
        s = 1.0 / math.sqrt(hs)
        y = np.empty((b_, t, c), dtype=x.dtype)  # 各头的结果直接写成合并后的 (B, T, nh·hs) 布局
        y4 = y.reshape(b_, t, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs) 视图
        _, p = attention_core_fwd(q, k, v, s, True, dropout_mask, out=y4)
        ctx.save_for_backward(x2, w, q, k, v, p, dropout_mask)
        ctx.shape, ctx.scale, ctx.n_bias = (b_, t, c, nh, hs), s, len(biases)
        ctx.fused = _uses_kernel(q, k, v, dropout_mask, None)
        return y  # (B, T, C)

    @staticmethod
    def backward(ctx, g):
        x2, w, q, k, v, p, dmask = ctx.saved_tensors
        b_, t, c, nh, hs = ctx.shape
        g4 = g.reshape(b_, t, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)
        dqkv = np.empty((b_, t, 3, nh, hs), dtype=g.dtype)  # dq、dk、dv 直接写进拼接后的布局
        outs = tuple(dqkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # 各为 (B, nh, T, hs) 视图
        attention_core_bwd(g4, q, k, v, p, ctx.scale, True, dmask, ctx.fused, out=outs)
        dqkv = dqkv.reshape(-1, 3 * c)  # (B·T, 3C)
        need = ctx.needs_input_grad
        dx = _mm2(dqkv, w).reshape(b_, t, -1) if need[0] else None
        dw = _mm2(dqkv.T, x2) if any(need[1:4]) else None  # (3C, C_in)
        grads = [dx]
        grads += [dw[i * c : (i + 1) * c] if dw is not None else None for i in range(3)]
        if ctx.n_bias:
            db = dqkv.sum(axis=0)
            grads += [db[i * c : (i + 1) * c] for i in range(3)]
        return tuple(grads)


# 融合输出层的乘加次数（N·C·V）低于它时不切给多个线程
_LCE_PAR_MIN = 1 << 24


class LinearCrossEntropy(Function):
    """输出层 + 交叉熵融合：L = CE(x Wᵀ + b, t)，不保存 (N, V) 的 logits。

    按行分块（每块至多 chunk 行）：算出这一块的 logits → 交叉熵前向并立刻算出 dL/dlogits
    （= (softmax − onehot)·行权重，前向时就已知；一个内核完成，每个元素只算一次 exp）
    → dL/dx 的这一块 = dlogits · W，dL/dW += dlogitsᵀ · x。
    各块按连续的段分给几个线程（kernels/threads.py），每段把 dW 累加到自己的缓冲区，最后相加
    （所以 dW 的求和顺序随线程数变，末位可能不同）。(N, V) 的 logits 从不整块存在；
    反向时只需把预先算好的梯度乘上上游梯度。不需要梯度时（如评估）只算损失。
    孪生实现：F.linear 之后接 F.cross_entropy。
    """

    @staticmethod
    def forward(ctx, x, w, b=None, *, targets, ignore_index=-100, reduction="mean", chunk=512):
        n = x.shape[0]
        valid = targets != ignore_index
        n_valid = int(valid.sum())
        if reduction == "mean":
            scale = 1.0 / max(n_valid, 1)
        else:
            scale = 1.0
        need = ctx.needs_input_grad or (False, False, False)  # 不需要梯度时为空元组
        need_grad = any(need)
        if need_grad and reduction == "none":
            raise RuntimeError("linear_cross_entropy 需要梯度时只支持 reduction='mean' 或 'sum'")
        loss_rows = np.empty(n, dtype=x.dtype)
        dx = np.empty_like(x) if need[0] else None
        want_dw = need_grad and need[1]
        want_db = need_grad and b is not None and need[2]
        row_scale = np.where(valid, np.asarray(scale, dtype=x.dtype), np.zeros((), dtype=x.dtype))
        # 各块交给几个线程（每个线程一段连续的块、单线程 BLAS），每段把 dW、db 累加到自己的缓冲区，最后相加；
        # 行数少时把块改小，让每个线程至少分到一块（如 gpt2-small 的 B 2、T 256 只有 512 行）
        nt = threads.num_threads() if threads.splitting() and n * x.shape[1] * w.shape[0] >= _LCE_PAR_MIN else 1
        chunk = max(1, min(chunk, -(-n // nt)))
        starts = range(0, n, chunk)
        k = max(1, min(nt, len(starts)))
        segments = [starts[j * len(starts) // k : (j + 1) * len(starts) // k] for j in range(k)]  # 每段连续的块
        dws = [np.zeros_like(w) if want_dw else None for _ in range(k)]
        dbs = [np.zeros_like(b) if want_db else None for _ in range(k)]

        def run_segment(i: int) -> None:
            dw_i, db_i = dws[i], dbs[i]
            # 本段各块共用的梯度缓冲区（不原地写回 logits：别名会让内核退回标量循环）
            gbuf = np.empty((min(chunk, n), w.shape[0]), dtype=x.dtype) if need_grad else None
            for lo in segments[i]:
                hi = min(n, lo + chunk)
                xc = x[lo:hi]
                logits = xc @ w.T  # (chunk, V)
                if b is not None:
                    logits += b
                if not need_grad:
                    loss_rows[lo:hi] = kernels.cross_entropy_fwd(logits, targets[lo:hi], ignore_index)[0]
                    continue
                # 前向与反向一次做完：dL/dlogits 写进本段共用的 gbuf
                assert gbuf is not None
                rows, _, g = kernels.cross_entropy_fwd_bwd(
                    logits, targets[lo:hi], row_scale[lo:hi], ignore_index, out=gbuf[: hi - lo]
                )
                loss_rows[lo:hi] = rows
                if dx is not None:
                    np.matmul(g, w, out=dx[lo:hi])
                if dw_i is not None:
                    dw_i += g.T @ xc
                if db_i is not None:
                    db_i += g.sum(axis=0)

        threads.run_parts(lambda lo, hi: [run_segment(i) for i in range(lo, hi)], k, k)  # k 为 1 时就在本线程
        dw = dws[0]
        db = dbs[0]
        for i in range(1, k):
            if dw is not None:
                dw += dws[i]
            if db is not None:
                db += dbs[i]
        ctx.save_for_backward(dx, dw, db, row_scale)
        ctx.dtype = x.dtype
        if reduction == "none":
            return loss_rows
        total = loss_rows.sum(dtype=x.dtype)
        if reduction == "sum":
            return np.asarray(total)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(total / np.asarray(n_valid, dtype=x.dtype))

    @staticmethod
    def backward(ctx, g):
        dx, dw, db, _ = ctx.saved_tensors
        gs = np.asarray(g, dtype=ctx.dtype)
        grads = tuple(None if a is None else a * gs for a in (dx, dw, db))
        return grads[: len(ctx.needs_input_grad)]
