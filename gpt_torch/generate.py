"""PyTorch 轨道的文本生成。

generate / stream_generate 复用 llmcore.generation.stream_tokens 的生成循环与
llmcore.sampling 的抽样（同样的种子 → 与 NumPy 轨道生成同样的文本）；
generate_text_simple 是原书的纯 torch 贪心写法。
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from llmcore.generation import stream_tokens


def _torch_step(model: torch.nn.Module, device: torch.device):
    def step(tokens: np.ndarray, cache: Any) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(tokens, dtype=torch.long, device=device)
            logits = model(x, cache)[:, -1, :]
        return logits.float().cpu().numpy() if logits.dtype != torch.float64 else logits.cpu().numpy()

    return step


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
    """逐个产出新词元 (B,)（NumPy 数组）。生成期间模型处于 eval 模式。"""
    ids = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx, dtype=np.int64)
    ctx = min(context_size or model.cfg.context_length, model.cfg.context_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        new_cache = (lambda: model.new_cache(len(ids))) if use_cache else None
        yield from stream_tokens(
            _torch_step(model, device), ids, max_new_tokens, ctx, new_cache, temperature, top_k, top_p, eos_id, seed
        )
    finally:
        model.train(was_training)


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
) -> torch.Tensor:
    """生成 max_new_tokens 个词元，返回 (B, T + 新词元数) 的 LongTensor（与输入同设备）。"""
    ids = idx if isinstance(idx, torch.Tensor) else torch.as_tensor(np.asarray(idx), dtype=torch.long)
    new = list(stream_generate(model, ids, max_new_tokens, temperature, top_k, top_p, eos_id, seed, use_cache,
                               context_size))
    if not new:
        return ids
    tail = torch.as_tensor(np.stack(new, axis=1), dtype=torch.long, device=ids.device)
    return torch.cat([ids, tail], dim=1)


def generate_text_simple(
    model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int
) -> torch.Tensor:
    """原书的最简贪心生成（纯 torch）。"""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)[:, -1, :]  # (B, V)
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, idx_next], dim=1)
    return idx
