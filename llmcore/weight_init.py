"""参数初始化：由 (配置, 种子, 方案) 决定的一组 NumPy 数组，两条轨道共用。

两条轨道从同一个种子得到**完全相同**的初始权重，所以同样的训练配置在 NumPy 与 PyTorch
上的损失曲线可以直接比较。

- "gpt2"：GPT-2 的做法：线性层与嵌入 ~ N(0, 0.02)，偏置为 0；每个残差分支的输出投影
  （att.out_proj、ff.layers.2）再除以 √(2·n_layers)，让残差流的方差不随层数增长。
- "torch"：PyTorch 各层的默认分布（原书的模型就是这样初始化的）：
  Linear 的权重和偏置 ~ U(-1/√in, 1/√in)，Embedding ~ N(0, 1)。
LayerNorm 总是 scale = 1、shift = 0。tie_weights 时 out_head.weight 与 tok_emb.weight 是同一个数组。
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .config import GPTConfig

RESIDUAL_PROJECTIONS = ("att.out_proj.weight", "ff.layers.2.weight")
TIED_KEY = "out_head.weight"


def init_arrays(
    shapes: Mapping[str, tuple[int, ...]], cfg: GPTConfig, seed: int, scheme: str = "gpt2", dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """按参数名与形状生成初始权重。shapes 的顺序决定随机数的消耗顺序（两条轨道的参数顺序相同）。"""
    if scheme not in ("gpt2", "torch"):
        raise ValueError(f"未知的初始化方案 {scheme!r}；可选 'gpt2' 或 'torch'")
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if cfg.tie_weights and name == TIED_KEY and "tok_emb.weight" in out:
            out[name] = out["tok_emb.weight"]  # 权重共享：输出层就是词元嵌入，不另抽随机数
            continue
        if name.endswith((".scale",)):
            arr = np.ones(shape)
        elif name.endswith(".shift"):
            arr = np.zeros(shape)
        elif name in ("tok_emb.weight", "pos_emb.weight"):
            std = 0.02 if scheme == "gpt2" else 1.0
            arr = rng.normal(0.0, std, size=shape)
        elif name.endswith(".weight"):
            if scheme == "gpt2":
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(RESIDUAL_PROJECTIONS) else 0.02
                arr = rng.normal(0.0, std, size=shape)
            else:
                bound = 1.0 / math.sqrt(shape[1])
                arr = rng.uniform(-bound, bound, size=shape)
        elif name.endswith(".bias"):
            if scheme == "gpt2":
                arr = np.zeros(shape)
            else:
                weight = shapes[name[: -len("bias")] + "weight"]
                bound = 1.0 / math.sqrt(weight[1])
                arr = rng.uniform(-bound, bound, size=shape)
        else:
            raise ValueError(f"不知道如何初始化参数 {name!r}（形状 {shape}）")
        out[name] = arr.astype(dtype)
    return out


def decay_mask(shapes: Mapping[str, tuple[int, ...]], decay_all: bool = False) -> dict[str, bool]:
    """哪些参数做权重衰减：默认只衰减二维及以上的权重（矩阵与嵌入），偏置和 LayerNorm 参数不衰减。"""
    return {name: decay_all or len(shape) >= 2 for name, shape in shapes.items()}
