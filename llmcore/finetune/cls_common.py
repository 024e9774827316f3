"""分类模型的共用约定（与框架无关）：哪些参数参与训练、分类头的初始值、分类检查点的附加信息。

分类模型就是 GPT 把输出层 out_head (V 类) 换成 (K 类，带偏置) 的线性层，参数名不变，
所以两条轨道的分类检查点同样互通。训练方式：

- last-block（原书的做法）：只训练最后一个 Transformer 块、最终 LayerNorm 和分类头；
- full：全部参数；
- head：只训练分类头；
- lora：冻结全部原参数，给选中的线性层加 LoRA，训练 A、B 和分类头。
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

TRAIN_MODES = ("last-block", "full", "head", "lora")
CLS_TASK = "classification"


def trainable_names(param_names: Iterable[str], mode: str, n_layers: int) -> list[str]:
    """按训练方式选出要训练的参数名（保持模型中的顺序）。lora 方式下只看 LoRA 参数与分类头。"""
    if mode not in TRAIN_MODES:
        raise ValueError(f"未知的训练方式 {mode!r}；可选：{', '.join(TRAIN_MODES)}")
    last = f"trf_blocks.{n_layers - 1}."
    out = []
    for n in param_names:
        if mode == "full":
            keep = ".lora." not in n
        elif mode == "head":
            keep = n.startswith("out_head.")
        elif mode == "lora":
            keep = ".lora." in n or n.startswith("out_head.")
        else:
            keep = n.startswith((last, "final_norm.", "out_head."))
        if keep:
            out.append(n)
    return out


def head_init_arrays(emb_dim: int, num_classes: int, seed: int, dtype: Any = "float32") -> dict[str, np.ndarray]:
    """新分类头的初始值：与 torch.nn.Linear 默认初始化同分布，U(-1/√C, 1/√C)；两条轨道相同。"""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"类别数 num_classes 至少为 2，收到 {num_classes!r}")
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(emb_dim)
    return {
        "out_head.weight": rng.uniform(-bound, bound, (num_classes, emb_dim)).astype(dtype),
        "out_head.bias": rng.uniform(-bound, bound, (num_classes,)).astype(dtype),
    }


def decay_names(shapes: dict[str, tuple[int, ...]]) -> set[str]:
    """做权重衰减的参数：二维及以上的权重（LoRA 的 A、B 也算）；偏置与 LayerNorm 参数不衰减。"""
    return {n for n, s in shapes.items() if len(s) >= 2}


__all__ = ["CLS_TASK", "TRAIN_MODES", "decay_names", "head_init_arrays", "trainable_names"]
