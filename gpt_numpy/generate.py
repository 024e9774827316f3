"""NumPy 轨道的文本生成：原书的贪心 generate_text_simple，以及带温度、top-k、top-p、eos、种子和
KV 缓存的 generate / stream_generate。

生成循环在 llmcore.generation（两条轨道共用）；这里只提供“一步前向”：GPTModel.infer，
即模型自己的模块在 NumPy 数组上做无计算图的前向（见 model.py）。
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from llmcore.generation import stream_tokens


def generate(
    model: Any,
    idx: Any,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    context_size: int | None = None,
) -> np.ndarray:
    """生成 max_new_tokens 个词元，返回 (B, T + 新词元数) 的 id 数组（gpt_numpy 模型）。"""
    ids = np.asarray(getattr(idx, "data", idx), dtype=np.int64)
    ctx = context_size or model.cfg.context_length
    new = list(stream_generate(model, ids, max_new_tokens, temperature, top_k, top_p, eos_id, seed, use_cache, ctx))
    if not new:
        return ids
    return np.concatenate([ids, np.stack(new, axis=1)], axis=1)


def stream_generate(
    model: Any,
    idx: Any,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    context_size: int | None = None,
) -> Iterator[np.ndarray]:
    """与 generate 相同，但逐个产出新词元 (B,)，用于流式输出。生成期间模型处于 eval 模式。"""
    ids = np.asarray(getattr(idx, "data", idx), dtype=np.int64)
    ctx = min(context_size or model.cfg.context_length, model.cfg.context_length)
    was_training = model.training
    model.eval()
    try:
        new_cache = (lambda: model.new_cache(len(ids))) if use_cache else None
        yield from stream_tokens(
            model.infer, ids, max_new_tokens, ctx, new_cache, temperature, top_k, top_p, eos_id, seed
        )
    finally:
        model.train(was_training)


def generate_text_simple(model: Any, idx: Any, max_new_tokens: int, context_size: int) -> np.ndarray:
    """原书的最简贪心生成：每步把（截断后的）整个序列送进模型，取最后一个位置 logits 的 argmax。"""
    import tinytensor as tt

    ids = np.asarray(getattr(idx, "data", idx), dtype=np.int64)
    for _ in range(max_new_tokens):
        idx_cond = ids[:, -context_size:]  # 只保留最后 context_size 个词元
        with tt.no_grad():
            logits = model(idx_cond).data[:, -1, :]  # (B, V)
        idx_next = np.argmax(logits, axis=-1)[:, None]  # (B, 1)
        ids = np.concatenate([ids, idx_next], axis=1)
    return ids
