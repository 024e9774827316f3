"""生成专用的精简前向：不建计算图、不包张量，直接在 NumPy 数组上算（配合 KV 缓存）。

训练时的前向要为反向保存中间结果、为每个算子建计算图节点；生成时这些都用不到。
生成一个新词元只是几十次小矩阵乘（实际上是矩阵-向量乘），Python 与节点的开销占了大头，
所以这里：

- 建引擎时把每层的 W_query/W_key/W_value 拼成一个 (3C, C) 矩阵，一次矩阵乘算出 q、k、v；
- LayerNorm、GELU、注意力直接调用 tinytensor.kernels 的融合内核；
- 只对最后一个位置计算最终 LayerNorm 与输出层（生成只需要它的 logits）。

结果与 GPTModel.forward 相同（只差浮点舍入的顺序）。模型权重更新后要重新建引擎（很便宜）。
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinytensor import kernels
from tinytensor.ops.fused import attention_core_fwd

from .attention import cached_attention_mask
from .kv_cache import KVCache


def _arr(p: Any) -> np.ndarray | None:
    return None if p is None else p.data


class _Layer:
    """一个 Transformer 块的权重（NumPy 数组）。"""

    def __init__(self, block: Any) -> None:
        a = block.att
        self.ln1 = (block.norm1.scale.data, block.norm1.shift.data, block.norm1.eps)
        self.ln2 = (block.norm2.scale.data, block.norm2.shift.data, block.norm2.eps)
        self.w_qkv = np.concatenate([a.W_query.weight.data, a.W_key.weight.data, a.W_value.weight.data])  # (3C, C)
        biases = [_arr(a.W_query.bias), _arr(a.W_key.bias), _arr(a.W_value.bias)]
        self.b_qkv = np.concatenate(biases) if biases[0] is not None else None
        self.w_o, self.b_o = a.out_proj.weight.data, _arr(a.out_proj.bias)
        ff = block.ff.layers
        self.w_1, self.b_1 = ff[0].weight.data, _arr(ff[0].bias)
        self.w_2, self.b_2 = ff[2].weight.data, _arr(ff[2].bias)


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    out = x @ w.T
    if b is not None:
        out += b
    return out


class InferenceEngine:
    """从一个 gpt_numpy.GPTModel 取出权重，做无梯度的前向。"""

    def __init__(self, model: Any) -> None:
        self.cfg = model.cfg
        self.tok = model.tok_emb.weight.data
        self.pos = model.pos_emb.weight.data
        self.layers = [_Layer(b) for b in model.trf_blocks]
        n = model.final_norm
        self.ln_f = (n.scale.data, n.shift.data, n.eps)
        self.head = model.out_head.weight.data

    def last_logits(self, idx: np.ndarray, cache: KVCache | None = None) -> np.ndarray:
        """输入 (B, T) 的 id，返回最后一个位置的 logits (B, V)；有缓存时只处理新词元并写入缓存。"""
        ids = np.asarray(idx)
        b, t = ids.shape
        start = 0 if cache is None else cache.pos
        if start + t > self.cfg.context_length:
            raise ValueError(f"输入长度 {start + t} 超过了上下文长度 {self.cfg.context_length}")
        vocab = self.tok.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            bad = int(ids[(ids < 0) | (ids >= vocab)].ravel()[0])
            raise IndexError(f"词元 id {bad} 超出嵌入表范围 [0, {vocab})")
        c, nh = self.cfg.emb_dim, self.cfg.n_heads
        hs = c // nh
        x = (self.tok[ids] + self.pos[start : start + t]).reshape(b * t, c)  # (B·T, C)
        scale = 1.0 / math.sqrt(hs)
        mask = None if cache is None else cached_attention_mask(t, start)
        for i, layer in enumerate(self.layers):
            h = kernels.layer_norm_fwd(x, *layer.ln1)[0]
            qkv = _linear(h, layer.w_qkv, layer.b_qkv).reshape(b, t, 3, nh, hs).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (B, nh, T, hs)
            if cache is not None:
                k, v = cache.update(i, k, v)  # (B, nh, pos+T, hs)
            causal = cache is None or start == 0
            att, _ = attention_core_fwd(q, k, v, scale, is_causal=causal and t > 1, attn_mask=None if causal else mask)
            y = att.transpose(0, 2, 1, 3).reshape(b * t, c)  # (B·T, C)
            x += _linear(y, layer.w_o, layer.b_o)
            h = kernels.layer_norm_fwd(x, *layer.ln2)[0]
            f = kernels.gelu_fwd(_linear(h, layer.w_1, layer.b_1))[0]
            x += _linear(f, layer.w_2, layer.b_2)
        if cache is not None:
            cache.advance(t)
        last = x.reshape(b, t, c)[:, -1]  # (B, C)：生成只需要最后一个位置
        return kernels.layer_norm_fwd(np.ascontiguousarray(last), *self.ln_f)[0] @ self.head.T  # (B, V)
