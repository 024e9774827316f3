"""NumPy 轨道的批加载器：把数据集的窗口组成 (B, T) 的批次。

- `shuffle=True` 时每一轮 (epoch) 用 `numpy.random.default_rng((seed, epoch))` 打乱一次：
  同一个 seed、同一轮总是同样的顺序；每遍历一次，轮次 epoch 自动加一（也可用 `set_epoch`）。
- `drop_last=True` 时丢掉最后凑不满 batch_size 的一批；若数据集连一批都凑不满就直接报错，
  而不是给出一个空的加载器。
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any, Literal

import numpy as np

from .sliding import SlidingWindowDataset, _positive_int


class BatchLoader:
    """`for x, y in loader:`，x、y 是形状 (B, T) 的 int64 数组。"""

    def __init__(
        self, dataset: Any, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = True
    ) -> None:
        self.dataset = dataset
        self.batch_size = _positive_int("batch_size", batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        n = len(dataset)
        if n == 0:
            raise ValueError("数据集为空，无法组成批次")
        if drop_last and n < self.batch_size:
            raise ValueError(
                f"数据集只有 {n} 个样本，不够组成一个 batch_size={self.batch_size} 的批次"
                "（drop_last=True 会把它丢掉）；请减小 batch_size、用更长的文本或设 drop_last=False"
            )

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """指定下一次遍历是第几轮（epoch，决定打乱顺序）。"""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(n)
        else:
            order = np.arange(n)
        self.epoch += 1
        get_batch = getattr(self.dataset, "get_batch", None)
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            if get_batch is not None:
                yield get_batch(idx)
            else:
                pairs = [self.dataset[int(i)] for i in idx]
                yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def create_dataloader(
    text: str,
    tokenizer: Any,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int = 0,
    allowed_special: Collection[str] | Literal["all"] = frozenset(),
) -> BatchLoader:
    """编码文本 → 滑动窗口数据集 → 批加载器，一步完成。"""
    ds = SlidingWindowDataset.from_text(text, tokenizer, max_length, stride, allowed_special=allowed_special)
    return BatchLoader(ds, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
