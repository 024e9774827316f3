"""多头因果自注意力 (multi-head causal self-attention)，建立在 tinytensor 上。

形状记号见 README：B 批大小，T 序列长度，C 嵌入维度，nh 头数，hs = C // nh。
参数名与原书和 gpt_torch 完全相同：W_query、W_key、W_value、out_proj。
"""

from __future__ import annotations

import numpy as np

import tinytensor as tt
from tinytensor import nn
from tinytensor.nn import functional as F

from .kv_cache import KVCache


def cached_attention_mask(t_new: int, pos: int) -> np.ndarray | None:
    """有缓存时的因果掩码：第 i 个新词元（绝对位置 pos+i）只能看到位置 ≤ pos+i 的键。

    返回布尔数组 (t_new, pos+t_new)，True 表示可见；只有一个新词元时它能看到全部，返回 None。
    """
    if t_new == 1:
        return None
    return np.arange(pos + t_new)[None, :] <= (pos + np.arange(t_new))[:, None]


class MultiHeadAttention(nn.Module):
    """一次投影出所有头的 Q/K/V，再拆成 nh 个头并行计算因果注意力。"""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} 必须能被 num_heads={num_heads} 整除")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = dropout

    def forward(self, x: tt.Tensor, cache: KVCache | None = None, layer: int = 0) -> tt.Tensor:
        b, t, _ = x.shape
        nh, hs = self.num_heads, self.head_dim
        q = self.W_query(x).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.W_key(x).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.W_value(x).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is None:
            p = self.dropout if self.training else 0.0
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)  # (B, nh, T, hs)
        else:
            mask = cached_attention_mask(t, cache.pos)
            keys, values = cache.update(layer, k.data, v.data)  # (B, nh, pos+T, hs)
            ctx = F.scaled_dot_product_attention(q, tt.from_numpy(keys), tt.from_numpy(values), attn_mask=mask)
        ctx = ctx.transpose(1, 2).reshape(b, t, self.d_out)  # (B, T, C)
        return self.out_proj(ctx)
