"""Hugging Face 格式的 GPT-2 检查点 → 本项目的参数名与 GPTConfig（与框架无关，两条轨道共用）。

目录即 ``save_pretrained`` 写出的样子：``config.json`` + ``model.safetensors``
（或分片的 ``model.safetensors.index.json``）。键名可带 ``transformer.`` 前缀：

    wte.weight (V, C)                    → tok_emb.weight
    wpe.weight (T, C)                    → pos_emb.weight
    h.{i}.ln_1.{weight,bias}             → trf_blocks.{i}.norm1.{scale,shift}
    h.{i}.attn.c_attn.weight (C, 3C)     → 转置后按行切成 W_query / W_key / W_value 的 weight (C, C)
    h.{i}.attn.c_attn.bias (3C,)         → 切成三段 bias（所以 qkv_bias=True）
    h.{i}.attn.c_proj.{weight,bias}      → trf_blocks.{i}.att.out_proj（weight 转置）
    h.{i}.ln_2.{weight,bias}             → trf_blocks.{i}.norm2.{scale,shift}
    h.{i}.mlp.c_fc.{weight,bias}         → trf_blocks.{i}.ff.layers.0（weight 转置）
    h.{i}.mlp.c_proj.{weight,bias}       → trf_blocks.{i}.ff.layers.2（weight 转置）
    ln_f.{weight,bias}                   → final_norm.{scale,shift}
    lm_head.weight                       → 与 wte 共享（tie_weights=True），必须与 wte 相同

GPT-2 的 Conv1D 计算 ``x @ W + b``，W 存为 (in, out)；我们的 Linear 与 torch 一样存 (out, in)，故需转置。
``h.{i}.attn.bias`` / ``attn.masked_bias`` 是因果掩码缓冲区，跳过；其余不认识的键报错并给出键名。

配置映射：n_embd → emb_dim，n_layer → n_layers，n_head → n_heads，n_positions → context_length，
vocab_size → vocab_size；drop_rate 取 resid_pdrop（没有时取 attn_pdrop，都没有则 0.0），
也可由调用者指定（微调时原书用 0.0）。我们的 LayerNorm 固定 eps=1e-5，所以
layer_norm_epsilon 不是 1e-5 时报错；激活函数必须是 tanh 近似的 GELU（gelu_new）。
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, load_arrays
from .config import GPTConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
LN_EPS = 1e-5
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_SKIP = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_LAYER = re.compile(r"^h\.(\d+)\.(.+)$")
# 层内的一一对应（不含需要切分的 c_attn）：HF 名 → (我们的名, 是否转置)
_LAYER_MAP: dict[str, tuple[str, bool]] = {
    "ln_1.weight": ("norm1.scale", False),
    "ln_1.bias": ("norm1.shift", False),
    "attn.c_proj.weight": ("att.out_proj.weight", True),
    "attn.c_proj.bias": ("att.out_proj.bias", False),
    "ln_2.weight": ("norm2.scale", False),
    "ln_2.bias": ("norm2.shift", False),
    "mlp.c_fc.weight": ("ff.layers.0.weight", True),
    "mlp.c_fc.bias": ("ff.layers.0.bias", False),
    "mlp.c_proj.weight": ("ff.layers.2.weight", True),
    "mlp.c_proj.bias": ("ff.layers.2.bias", False),
}
_TOP_MAP: dict[str, str] = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.scale",
    "ln_f.bias": "final_norm.shift",
}


class HFConversionError(CheckpointError):
    """Hugging Face 检查点无法映射到本项目的 GPT。"""


# ---------------------------------------------------------------------------- 配置
def config_from_hf(hf: Mapping[str, Any], drop_rate: float | None = None) -> GPTConfig:
    """把 HF 的 GPT2Config 字典转换为 GPTConfig（qkv_bias=True；tie_weights 随 tie_word_embeddings，默认 True）。"""
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise HFConversionError(f"只支持 model_type='gpt2' 的检查点，收到 {model_type!r}")
    missing = [k for k in ("n_embd", "n_layer", "n_head", "vocab_size") if k not in hf]
    if missing:
        raise HFConversionError(f"config.json 缺少字段 {missing}")
    eps = float(hf.get("layer_norm_epsilon", LN_EPS))
    if abs(eps - LN_EPS) > 1e-12:
        raise HFConversionError(f"layer_norm_epsilon={eps} 不受支持：本项目的 LayerNorm 固定使用 eps={LN_EPS}")
    act = hf.get("activation_function", "gelu_new")
    if act not in _TANH_GELUS:
        raise HFConversionError(f"activation_function={act!r} 不受支持：本项目的 GELU 是 tanh 近似（gelu_new）")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf["n_embd"]:
        raise HFConversionError(f"n_inner={n_inner} 不受支持：前馈层宽度固定为 4·n_embd = {4 * hf['n_embd']}")
    for flag, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                     ("add_cross_attention", False)):
        if bool(hf.get(flag, ok)) != ok:
            raise HFConversionError(f"{flag}={hf[flag]!r} 不受支持（本项目的 GPT 要求 {ok}）")
    if drop_rate is None:
        drop_rate = float(hf.get("resid_pdrop", hf.get("attn_pdrop", 0.0)))
    return GPTConfig(
        vocab_size=int(hf["vocab_size"]),
        context_length=int(hf.get("n_positions", hf.get("n_ctx", 1024))),
        emb_dim=int(hf["n_embd"]),
        n_heads=int(hf["n_head"]),
        n_layers=int(hf["n_layer"]),
        drop_rate=drop_rate,
        qkv_bias=True,
        tie_weights=bool(hf.get("tie_word_embeddings", True)),
    )


# ---------------------------------------------------------------------------- 参数
def _strip(key: str) -> str:
    return key[len("transformer.") :] if key.startswith("transformer.") else key


def convert_hf_state(hf_state: Mapping[str, np.ndarray], cfg: GPTConfig) -> dict[str, np.ndarray]:
    """把 HF 键名的数组换成本项目的参数名（含转置与 qkv 切分）；键与形状逐一核对。"""
    c, n = cfg.emb_dim, cfg.n_layers
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}  # 我们的键 → 检查点里的键（报错用）
    lm_head: np.ndarray | None = None
    for raw, arr in hf_state.items():
        key = _strip(raw)
        arr = np.asarray(arr)
        if _SKIP.match(key):
            continue
        if key == "lm_head.weight":
            lm_head = arr
            continue
        if key in _TOP_MAP:
            out[_TOP_MAP[key]] = arr
            source[_TOP_MAP[key]] = raw
            continue
        m = _LAYER.match(key)
        if m is None or int(m.group(1)) >= n:
            raise HFConversionError(f"检查点中有无法识别的键 {raw!r}")
        i, rest = int(m.group(1)), m.group(2)
        pre = f"trf_blocks.{i}."
        if rest == "attn.c_attn.weight":
            _expect(raw, arr, (c, 3 * c))
            w = arr.T  # (3C, C)：行依次是 q、k、v 的输出
            for j, name in enumerate(("W_query", "W_key", "W_value")):
                out[f"{pre}att.{name}.weight"] = w[j * c : (j + 1) * c]
        elif rest == "attn.c_attn.bias":
            _expect(raw, arr, (3 * c,))
            for j, name in enumerate(("W_query", "W_key", "W_value")):
                out[f"{pre}att.{name}.bias"] = arr[j * c : (j + 1) * c]
        elif rest in _LAYER_MAP:
            ours, transpose = _LAYER_MAP[rest]
            out[pre + ours] = arr.T if transpose else arr
            source[pre + ours] = raw + ("（已转置）" if transpose else "")
        else:
            raise HFConversionError(f"检查点中有无法识别的键 {raw!r}")
    expected = expected_shapes(cfg)
    if not cfg.tie_weights:
        if lm_head is None:
            raise HFConversionError("tie_word_embeddings=false，但检查点中没有 lm_head.weight")
        out["out_head.weight"] = lm_head
    else:
        wte = out.get("tok_emb.weight")
        if lm_head is not None and wte is not None and not np.array_equal(lm_head, wte):
            raise HFConversionError("lm_head.weight 与 wte.weight 不相同，但配置要求二者共享（tie_word_embeddings）")
        if wte is not None:
            out["out_head.weight"] = wte
    missing = [k for k in expected if k not in out]
    if missing:
        raise HFConversionError(f"检查点缺少参数（我们的参数名）：{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    for k, shape in expected.items():
        got = tuple(out[k].shape)
        if got != shape:
            raise HFConversionError(
                f"参数 {k!r}（来自 {source.get(k, k)!r}）形状不匹配：检查点中为 {got}，配置需要 {shape}"
            )
    return {k: np.ascontiguousarray(out[k]) for k in expected}  # 按模型 state_dict 的顺序


def _expect(key: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(arr.shape) != shape:
        raise HFConversionError(f"参数 {key!r} 形状不匹配：检查点中为 {tuple(arr.shape)}，配置需要 {shape}")


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """GPTConfig 对应的全部参数名与形状（顺序同模型的 state_dict，含共享的 out_head.weight）。"""
    c, v = cfg.emb_dim, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (v, c), "pos_emb.weight": (cfg.context_length, c)}
    for i in range(cfg.n_layers):
        p = f"trf_blocks.{i}."
        for name in ("W_query", "W_key", "W_value"):
            shapes[f"{p}att.{name}.weight"] = (c, c)
            if cfg.qkv_bias:
                shapes[f"{p}att.{name}.bias"] = (c,)
        shapes.update({
            f"{p}att.out_proj.weight": (c, c), f"{p}att.out_proj.bias": (c,),
            f"{p}ff.layers.0.weight": (4 * c, c), f"{p}ff.layers.0.bias": (4 * c,),
            f"{p}ff.layers.2.weight": (c, 4 * c), f"{p}ff.layers.2.bias": (c,),
            f"{p}norm1.scale": (c,), f"{p}norm1.shift": (c,), f"{p}norm2.scale": (c,), f"{p}norm2.shift": (c,),
        })
    shapes.update({"final_norm.scale": (c,), "final_norm.shift": (c,), "out_head.weight": (v, c)})
    return shapes


# ---------------------------------------------------------------------------- 读目录
def read_hf_config(path: str | Path) -> dict[str, Any]:
    p = Path(path) / CONFIG_NAME
    if not p.is_file():
        raise HFConversionError(f"{path} 不是 Hugging Face 模型目录：缺少 {CONFIG_NAME}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HFConversionError(f"{p} 不是合法的 JSON：{e}") from None


def read_hf_weights(path: str | Path) -> dict[str, np.ndarray]:
    """读 model.safetensors；只有分片索引时按 weight_map 读取全部分片。"""
    d = Path(path)
    if (d / WEIGHTS_NAME).is_file():
        return load_arrays(d / WEIGHTS_NAME)
    if (d / INDEX_NAME).is_file():
        weight_map = json.loads((d / INDEX_NAME).read_text(encoding="utf-8")).get("weight_map", {})
        state: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(load_arrays(d / shard))
        return state
    hint = "（目录里只有 pytorch_model.bin：请改用 safetensors 格式）" if (d / "pytorch_model.bin").exists() else ""
    raise HFConversionError(f"{d} 中找不到 {WEIGHTS_NAME}{hint}")


def read_hf_gpt2(path: str | Path, drop_rate: float | None = None) -> tuple[GPTConfig, dict[str, np.ndarray]]:
    """读取 HF 格式的 GPT-2 目录，返回 (GPTConfig, 本项目参数名 → 数组)。"""
    cfg = config_from_hf(read_hf_config(path), drop_rate)
    return cfg, convert_hf_state(read_hf_weights(path), cfg)


__all__ = [
    "HFConversionError", "config_from_hf", "convert_hf_state", "expected_shapes", "read_hf_config", "read_hf_gpt2",
    "read_hf_weights",
]
