"""滑动窗口的下一个词元预测数据集。

把一整串词元 id 切成许多 (输入, 目标) 对：第 k 个窗口从 `starts[k] = k * stride` 开始，
输入是 `ids[s : s + max_length]`，目标是它右移一位 `ids[s + 1 : s + max_length + 1]`，
所以总有 `input[i + 1] == target[i]`。起点取 `range(0, n - max_length, stride)`，
即最后一个窗口的目标恰好不越界；末尾凑不满一个窗口的词元不会被使用。
stride == max_length 时窗口首尾相接、互不重叠；stride < max_length 时相邻窗口有重叠。
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike


def _positive_int(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} 应为正整数，实际为 {value!r}")
    return int(value)


class SlidingWindowDataset:
    """滑动窗口数据集：`ds[k]` 返回 (输入, 目标) 两个形状 (T,) 的 int64 数组。"""

    def __init__(self, token_ids: ArrayLike, max_length: int, stride: int) -> None:
        self.max_length = _positive_int("max_length", max_length)
        self.stride = _positive_int("stride", stride)
        tokens = np.asarray(token_ids)
        if tokens.ndim != 1:
            raise ValueError(f"token_ids 应是一维的词元 id 序列，实际形状为 {tokens.shape}")
        if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"token_ids 应是整数，实际 dtype 为 {tokens.dtype}")
        n = len(tokens)
        need = self.max_length + 1
        if n < need:
            raise ValueError(
                f"文本只有 {n} 个词元，至少需要 max_length + 1 = {need} 个才能组成一个 (输入, 目标) 窗口；"
                "请换更长的文本或减小 max_length"
            )
        self.tokens = tokens
        self.starts = np.arange(0, n - self.max_length, self.stride, dtype=np.int64)

    @classmethod
    def from_text(
        cls,
        text: str,
        tokenizer: Any,
        max_length: int,
        stride: int,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
    ) -> SlidingWindowDataset:
        """先用 tokenizer 编码 text，再切窗口。"""
        ids = tokenizer.encode(text, allowed_special=allowed_special)
        return cls(np.asarray(ids, dtype=np.int64), max_length, stride)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(index)
        if not -len(self) <= k < len(self):
            raise IndexError(f"窗口下标 {index} 超出范围：共有 {len(self)} 个窗口")
        s = int(self.starts[k])
        window = np.asarray(self.tokens[s : s + self.max_length + 1], dtype=np.int64)
        return window[:-1], window[1:]

    def get_batch(self, indices: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """一次取多个窗口，返回 (x, y)，形状都是 (B, T)、dtype 为 int64。"""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"窗口下标超出范围 [0, {len(self)})：{idx.min()} … {idx.max()}")
        offsets = self.starts[idx][:, None] + np.arange(self.max_length + 1)  # (B, T+1)
        windows = np.asarray(self.tokens[offsets], dtype=np.int64)
        return windows[:, :-1], windows[:, 1:]
