"""与框架无关的生成循环：两条轨道用同一段代码逐个产出新词元（同样的种子 → 同样的文本）。

循环只需要一个 ``step(tokens, cache) -> 最后位置的 logits`` 函数，由各轨道的模型提供；
抽样（温度、top-k、top-p）在 sampling.py。

上下文裁剪：输入超过 context_length 时只保留最后 context_length 个词元。
KV 缓存写满后，新词元的位置会越过位置嵌入表，而 GPT 用的是绝对位置嵌入——窗口一滑动，
所有旧的键值都对应了新的位置，缓存失效。此时每一步都用最后 context_length 个词元重新计算
（与不用缓存的结果一致，只是更慢）。
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .sampling import check_sampling_args, sample_next

StepFn = Callable[[np.ndarray, Any], np.ndarray]
"""step(tokens (B, T) int64, cache 或 None) -> 最后一个位置的 logits (B, V)。"""


def stream_tokens(
    step: StepFn,
    idx: np.ndarray,
    max_new_tokens: int,
    context_length: int,
    new_cache: Callable[[], Any] | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
) -> Iterator[np.ndarray]:
    """逐个产出新词元 (B,)。new_cache 为 None 时不用缓存。参数在第一次前向之前检查。

    eos_id：某一行生成 eos 后，该行之后都填 eos；所有行都结束时停止（eos 本身不产出）。
    """
    idx = np.asarray(idx, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx 必须是 (B, T) 且 T ≥ 1 的整数数组，收到形状 {idx.shape}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens 不能为负，收到 {max_new_tokens}")
    if context_length < 1:
        raise ValueError(f"context_length 必须 ≥ 1，收到 {context_length}")
    check_sampling_args(temperature, top_k, top_p)
    if max_new_tokens == 0:
        return
    rng = np.random.default_rng(seed)
    tokens = idx[:, -context_length:]
    cache = new_cache() if new_cache is not None else None
    done = np.zeros(len(idx), dtype=bool)
    logits = step(tokens, cache)
    for i in range(max_new_tokens):
        nxt = sample_next(logits, temperature, top_k, top_p, rng)
        if eos_id is not None:
            nxt = np.where(done, eos_id, nxt)
            done |= nxt == eos_id
            if done.all():
                return
        yield nxt
        if i == max_new_tokens - 1:
            return
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)[:, -context_length:]
        if cache is not None and cache.pos < context_length:
            logits = step(nxt[:, None], cache)
        else:
            if cache is not None:
                cache.reset()
            logits = step(tokens, cache)


__all__ = ["StepFn", "stream_tokens"]
