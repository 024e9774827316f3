"""融合算子的“孪生”参考实现：只用基本算子拼出来，由自动求导自动得到反向。

它们慢（计算图节点多、中间数组多），但每一步都看得见，是理解和验证融合算子的依据：
测试保证这里的前向、反向与 tt.nn.functional 中的融合版本一致。
名字说的就是这件事：composed（由基本算子组合而成）；``tt.nn.functional`` 是 torch 式的函数接口，调用的是融合算子。
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .creation import tril, where  # type: ignore[attr-defined]  # tril 由 creation 按名字批量生成
from .tensor import Tensor


def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) · w + b，沿最后一维，var 为有偏方差。"""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, correction=0)
    y = (x - mean) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def gelu(x: Tensor) -> Tensor:
    """0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))。"""
    return 0.5 * x * (1.0 + (math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)).tanh())


def cross_entropy(logits: Tensor, targets: Any, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """-log_softmax(logits)[i, t_i]，logits 形状 (N, V)。"""
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets).astype(np.int64)
    valid = t != ignore_index
    logp = logits.log_softmax(dim=-1)
    picked = logp.gather(1, np.where(valid, t, 0)[:, None]).squeeze(1)
    losses = -picked * Tensor._wrap(valid.astype(logits.dtype), False)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / float(valid.sum())


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, is_causal: bool = False, scale: float | None = None
) -> Tensor:
    """softmax(q kᵀ / √hs，因果掩码) v，逐步写出来。"""
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * s  # (..., Tq, Tk)
    if is_causal:
        tq, tk = scores.shape[-2], scores.shape[-1]
        allowed = tril(Tensor._wrap(np.ones((tq, tk), dtype=bool), False))
        scores = where(allowed, scores, float("-inf"))
    return scores.softmax(dim=-1) @ v


def causal_self_attention(
    x: Tensor,
    w_query: Tensor,
    w_key: Tensor,
    w_value: Tensor,
    n_heads: int,
    b_query: Tensor | None = None,
    b_key: Tensor | None = None,
    b_value: Tensor | None = None,
) -> Tensor:
    """三个线性投影 → 拆成 n_heads 个头 → 因果注意力 → 合并各头，逐步写出来（融合版见 nn.functional）。"""
    from .nn import functional as F

    b, t, _ = x.shape
    c = w_query.shape[0]
    hs = c // n_heads

    def heads(w: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, w, bias).reshape(b, t, n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)

    q, k, v = heads(w_query, b_query), heads(w_key, b_key), heads(w_value, b_value)
    y = scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
    return y.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
