"""第 3 章：注意力机制一步一步搭起来（tinytensor 版）。

从最朴素的写法到 GPT 真正使用的写法，依次是：

1. ``simple_self_attention``：没有可训练权重，直接拿嵌入向量互相点积；
2. ``SelfAttentionV1``：用三个 ``nn.Parameter`` 矩阵把输入投影成查询 (query)、键 (key)、值 (value)；
3. ``SelfAttentionV2``：同样的计算，改用 ``nn.Linear``（权重形状 (out, in)，初始化更好）；
4. ``CausalAttention``：加上因果掩码 (causal mask) 和作用在注意力权重上的 dropout；
5. ``MultiHeadAttentionWrapper``：把若干个 ``CausalAttention`` 头并排放在 ModuleList 里，输出拼接；
6. ``MultiHeadAttention``：高效写法，一次投影再拆成 nh 个头——就是 GPT 模型里用的那个类
   （定义在 ``gpt_numpy/attention.py``，这里只是重新导出）。

gpt_torch/attention_steps.py 有同名、同参数名的 PyTorch 版本，测试保证两边数值一致。
形状记号见 README：B 批大小，T 词元数，C 输入维度 (d_in)，nh 头数，hs 每个头的维度。
单头的类里输出维度 d_out 就是 hs。
"""

from __future__ import annotations

import math

import numpy as np

import tinytensor as tt
from tinytensor import nn

from .attention import MultiHeadAttention


def simple_self_attention(x: tt.Tensor) -> tt.Tensor:
    """没有可训练权重的自注意力：每个词元的上下文向量 = 所有词元嵌入按相似度加权求和。

    x：(T, C) 或 (B, T, C)。相似度是嵌入之间的点积，softmax 之后每行权重之和为 1。
    """
    scores = x @ x.transpose(-2, -1)  # (B, T, T)：第 i 行是词元 i 与每个词元的点积
    weights = scores.softmax(dim=-1)  # (B, T, T)：每行和为 1
    return weights @ x  # (B, T, C)


def _causal_mask(context_length: int) -> tt.Tensor:
    """(T_max, T_max) 的布尔矩阵，True 表示“未来”（对角线以上），需要遮住。"""
    return tt.tensor(np.triu(np.ones((context_length, context_length), dtype=bool), k=1))


class SelfAttentionV1(nn.Module):
    """可训练的自注意力，权重是三个 (d_in, d_out) 的矩阵，按 x @ W 使用。"""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.W_query = nn.Parameter(tt.rand(d_in, d_out))
        self.W_key = nn.Parameter(tt.rand(d_in, d_out))
        self.W_value = nn.Parameter(tt.rand(d_in, d_out))

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        q = x @ self.W_query  # (B, T, hs)
        k = x @ self.W_key  # (B, T, hs)
        v = x @ self.W_value  # (B, T, hs)
        scores = q @ k.transpose(-2, -1)  # (B, T, T)
        weights = (scores / math.sqrt(k.shape[-1])).softmax(dim=-1)  # (B, T, T)
        return weights @ v  # (B, T, hs)


class SelfAttentionV2(nn.Module):
    """与 V1 相同的计算，投影改用 nn.Linear（weight 形状 (d_out, d_in)，可选偏置）。"""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        q = self.W_query(x)  # (B, T, hs)
        k = self.W_key(x)  # (B, T, hs)
        v = self.W_value(x)  # (B, T, hs)
        scores = q @ k.transpose(-2, -1)  # (B, T, T)
        weights = (scores / math.sqrt(k.shape[-1])).softmax(dim=-1)  # (B, T, T)
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
        # 掩码是缓冲区而不是参数：不训练，也不进 state_dict（两条轨道一致）
        self.register_buffer("mask", _causal_mask(context_length), persistent=False)

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        b, t, _ = x.shape
        if t > self.context_length:
            raise ValueError(f"输入有 {t} 个词元，超过了 context_length={self.context_length}")
        q = self.W_query(x)  # (B, T, hs)
        k = self.W_key(x)  # (B, T, hs)
        v = self.W_value(x)  # (B, T, hs)
        scores = q @ k.transpose(1, 2)  # (B, T, T)
        scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))  # 未来位置 → -inf
        weights = (scores / math.sqrt(k.shape[-1])).softmax(dim=-1)  # (B, T, T)，未来位置权重为 0
        weights = self.dropout(weights)  # 训练时随机丢掉一些权重，其余放大 1/(1-p)
        return weights @ v  # (B, T, hs)


class MultiHeadAttentionWrapper(nn.Module):
    """多头注意力的直白写法：nh 个独立的 CausalAttention 头，输出沿最后一维拼接。

    d_out 是拼接后的总维度（与 MultiHeadAttention 的参数含义相同），每个头 hs = d_out // nh。
    没有输出投影 out_proj。
    """

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

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return tt.cat([head(x) for head in self.heads], dim=-1)  # nh 个 (B, T, hs) → (B, T, nh·hs)


def multihead_from_wrapper(wrapper: MultiHeadAttentionWrapper) -> MultiHeadAttention:
    """构造一个与 wrapper 完全等价的高效 MultiHeadAttention。

    Linear 的权重形状是 (out, in)，输出的第 h·hs 到 (h+1)·hs 个分量只由权重的这几行决定；
    所以把各头的 W_query.weight 按行（第 0 维）依次拼起来，一次投影的结果沿最后一维切成 nh 段，
    第 h 段恰好就是第 h 个头自己的 q。K、V 同理。wrapper 没有输出投影，
    因此把 out_proj 设成恒等映射（weight = I，bias = 0）。
    """
    mha = MultiHeadAttention(
        wrapper.d_in, wrapper.d_out, wrapper.context_length, wrapper.dropout_p, wrapper.num_heads, wrapper.qkv_bias
    )
    heads = list(wrapper.heads)
    state: dict[str, np.ndarray] = {}
    for name in ("W_query", "W_key", "W_value"):
        state[f"{name}.weight"] = np.concatenate([getattr(h, name).weight.data for h in heads], axis=0)  # (nh·hs, C)
        if wrapper.qkv_bias:
            state[f"{name}.bias"] = np.concatenate([getattr(h, name).bias.data for h in heads], axis=0)  # (nh·hs,)
    dtype = heads[0].W_query.weight.dtype
    state["out_proj.weight"] = np.eye(wrapper.d_out, dtype=dtype)
    state["out_proj.bias"] = np.zeros(wrapper.d_out, dtype=dtype)
    mha.to(dtype)
    mha.load_state_dict(state)
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
