"""LoRA（附录 E）的 tinytensor 版本：LoRALayer、LinearWithLoRA、替换线性层、计数、适配器存取、合并。

    y = linear(x) + s · (x A) B,   s = alpha / rank,   A (in, r)，B (r, out)，B 初始为 0

参数名：被替换的线性层 `…W_query` 变成 `…W_query.linear.{weight,bias}` 与 `…W_query.lora.{A,B}`；
与 gpt_torch/lora.py 完全相同，适配器文件两边通用（格式见 llmcore/finetune/lora_io.py）。
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tinytensor as tt
from llmcore.checkpoint import CheckpointError
from llmcore.finetune import lora_io
from tinytensor import nn


class LoRALayer(nn.Module):
    """低秩增量 s · (x A) B。"""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, dtype: Any = None) -> None:
        super().__init__()
        rng = np.random.default_rng()
        dtype = tt.get_default_dtype() if dtype is None else np.dtype(dtype)
        self.A = nn.Parameter(lora_io.lora_a_init(in_dim, rank, rng).astype(dtype))
        self.B = nn.Parameter(np.zeros((rank, out_dim), dtype=dtype))
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return (x @ self.A @ self.B) * self.scaling  # (…, in) → (…, r) → (…, out)

    def delta_weight(self) -> tt.Tensor:
        """增量写成与线性层权重同形状的矩阵 s·(A B)ᵀ，形状 (out, in)。"""
        return (self.A @ self.B).T * self.scaling


class LinearWithLoRA(nn.Module):
    """包住一个冻结的 Linear，输出加上 LoRA 的增量。"""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha, linear.weight.dtype)

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return self.linear(x) + self.lora(x)

    # 融合的注意力内核（F.causal_self_attention）与生成用的 infer 直接读投影层的 .weight/.bias，
    # 所以这里给出“等效权重” W + s·(A B)ᵀ：它是计算图里的一个张量，梯度照样流到 A、B。
    @property
    def weight(self) -> tt.Tensor:
        return self.linear.weight + self.lora.delta_weight()

    @property
    def bias(self) -> Any:
        return self.linear.bias

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, module)


def linear_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """模型里的全部普通线性层：路径 → (in, out)。"""
    return {n: (m.in_features, m.out_features) for n, m in model.named_modules() if type(m) is nn.Linear}


def replace_linear_with_lora(
    model: nn.Module, rank: int, alpha: float, targets: str | Sequence[str] = "all", seed: int = 0
) -> list[str]:
    """把选中的线性层换成 LinearWithLoRA（A 用共用的初始化，B 为 0），冻结模型里原有的全部参数。

    返回被替换的层路径。替换后模型的输出与替换前完全相同（因为 B = 0）。
    """
    layers = linear_layers(model)
    chosen = lora_io.select_linear_names(layers, targets)
    init = lora_io.lora_init_arrays({n: layers[n] for n in chosen}, rank, seed, "float64")
    for p in model.parameters():
        p.requires_grad = False
    for name in chosen:
        wrapped = LinearWithLoRA(model.get_submodule(name), rank, alpha)
        wrapped.lora.A.data[...] = init[f"{name}.lora.A"]
        wrapped.lora.B.data[...] = init[f"{name}.lora.B"]
        _set_submodule(model, name, wrapped)
    model.lora_config = {"rank": rank, "alpha": float(alpha), "targets": list(lora_io.resolve_targets(targets))}
    return chosen


def lora_modules(model: nn.Module) -> dict[str, LinearWithLoRA]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LinearWithLoRA)}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(可训练参数个数, 全部参数个数)。"""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adapter_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """适配器的内容：所有 LoRA 参数，加上其余可训练的参数（如新的分类头）。"""
    return {n: p.data.copy() for n, p in model.named_parameters() if ".lora." in n or p.requires_grad}


def save_adapter(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """只存适配器（safetensors），不存冻结的基座权重。"""
    cfg = getattr(model, "lora_config", None)
    if cfg is None:
        raise ValueError("模型里没有 LoRA 层：先调用 replace_linear_with_lora")
    return lora_io.save_adapter(path, adapter_arrays(model), cfg["rank"], cfg["alpha"], cfg["targets"], extra)


def load_adapter(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """把适配器装进模型：模型还没有 LoRA 层时按文件里的 rank/alpha/目标层先替换，然后按名字逐个核对形状后赋值。"""
    arrays, meta = lora_io.read_adapter(path)
    if not lora_modules(model):
        replace_linear_with_lora(model, meta["rank"], meta["alpha"], meta["targets"])
    params = dict(model.named_parameters())
    for k, v in arrays.items():
        if k not in params:
            raise CheckpointError(f"适配器里的参数 {k!r} 在模型中不存在（模型结构或 LoRA 目标层不一致）")
        if tuple(params[k].shape) != tuple(v.shape):
            raise CheckpointError(f"适配器参数 {k!r} 形状为 {tuple(v.shape)}，模型需要 {tuple(params[k].shape)}")
    missing = [n for n in params if ".lora." in n and n not in arrays]
    if missing:
        raise CheckpointError(f"适配器缺少 LoRA 参数：{missing[:5]}")
    for k, v in arrays.items():
        params[k].data[...] = v.astype(params[k].dtype)
    return meta


def merge_lora(model: nn.Module) -> nn.Module:
    """把每个 LinearWithLoRA 并回一个普通 Linear（W ← W + s·(A B)ᵀ），参数名恢复成原来的样子。"""
    for name, m in lora_modules(model).items():
        lin = m.linear
        with tt.no_grad():
            lin.weight.data[...] = lora_io.merged_weight(lin.weight.data, m.lora.A.data, m.lora.B.data,
                                                         m.lora.scaling)
        _set_submodule(model, name, lin)
    if hasattr(model, "lora_config"):
        del model.__dict__["lora_config"]
    return model


__all__ = [
    "LinearWithLoRA", "LoRALayer", "adapter_arrays", "count_parameters", "linear_layers", "load_adapter",
    "lora_modules", "merge_lora", "replace_linear_with_lora", "save_adapter",
]
