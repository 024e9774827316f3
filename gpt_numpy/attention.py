"""多头因果自注意力 (multi-head causal self-attention)，建立在 tinytensor 上。

形状记号见 README：B 批大小，T 序列长度，C 嵌入维度，nh 头数，hs = C // nh。
参数名与原书和 gpt_torch 完全相同：W_query、W_key、W_value、out_proj。

两条前向：``forward``（张量，建计算图，训练用）与 ``infer``（NumPy 数组，不建计算图，配合 KV 缓存，生成用）。
两者用同样的参数，结果相同（只差浮点舍入的顺序）。
"""

from __future__ import annotations

import math

import numpy as np

import tinytensor as tt
from tinytensor import kernels, nn
from tinytensor.nn import functional as F
from tinytensor.ops.fused import attention_core_fwd

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

    def infer(self, x: np.ndarray, cache: KVCache | None = None, layer: int = 0) -> np.ndarray:
        """生成用的前向：x 为 (B, T, C) 数组。有缓存时 x 只含新词元，它们的键值写入缓存，
        再对缓存里的全部键值做注意力（第 i 个新词元只看到绝对位置 ≤ pos+i 的键）。"""
        b, t, _ = x.shape
        nh, hs = self.num_heads, self.head_dim
        if cache is None:

            def heads(lin: nn.Linear) -> np.ndarray:
                return linear_infer(x, lin).reshape(b, t, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, T, hs)

            q, k, v = heads(self.W_query), heads(self.W_key), heads(self.W_value)
        else:
            # 逐个解码时 x 只有一行：三个投影拼成一次 (3C, C) 的矩阵-向量乘，省下两次调用的开销。
            # 拼好的权重存在这次生成的缓存里（一次生成之中权重不变）。
            w, bias = cache.packed(layer, self._pack_qkv)
            qkv = x.reshape(b * t, -1) @ w.T  # (B·T, 3C)
            if bias is not None:
                qkv += bias
            q, k, v = qkv.reshape(b, t, 3, nh, hs).transpose(2, 0, 3, 1, 4)  # 各 (B, nh, T, hs)
        start = 0 if cache is None else cache.pos
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, pos+T, hs)
        causal = start == 0
        mask = None if causal else cached_attention_mask(t, start)
        ctx, _ = attention_core_fwd(q, k, v, 1.0 / math.sqrt(hs), is_causal=causal and t > 1, attn_mask=mask)
        return linear_infer(ctx.transpose(0, 2, 1, 3).reshape(b, t, self.d_out), self.out_proj)  # (B, T, C)


    def _pack_qkv(self) -> tuple[np.ndarray, np.ndarray | None]:
        """W_query、W_key、W_value 上下拼成 (3C, C)，偏置拼成 (3C,)（没有偏置时为 None）。"""
        lins = (self.W_query, self.W_key, self.W_value)
        w = np.concatenate([lin.weight.data for lin in lins])
        bias = None if lins[0].bias is None else np.concatenate([lin.bias.data for lin in lins])
        return w, bias


def linear_infer(x: np.ndarray, lin: nn.Linear) -> np.ndarray:
    """不建计算图的线性层：x @ Wᵀ + b（W 存为 (out, in)）。"""
    w = lin.weight.data
    out = x.reshape(-1, x.shape[-1]) @ w.T  # 二维的矩阵乘直接走 BLAS（三维会按批逐个调用）
    if lin.bias is not None:
        out += lin.bias.data
    return out.reshape(*x.shape[:-1], w.shape[0])


def layer_norm_infer(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """不建计算图的 LayerNorm（融合内核），x 的形状任意，沿最后一维归一化。"""
    shape = x.shape
    return kernels.layer_norm_fwd(np.ascontiguousarray(x).reshape(-1, shape[-1]), weight, bias, eps)[0].reshape(shape)
