"""LoRA 的共用部分（与框架无关）：目标层的选择、A 的初始化、适配器文件、合并公式。

LoRA（Hu et al., 2021）冻结原权重 W (out, in)，只训练两个小矩阵 A (in, r)、B (r, out)：

    y = x Wᵀ + b + s · (x A) B,      s = alpha / r

B 初始为 0，所以训练开始时模型与原模型完全相同；A 按 torch 的 kaiming_uniform_(a=√5) 初始化
（对 (in, r) 的矩阵，fan_in = r，即 U(-1/√r, 1/√r)），两条轨道用同一组 NumPy 随机数。
推理时可以把增量并回原权重：W' = W + s · (A B)ᵀ，之后的模型与普通 GPT 结构、参数名都相同。

原书附录 E 的 LoRALayer 直接乘 alpha（不除以 r）；这里按论文与 PEFT 的惯例用 alpha / r，
换 r 时不必重新调学习率。

适配器文件：一个 safetensors，只含 LoRA 的 A、B 与新加的分类头（它不在基座检查点里），
元数据里记 rank、alpha、目标层，以及 num_classes 等附加信息。两条轨道读写同一个文件。
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import CheckpointError, load_arrays, save_arrays

ADAPTER_FORMAT = "llm-zh-lora"
ADAPTER_NAME = "adapter.safetensors"

# 可选的目标层集合（按模块路径的结尾匹配）；分类头另外整体训练，不加 LoRA
TARGET_SETS: dict[str, tuple[str, ...]] = {
    "all": ("att.W_query", "att.W_key", "att.W_value", "att.out_proj", "ff.layers.0", "ff.layers.2"),
    "attn": ("att.W_query", "att.W_key", "att.W_value", "att.out_proj"),
    "qv": ("att.W_query", "att.W_value"),
}


def resolve_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    """'all' / 'attn' / 'qv'，或逗号分隔的模块路径结尾（如 "att.W_query,ff.layers.0"）。"""
    if isinstance(targets, str):
        if targets in TARGET_SETS:
            return TARGET_SETS[targets]
        parts = tuple(t.strip() for t in targets.split(",") if t.strip())
    else:
        parts = tuple(targets)
    if not parts:
        raise ValueError(f"LoRA 目标层为空：{targets!r}；可用 {', '.join(TARGET_SETS)} 或逗号分隔的模块路径")
    return parts


def select_linear_names(linear_names: Iterable[str], targets: str | Sequence[str]) -> list[str]:
    """在模型的全部线性层路径中选出要加 LoRA 的那些（路径以某个目标结尾）；一个也没选中时报错。"""
    want = resolve_targets(targets)
    names = list(linear_names)
    chosen = [n for n in names if n.startswith("trf_blocks.") and any(n == t or n.endswith("." + t) for t in want)]
    if not chosen:
        raise ValueError(f"LoRA 目标 {list(want)} 没有匹配任何线性层；模型的线性层有：{names[:8]} ...")
    return chosen


def lora_a_init(in_dim: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """A (in, r) ~ U(-1/√r, 1/√r)：与 torch.nn.init.kaiming_uniform_(A, a=√5) 的分布相同。"""
    bound = 1.0 / math.sqrt(rank)
    return rng.uniform(-bound, bound, size=(in_dim, rank))


def lora_init_arrays(
    layers: Mapping[str, tuple[int, int]], rank: int, seed: int, dtype: Any = "float32"
) -> dict[str, np.ndarray]:
    """layers：模块路径 → (in, out)。返回 {路径.lora.A, 路径.lora.B}（B 全零），按 layers 的顺序消耗随机数。"""
    if not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"LoRA 的秩 rank 必须是正整数，收到 {rank!r}")
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, (d_in, d_out) in layers.items():
        out[f"{name}.lora.A"] = lora_a_init(d_in, rank, rng).astype(dtype)
        out[f"{name}.lora.B"] = np.zeros((rank, d_out), dtype=dtype)
    return out


def merged_weight(weight: np.ndarray, a: np.ndarray, b: np.ndarray, scaling: float) -> np.ndarray:
    """W' = W + s·(A B)ᵀ，形状 (out, in)，与原权重相同。"""
    return weight + scaling * (a @ b).T


def save_adapter(path: str | Path, arrays: Mapping[str, np.ndarray], rank: int, alpha: float,
                 targets: Sequence[str], extra: dict[str, Any] | None = None) -> Path:
    """把适配器（LoRA 的 A、B 与额外训练的参数，如分类头）原子地存成一个 safetensors 文件。"""
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / ADAPTER_NAME
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": ADAPTER_FORMAT, "rank": str(rank), "alpha": repr(float(alpha)),
            "targets": json.dumps(list(targets)), "extra": json.dumps(extra or {}, ensure_ascii=False)}
    save_arrays(p, {k: np.asarray(v) for k, v in arrays.items()}, metadata=meta)
    return p


def read_adapter(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """读取适配器文件，返回 (数组, {"rank", "alpha", "targets", "extra"})。"""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        p = p / ADAPTER_NAME
    arrays = load_arrays(p)
    with safe_open(str(p), framework="numpy") as f:
        raw = f.metadata() or {}
    if raw.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{p} 不是 LoRA 适配器文件（format={raw.get('format')!r}）")
    meta = {"rank": int(raw["rank"]), "alpha": float(raw["alpha"]), "targets": json.loads(raw["targets"]),
            "extra": json.loads(raw.get("extra", "{}"))}
    return arrays, meta


def count_lora_parameters(layers: Mapping[str, tuple[int, int]], rank: int) -> int:
    """LoRA 新增的参数个数：每层 r·(in + out)。"""
    return sum(rank * (d_in + d_out) for d_in, d_out in layers.values())


__all__ = [
    "ADAPTER_NAME", "TARGET_SETS", "count_lora_parameters", "lora_a_init", "lora_init_arrays", "merged_weight",
    "read_adapter", "resolve_targets", "save_adapter", "select_linear_names",
]
