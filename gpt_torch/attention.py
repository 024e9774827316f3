"""多头因果自注意力的 PyTorch 版本，参数名与 gpt_numpy/attention.py 相同。

两种实现，结果相同（测试保证）：
- "explicit"：原书的写法，显式算分数矩阵、因果掩码、softmax、dropout；
- "sdpa"：torch.nn.functional.scaled_dot_product_attention(is_causal=True)，
  在 GPU 上会用 FlashAttention 等融合内核，省显存也更快（默认）。
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .kv_cache import KVCache

ATTN_IMPLS = ("sdpa", "explicit")


def cached_attention_mask(t_new: int, pos: int, device: torch.device) -> torch.Tensor | None:
    """有缓存时的因果掩码 (t_new, pos+t_new)，True 表示可见；只有一个新词元时返回 None。"""
    if t_new == 1:
        return None
    j = torch.arange(pos + t_new, device=device)
    i = pos + torch.arange(t_new, device=device)
    return j[None, :] <= i[:, None]


class MultiHeadAttention(nn.Module):
    """一次投影出所有头的 Q/K/V，再拆成 nh 个头并行计算因果注意力。"""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} 必须能被 num_heads={num_heads} 整除")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl 只能是 {ATTN_IMPLS} 之一，收到 {attn_impl!r}")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.attn_impl = attn_impl
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # 因果掩码：非持久缓冲区，不进 state_dict（与 gpt_numpy 的参数名保持一致）
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        nh, hs = self.num_heads, self.head_dim
        q = self.W_query(x).view(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.W_key(x).view(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.W_value(x).view(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            mask = cached_attention_mask(t, cache.pos, x.device)
            k, v = cache.update(layer, k, v)  # (B, nh, pos+T, hs)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif self.attn_impl == "sdpa":
            p = self.dropout.p if self.training else 0.0
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)  # (B, nh, T, hs)
        else:
            scores = q @ k.transpose(2, 3)  # (B, nh, T, T)
            scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))
            weights = torch.softmax(scores / math.sqrt(hs), dim=-1)
            weights = self.dropout(weights)
            ctx = weights @ v  # (B, nh, T, hs)
        ctx = ctx.transpose(1, 2).reshape(b, t, self.d_out)  # (B, T, C)
        return self.out_proj(ctx)
