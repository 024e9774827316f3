"""从 logits 选出下一个词元：贪心、温度 (temperature)、top-k、top-p（核采样）。

只依赖 NumPy，两条轨道共用：给定同样的 logits 和同样的种子，抽到的词元完全相同。
"""

from __future__ import annotations

import numpy as np


def check_sampling_args(temperature: float, top_k: int | None = None, top_p: float | None = None) -> None:
    """检查抽样参数；不合法时报 ValueError（生成开始前调用，免得白算一次前向）。"""
    if not temperature >= 0:  # 也拒绝 NaN
        raise ValueError(f"temperature 不能为负（0 表示贪心），收到 {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k 必须是 ≥ 1 的整数，收到 {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p 必须在 (0, 1] 内，收到 {top_p}")


def filter_logits(logits: np.ndarray, top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """把不参与抽样的位置置为 -inf。logits 形状 (B, V)，返回新数组（float64）。

    - top_k：只保留每行最大的 k 个（并列第 k 大的也保留）；
    - top_p：按概率从大到小累加，保留累计概率刚达到 top_p 所需的最少词元（至少一个）。
    """
    out = np.array(logits, dtype=np.float64)
    v = out.shape[-1]
    if top_k is not None and top_k < v:
        top_k = int(top_k)
        kth = np.partition(out, v - top_k, axis=-1)[:, v - top_k : v - top_k + 1]  # 每行第 k 大的值
        out[out < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-out, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(out, order, axis=-1)
        probs = softmax(sorted_logits)
        cum = np.cumsum(probs, axis=-1)
        remove = (cum - probs) >= top_p  # 在它之前的累计概率已经够了
        remove[:, 0] = False
        sorted_logits[remove] = -np.inf
        np.put_along_axis(out, order, sorted_logits, axis=-1)
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)


def sample_next(
    logits: np.ndarray,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """由最后一个位置的 logits (B, V) 选出下一个词元 id (B,)。

    temperature == 0 时取最大值（贪心，与 top-k/top-p 无关）；否则 logits / temperature 后按概率抽样。
    """
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits 必须是 (B, V) 的二维数组，收到形状 {logits.shape}")
    check_sampling_args(temperature, top_k, top_p)
    if temperature == 0.0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    rng = np.random.default_rng() if rng is None else rng
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    probs = softmax(filter_logits(scaled, top_k, top_p))
    u = rng.random(len(probs))[:, None]  # [0, 1)
    cdf = np.cumsum(probs, axis=-1)
    cdf /= cdf[:, -1:]  # 消除累加的舍入误差：最后一个非零概率处的 cdf 恰好为 1，被过滤的词元永远抽不到
    idx = (u >= cdf).sum(axis=-1)  # 逆变换抽样：第一个 cdf > u 的位置
    return idx.astype(np.int64)
