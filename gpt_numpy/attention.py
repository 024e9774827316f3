"""多头因果自注意力 (multi-head causal self-attention)，建立在 tinytensor 上。

形状记号见 README：B 批大小，T 序列长度，C 嵌入维度，nh 头数，hs = C // nh。
参数名与原书和 gpt_torch 完全相同：W_query、W_key、W_value、out_proj。

这里只有训练用的 ``forward``（张量，建计算图）。生成用的无计算图前向（配合 KV 缓存）写在
model.py 的 ``TransformerBlock.infer`` 里，用的是同一组参数；
它要的因果掩码 ``cached_attention_mask`` 在 tinytensor/kernels/decode_attention.py（Qwen3 的预填充也用它）。
"""

from __future__ import annotations

import tinytensor as tt
from tinytensor import nn
from tinytensor.nn import functional as F


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

    fused = True  # 设为 False 时走逐步写法（与融合版结果相同，用于对照和教学）

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        p = self.dropout if self.training else 0.0
        if not self.fused:
            return self._forward_steps(x, p)
        # 投影、拆头、因果注意力、合并各头融合成一个计算图节点（一次大矩阵乘算出 Q、K、V）
        wq, wk, wv = self.W_query, self.W_key, self.W_value
        ctx = F.causal_self_attention(x, wq.weight, wk.weight, wv.weight, self.num_heads, wq.bias, wk.bias, wv.bias, p)
        return self.out_proj(ctx)  # (B, T, C)

    def _split_heads(self, x: tt.Tensor) -> tuple[tt.Tensor, tt.Tensor, tt.Tensor]:
        b, t, _ = x.shape
        nh, hs = self.num_heads, self.head_dim
        q = self.W_query(x).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.W_key(x).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.W_value(x).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        return q, k, v

    def _forward_steps(self, x: tt.Tensor, dropout_p: float) -> tt.Tensor:
        """逐步写法：三个投影 → 拆头 → 因果注意力 → 合并 → 输出投影。"""
        b, t, _ = x.shape
        q, k, v = self._split_heads(x)
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)  # (B, nh, T, hs)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, self.d_out))  # (B, T, C)
