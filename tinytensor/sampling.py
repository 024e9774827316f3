"""不求导的采样函数：multinomial（生成文本时按概率抽取下一个词元）。"""

from __future__ import annotations

import numpy as np

from . import random as _random
from .tensor import Tensor


def multinomial(input: Tensor, num_samples: int = 1, replacement: bool = False) -> Tensor:  # noqa: A002
    """按每行的非负权重（不必归一化）抽样下标，形状 (..., num_samples)。"""
    p = np.asarray(input.data, dtype=np.float64)
    if p.ndim not in (1, 2):
        raise RuntimeError(f"multinomial 需要 1 维或 2 维输入，收到形状 {p.shape}")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise RuntimeError("multinomial 的概率必须是非负有限数")
    rows = p.reshape(-1, p.shape[-1])
    sums = rows.sum(axis=1)
    if np.any(sums <= 0):
        raise RuntimeError("multinomial 的某一行概率之和为 0")
    rng = _random.default_generator()
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for i, (row, s) in enumerate(zip(rows, sums)):
        if not replacement and num_samples > np.count_nonzero(row):
            raise RuntimeError(f"不放回抽样 {num_samples} 个，但只有 {np.count_nonzero(row)} 个非零概率")
        out[i] = rng.choice(row.size, size=num_samples, replace=replacement, p=row / s)
    return Tensor._wrap(out.reshape(p.shape[:-1] + (num_samples,)), False)
