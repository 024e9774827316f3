"""KV 缓存的 PyTorch 版本：与 gpt_numpy/kv_cache.py 同样的接口，存 torch 张量。"""

from __future__ import annotations

import torch


class KVCache:
    """按层预分配的键值缓存，形状 (B, nh, T_max, hs)。"""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (batch_size, n_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """写入第 layer 层新词元的 k、v（形状 (B, nh, Tn, hs)），返回到目前为止的全部键值。"""
        tn = k.shape[2]
        end = self.pos + tn
        if end > self.max_len:
            raise RuntimeError(f"KV 缓存已满：已有 {self.pos} 个词元，再写 {tn} 个会超过上限 {self.max_len}")
        self.keys[layer][:, :, self.pos : end] = k
        self.values[layer][:, :, self.pos : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def reset(self) -> None:
        self.pos = 0
