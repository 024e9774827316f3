"""训练批次：第 i 个批次完全由 (种子, i) 决定，所以续训只需记住“已经用到第几个批次”。

两种取样方式：
- "random"（nanoGPT 的做法）：每个批次从词元数组里随机取 B 个起点，窗口长 T+1；
- "epoch"（原书的做法）：按 stride 切出全部滑动窗口，每轮用 (种子, 轮次) 打乱一次，依次取，
  丢掉凑不满一个批次的尾巴 (drop_last)。

分布式训练时，一个“全局批次”有 B × world_size 个序列，第 r 个进程取其中第 r 段——
因此 2 个进程各跑 B 个序列，与 1 个进程跑 2B 个序列看到的数据完全相同。
"""

from __future__ import annotations

import numpy as np


class StepBatches:
    """按全局批次编号取 (x, y)，形状 (B, T)。"""

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        context_length: int,
        mode: str = "random",
        seed: int = 0,
        stride: int = 0,
    ) -> None:
        self.tokens = tokens
        self.batch_size, self.context_length = batch_size, context_length
        self.mode, self.seed = mode, seed
        self.stride = stride or context_length
        need = context_length + 1
        if len(tokens) < need:
            raise ValueError(
                f"训练数据只有 {len(tokens)} 个词元，而一个长度 {context_length} 的窗口需要 {need} 个"
                "（输入 T 个，再加一个作为最后一个目标）"
            )
        if mode == "epoch":
            self.starts = np.arange(0, len(tokens) - context_length, self.stride)
            self.batches_per_epoch = len(self.starts) // batch_size
            if self.batches_per_epoch == 0:
                raise ValueError(
                    f"训练数据只能切出 {len(self.starts)} 个窗口（词元 {len(tokens)}，窗口 {context_length}，"
                    f"步幅 {self.stride}），不够一个批次 {batch_size}"
                )
            self._perm_epoch = -1
            self._perm = self.starts
        elif mode != "random":
            raise ValueError(f"未知的取样方式 {mode!r}；可选 'random' 或 'epoch'")

    def starts_for(self, index: int) -> np.ndarray:
        """第 index 个批次的窗口起点 (B,)。"""
        b = self.batch_size
        if self.mode == "random":
            rng = np.random.default_rng([self.seed, index])
            return rng.integers(0, len(self.tokens) - self.context_length, size=b)
        epoch, k = divmod(index, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.starts)
            self._perm_epoch = epoch
        return self._perm[k * b : (k + 1) * b]

    def get(self, index: int, rank: int = 0, world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """第 index 个全局批次中属于第 rank 个进程的那一段。"""
        starts = self.starts_for(index)
        if world_size > 1:
            if len(starts) % world_size:
                raise ValueError(f"全局批次 {len(starts)} 不能被进程数 {world_size} 整除")
            per = len(starts) // world_size
            starts = starts[rank * per : (rank + 1) * per]
        return windows(self.tokens, starts, self.context_length)


def windows(tokens: np.ndarray, starts: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """由起点取窗口：x = tokens[s : s+T]，y = tokens[s+1 : s+T+1]，两者都是 (B, T) 的 int64。"""
    idx = np.asarray(starts)[:, None] + np.arange(t + 1)[None, :]
    w = np.asarray(tokens[idx], dtype=np.int64)
    return w[:, :-1], w[:, 1:]


def eval_batches(
    tokens: np.ndarray,
    n_batches: int,
    batch_size: int,
    context_length: int,
    seed: int | None = None,
    stride: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """固定的一组评估批次（最多 n_batches 个）。

    - stride > 0：像原书那样按步幅切出滑动窗口（步幅等于窗口长度时互不重叠），按顺序取，最后一个批次可以不满；
    - 否则 seed 为 None 时在数据上等距取起点（验证集），给出 seed 时按种子随机取（训练集）。
    """
    t = context_length
    hi = len(tokens) - t  # 起点的上界（不含）
    if hi <= 0:
        raise ValueError(f"评估数据只有 {len(tokens)} 个词元，少于一个窗口需要的 {t + 1} 个")
    if stride > 0:
        starts = np.arange(0, hi, stride)[: n_batches * batch_size]
    elif seed is None:
        starts = np.linspace(0, hi - 1, num=n_batches * batch_size).astype(np.int64)
    else:
        starts = np.random.default_rng(seed).integers(0, hi, size=n_batches * batch_size)
    return [windows(tokens, starts[i : i + batch_size], t) for i in range(0, len(starts), batch_size)]
