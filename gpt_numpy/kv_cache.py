"""KV 缓存 (KV cache)：生成时把每层算过的键 (key) 和值 (value) 存起来，新词元只算自己的那一份。

预先按 context_length 分配好每层的数组（形状 (B, nh, T_max, hs)），写入时只是切片赋值，
不会在生成过程中反复拼接、重新分配内存。``pos`` 是已经写入的词元数。
缓存写满（达到 context_length）后不能再追加：GPT 用的是绝对位置嵌入，窗口一滑动，
所有旧键值对应的位置都变了，只能整体重算（generate 里处理）。

缓存同时存放这次生成用的各块权重（model.py 的 ``BlockWeights``，其中 QKV 拼成一个矩阵；见 ``packed``）：
一次生成之中权重不变，取一次、用到生成结束；换了权重就要用新的缓存（``model.new_cache()``）。

本文件只依赖 NumPy；gpt_torch 有一个同样接口、存 torch 张量的版本。
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class KVCache:
    """按层预分配的键值缓存。"""

    def __init__(
        self, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int, dtype: np.dtype
    ) -> None:
        shape = (batch_size, n_heads, max_len, head_dim)
        self.keys = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.max_len = max_len
        self.pos = 0
        self._packed: dict[int, Any] = {}

    def update(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """写入第 layer 层新词元的 k、v（形状 (B, nh, Tn, hs)），返回到目前为止的全部键值（视图）。"""
        tn = k.shape[2]
        end = self.pos + tn
        if end > self.max_len:
            raise RuntimeError(f"KV 缓存已满：已有 {self.pos} 个词元，再写 {tn} 个会超过上限 {self.max_len}")
        self.keys[layer][:, :, self.pos : end] = k
        self.values[layer][:, :, self.pos : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def packed(self, layer: int, build: Callable[[], Any]) -> Any:
        """第 layer 层这次生成用的拼好的权重：第一次调用 build() 得到并记住，之后直接返回。"""
        if layer not in self._packed:
            self._packed[layer] = build()
        return self._packed[layer]

    def advance(self, n: int) -> None:
        """所有层都写完后，把位置前移 n。"""
        self.pos += n

    def reset(self) -> None:
        self.pos = 0
