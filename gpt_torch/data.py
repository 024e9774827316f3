"""gpt_torch 的数据适配：把 llmcore.datasets 的滑动窗口数据集包装成 torch 的 Dataset / DataLoader。

分词、切窗口的逻辑只在 llmcore 里写一遍；这里只负责把 NumPy 的 int64 数组变成 torch.long 张量。
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from llmcore.datasets import SlidingWindowDataset


class TorchWindowDataset(Dataset):
    """`ds[k]` 返回 (输入, 目标) 两个形状 (T,) 的 torch.long 张量。"""

    def __init__(self, windows: SlidingWindowDataset) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.windows[index]
        return torch.from_numpy(x), torch.from_numpy(y)


def create_torch_dataloader(
    text: str,
    tokenizer: Any,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int = 123,
    allowed_special: Collection[str] | Literal["all"] = frozenset(),
) -> DataLoader:
    """编码文本 → 滑动窗口 → torch DataLoader；打乱顺序由 seed 决定。"""
    windows = SlidingWindowDataset.from_text(text, tokenizer, max_length, stride, allowed_special)
    if drop_last and len(windows) < batch_size:
        raise ValueError(
            f"数据集只有 {len(windows)} 个窗口，不够组成一个 batch_size={batch_size} 的批次；"
            "请减小 batch_size、用更长的文本或设 drop_last=False"
        )
    return DataLoader(
        TorchWindowDataset(windows),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def to_torch_batch(
    x: np.ndarray, y: np.ndarray, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """把 NumPy 轨道的批次（如 `RandomWindowSampler.sample()`）搬到 torch 设备上。"""
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
