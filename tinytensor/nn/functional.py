"""tt.nn.functional：与 torch.nn.functional 同名的函数接口。

融合算子（layer_norm、cross_entropy、gelu、scaled_dot_product_attention）在这里调用
ops/fused.py 的单节点实现；它们由基本算子拼出的“孪生”版本在 tinytensor/functional.py。
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import random as _random
from ..ops import elementwise as E
from ..ops import fused as FU
from ..ops import matmul as MM
from ..ops.embedding import Embedding
from ..tensor import Tensor


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Tensor) else x)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """y = x Wᵀ + b，W 形状 (out_features, in_features)。"""
    if bias is None:
        return MM.Linear.apply(input, weight)
    return MM.Linear.apply(input, weight, bias)


def relu(input: Tensor) -> Tensor:  # noqa: A002
    return input.relu()


def gelu(input: Tensor, approximate: str = "tanh") -> Tensor:  # noqa: A002
    """GELU。本项目两条轨道统一使用 tanh 近似（GPT-2 的版本），不支持精确的 erf 版本。"""
    if approximate != "tanh":
        raise ValueError(f"tinytensor 只实现 GELU 的 tanh 近似，请使用 approximate='tanh'（收到 {approximate!r}）")
    return FU.Gelu.apply(input)


def softmax(input: Tensor, dim: int = -1) -> Tensor:  # noqa: A002
    return input.softmax(dim)


def log_softmax(input: Tensor, dim: int = -1) -> Tensor:  # noqa: A002
    return input.log_softmax(dim)


def layer_norm(
    input: Tensor,  # noqa: A002
    normalized_shape: Any,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """沿最后一维做层归一化（有偏方差，eps 默认 1e-5）。"""
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(ns) != 1 or input.shape[-1] != ns[0]:
        raise RuntimeError(
            f"layer_norm：只支持对最后一维归一化，normalized_shape={ns} 与输入形状 {tuple(input.shape)} 不符"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != ns:
            raise RuntimeError(f"layer_norm：{name} 形状 {tuple(p.shape)} 应为 {ns}")
    if weight is None and bias is not None:
        return FU.LayerNorm.apply(input, eps=eps) + bias
    if weight is None:
        return FU.LayerNorm.apply(input, eps=eps)
    if bias is None:
        return FU.LayerNorm.apply(input, weight, eps=eps)
    return FU.LayerNorm.apply(input, weight, bias, eps=eps)


def embedding(input: Any, weight: Tensor) -> Tensor:  # noqa: A002
    """按 id 查表：input 为整数张量，weight 形状 (num_embeddings, dim)。"""
    idx = _arr(input)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding 的输入必须是整数 id，收到 dtype {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)].ravel()[0])
        raise IndexError(f"词元 id {bad} 超出嵌入表范围 [0, {n})")
    return Embedding.apply(weight, idx=idx.astype(np.int64, copy=False))


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:  # noqa: A002
    """训练时以概率 p 置零，其余乘 1/(1-p)；推理时原样返回。"""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout 概率必须在 [0, 1] 内，收到 {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    mask = _dropout_mask(input.shape, p, input.dtype)
    return E.Dropout.apply(input, mask=mask)


def _dropout_mask(shape: tuple[int, ...], p: float, dtype: np.dtype) -> np.ndarray:
    if p >= 1.0:
        return np.zeros(shape, dtype=dtype)
    keep = _random.default_generator().random(shape, dtype=np.float32) >= p
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - p), dtype=dtype)


def _check_targets(name: str, t: np.ndarray, num_classes: int, ignore_index: int) -> None:
    """类别必须在 [0, V) 内（等于 ignore_index 的除外）；否则报出第一个越界的类别。"""
    bad = (t != ignore_index) & ((t < 0) | (t >= num_classes))
    if np.any(bad):
        raise IndexError(f"{name}：目标类别 {int(t[bad].ravel()[0])} 超出范围 [0, {num_classes})")


def cross_entropy(
    input: Tensor,  # noqa: A002
    target: Any,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """交叉熵：input 是 logits，形状 (N, V)，或 (N, V, d1, ...)（与 torch 相同，类别在第 1 维）；
    target 是整数类别，形状 (N,) 或 (N, d1, ...)。"""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction 只能是 'mean'、'sum' 或 'none'，收到 {reduction!r}")
    t = _arr(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy 的 target 必须是整数类别，收到 dtype {t.dtype}")
    logits = input
    out_shape = t.shape
    if input.ndim == 1:
        logits = input.reshape(1, -1)
        out_shape = ()
    elif input.ndim > 2:
        # (N, V, d1, ...) -> (N·d1·..., V)
        perm = (0,) + tuple(range(2, input.ndim)) + (1,)
        logits = input.permute(perm).reshape(-1, input.shape[1])
    expect = (input.shape[0],) + input.shape[2:] if input.ndim > 1 else ()
    if t.shape != expect:
        raise RuntimeError(
            f"cross_entropy：target 形状 {t.shape} 与 logits 形状 {tuple(input.shape)} 不匹配（应为 {expect}）"
        )
    _check_targets("cross_entropy", t, logits.shape[-1], ignore_index)
    loss = FU.CrossEntropy.apply(
        logits, targets=t.reshape(-1).astype(np.int64, copy=False), ignore_index=ignore_index, reduction=reduction
    )
    if reduction == "none":
        return loss.reshape(out_shape)
    return loss


def nll_loss(input: Tensor, target: Any, ignore_index: int = -100, reduction: str = "mean") -> Tensor:  # noqa: A002
    """负对数似然：input 是 log 概率 (N, V)。"""
    t = _arr(target).astype(np.int64)
    _check_targets("nll_loss", t, input.shape[-1], ignore_index)
    valid = t != ignore_index
    picked = input.gather(1, np.where(valid, t, 0)[:, None]).squeeze(1)
    losses = -picked * Tensor._wrap(valid.astype(input.dtype), False)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / float(valid.sum())


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    d = input - target
    sq = d * d
    if reduction == "none":
        return sq
    return sq.sum() if reduction == "sum" else sq.mean()


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """与 torch.nn.functional.scaled_dot_product_attention 相同的语义：
    softmax(q kᵀ · scale + mask) v，scale 默认 1/√hs；is_causal 时掩码左上角对齐（同 torch）。
    布尔 attn_mask 中 True 表示“可以看到”；浮点 attn_mask 直接加到分数上。"""
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise RuntimeError(
            f"scaled_dot_product_attention：q {tuple(query.shape)}、k {tuple(key.shape)}、"
            f"v {tuple(value.shape)} 的形状不匹配"
        )
    if is_causal and attn_mask is not None:
        raise RuntimeError("is_causal 与 attn_mask 不能同时给出（与 torch 相同）")
    mask = None if attn_mask is None else _arr(attn_mask)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p 必须在 [0, 1] 内，收到 {dropout_p}")
    dmask = None
    if dropout_p > 0.0:  # 与 torch 相同：只看 dropout_p，与是否记录梯度无关（推理时请传 0）
        shape = query.shape[:-1] + (key.shape[-2],)
        dmask = _dropout_mask(np.broadcast_shapes(shape), dropout_p, query.dtype)
    return FU.ScaledDotProductAttention.apply(
        query, key, value, is_causal=is_causal, scale=scale, dropout_mask=dmask, attn_mask=mask
    )


def causal_self_attention(
    x: Tensor,
    w_query: Tensor,
    w_key: Tensor,
    w_value: Tensor,
    n_heads: int,
    b_query: Tensor | None = None,
    b_key: Tensor | None = None,
    b_value: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """融合的多头因果自注意力（不含输出投影），x 形状 (B, T, C_in)，返回 (B, T, C)。

    等价于三个 linear 投影 → 拆成 n_heads 个头 → scaled_dot_product_attention(is_causal=True)
    → 合并各头；dropout_p > 0 时 dropout 作用在注意力权重上。tinytensor 独有（torch 没有同名函数）。
    """
    b, t, _ = x.shape
    c = w_query.shape[0]
    if c % n_heads:
        raise ValueError(f"输出维度 {c} 必须能被 n_heads={n_heads} 整除")
    for name, w in (("w_key", w_key), ("w_value", w_value)):
        if w.shape != w_query.shape:
            raise RuntimeError(
                f"causal_self_attention：{name} 形状 {tuple(w.shape)} 与 w_query {tuple(w_query.shape)} 不同"
            )
    if w_query.shape[1] != x.shape[-1]:
        raise RuntimeError(
            f"causal_self_attention：输入最后一维 {x.shape[-1]} 与权重形状 {tuple(w_query.shape)}（out, in）不一致"
        )
    biases = [bb for bb in (b_query, b_key, b_value) if bb is not None]
    if biases and len(biases) != 3:
        raise ValueError("b_query、b_key、b_value 要么都给，要么都不给")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p 必须在 [0, 1] 内，收到 {dropout_p}")
    dmask = None
    if dropout_p > 0.0:
        dmask = _dropout_mask((b, n_heads, t, t), dropout_p, x.dtype)
    return FU.CausalSelfAttention.apply(x, w_query, w_key, w_value, *biases, n_heads=n_heads, dropout_mask=dmask)


def linear_cross_entropy(
    input: Tensor,  # noqa: A002
    weight: Tensor,
    target: Any,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int = 512,
) -> Tensor:
    """cross_entropy(linear(input, weight, bias), target)，融合计算、不保存 (N, V) 的 logits。

    input 形状 (N, C) 或 (B, T, C)，weight (V, C)，target 与 input 去掉最后一维后同形。
    需要梯度时 reduction 只能是 "mean" 或 "sum"。tinytensor 独有（torch 没有同名函数）。
    chunk_size 是每块的最多行数（行数少时自动改小，让每个线程至少分到一块）。
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction 只能是 'mean'、'sum' 或 'none'，收到 {reduction!r}")
    if not isinstance(chunk_size, int | np.integer) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size 应为正整数，收到 {chunk_size!r}")
    if input.shape[-1] != weight.shape[1]:
        raise RuntimeError(
            f"linear_cross_entropy：输入最后一维 {input.shape[-1]} 与权重形状 {tuple(weight.shape)}（V, C）不一致"
        )
    t = _arr(target)
    if t.shape != input.shape[:-1]:
        raise RuntimeError(f"linear_cross_entropy：target 形状 {t.shape} 应为 {tuple(input.shape[:-1])}")
    v = weight.shape[0]
    if t.dtype.kind not in "iu":
        raise TypeError(f"linear_cross_entropy 的 target 必须是整数类别，收到 dtype {t.dtype}")
    _check_targets("linear_cross_entropy", t.reshape(-1), v, ignore_index)
    x2 = input.reshape(-1, input.shape[-1])
    args = (x2, weight) if bias is None else (x2, weight, bias)
    loss = FU.LinearCrossEntropy.apply(
        *args, targets=t.reshape(-1).astype(np.int64, copy=False), ignore_index=ignore_index,
        reduction=reduction, chunk=chunk_size,
    )
    return loss.reshape(t.shape) if reduction == "none" else loss
