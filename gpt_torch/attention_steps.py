"""第 3 章：注意力机制一步一步搭起来（PyTorch 版）。

类名、构造参数和参数名与 gpt_numpy/attention_steps.py 完全相同，权重可以按名字互相复制，
测试保证两边的前向输出和梯度一致。依次是：

1. ``simple_self_attention``：没有可训练权重；
2. ``SelfAttentionV1``：三个 ``nn.Parameter`` 矩阵，按 x @ W 使用；
3. ``SelfAttentionV2``：改用 ``nn.Linear``；
4. ``CausalAttention``：因果掩码 + 注意力权重上的 dropout；
5. ``MultiHeadAttentionWrapper``：ModuleList 里的若干个单头，输出拼接；
6. ``MultiHeadAttention``：一次投影再拆头的高效写法（定义在 ``gpt_torch/attention.py``，
   这里重新导出）。它还有 ``attn_impl="sdpa"``，改用
   ``F.scaled_dot_product_attention(is_causal=True)``，测试保证与显式写法 ``"explicit"`` 相等。

形状记号见 README：B 批大小，T 词元数，C 输入维度 (d_in)，nh 头数，hs 每个头的维度。
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import MultiHeadAttention


def simple_self_attention(x: torch.Tensor) -> torch.Tensor:
    """没有可训练权重的自注意力。x：(T, C) 或 (B, T, C)。"""
    scores = x @ x.transpose(-2, -1)  # (B, T, T)
    weights = torch.softmax(scores, dim=-1)  # (B, T, T)：每行和为 1
    return weights @ x  # (B, T, C)


def _causal_mask(context_length: int) -> torch.Tensor:
    """(T_max, T_max) 的布尔矩阵，True 表示“未来”（对角线以上）。"""
    return torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)


class SelfAttentionV1(nn.Module):
    """可训练的自注意力，权重是三个 (d_in, d_out) 的矩阵，按 x @ W 使用。"""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x @ self.W_query  # (B, T, hs)
        k = x @ self.W_key  # (B, T, hs)
        v = x @ self.W_value  # (B, T, hs)
        scores = q @ k.transpose(-2, -1)  # (B, T, T)
        weights = torch.softmax(scores / math.sqrt(k.shape[-1]), dim=-1)  # (B, T, T)
        return weights @ v  # (B, T, hs)


class SelfAttentionV2(nn.Module):
    """与 V1 相同的计算，投影改用 nn.Linear。"""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.W_query(x)  # (B, T, hs)
        k = self.W_key(x)  # (B, T, hs)
        v = self.W_value(x)  # (B, T, hs)
        scores = q @ k.transpose(-2, -1)  # (B, T, T)
        weights = torch.softmax(scores / math.sqrt(k.shape[-1]), dim=-1)  # (B, T, T)
        return weights @ v  # (B, T, hs)


class CausalAttention(nn.Module):
    """单头因果自注意力：位置 i 只能看到位置 ≤ i 的词元；dropout 作用在注意力权重上。"""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False) -> None:
        super().__init__()
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", _causal_mask(context_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        if t > self.context_length:
            raise ValueError(f"输入有 {t} 个词元，超过了 context_length={self.context_length}")
        q = self.W_query(x)  # (B, T, hs)
        k = self.W_key(x)  # (B, T, hs)
        v = self.W_value(x)  # (B, T, hs)
        scores = q @ k.transpose(1, 2)  # (B, T, T)
        scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))
        weights = torch.softmax(scores / math.sqrt(k.shape[-1]), dim=-1)  # (B, T, T)
        weights = self.dropout(weights)
        return weights @ v  # (B, T, hs)


class MultiHeadAttentionWrapper(nn.Module):
    """nh 个独立的 CausalAttention 头，输出沿最后一维拼接；d_out 是总维度，hs = d_out // nh。"""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} 必须能被 num_heads={num_heads} 整除")
        self.d_in, self.d_out, self.num_heads = d_in, d_out, num_heads
        self.context_length, self.dropout_p, self.qkv_bias = context_length, dropout, qkv_bias
        hs = d_out // num_heads
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, hs, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)  # nh 个 (B, T, hs) → (B, T, nh·hs)


def multihead_from_wrapper(wrapper: MultiHeadAttentionWrapper, attn_impl: str = "explicit") -> MultiHeadAttention:
    """构造与 wrapper 等价的高效 MultiHeadAttention：各头的投影权重按行拼接，out_proj 取恒等映射。

    道理见 gpt_numpy/attention_steps.py 的同名函数。
    """
    ref = wrapper.heads[0].W_query.weight
    mha = MultiHeadAttention(
        wrapper.d_in,
        wrapper.d_out,
        wrapper.context_length,
        wrapper.dropout_p,
        wrapper.num_heads,
        wrapper.qkv_bias,
        attn_impl=attn_impl,
    ).to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            layers = [getattr(h, name) for h in wrapper.heads]
            getattr(mha, name).weight.copy_(torch.cat([m.weight for m in layers], dim=0))  # (nh·hs, C)
            if wrapper.qkv_bias:
                getattr(mha, name).bias.copy_(torch.cat([m.bias for m in layers], dim=0))  # (nh·hs,)
        mha.out_proj.weight.copy_(torch.eye(wrapper.d_out, dtype=ref.dtype))
        mha.out_proj.bias.zero_()
    mha.train(wrapper.training)
    return mha


__all__ = [
    "CausalAttention",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "SelfAttentionV1",
    "SelfAttentionV2",
    "multihead_from_wrapper",
    "simple_self_attention",
]
