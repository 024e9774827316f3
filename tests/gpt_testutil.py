"""GPT 测试共用的小工具：小配置、随机化参数、默认精度切换、自写的 HF GPT-2 检查点与参考前向。"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import tinytensor as tt
from llmcore.config import GPTConfig


def tiny_cfg(**kw: Any) -> GPTConfig:
    """测试用的小模型：V=37，T_max=12，C=16，2 层 4 头，dropout 0。"""
    base = dict(vocab_size=37, context_length=12, emb_dim=16, n_heads=4, n_layers=2, drop_rate=0.0)
    return GPTConfig(**{**base, **kw})


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """临时改变 tinytensor 的默认浮点类型，退出时恢复。"""
    old = tt.get_default_dtype()
    tt.set_default_dtype(dtype)
    try:
        yield
    finally:
        tt.set_default_dtype(old)


def randomize(model: Any, seed: int, scale: float = 0.3) -> None:
    """把 gpt_numpy 模型的所有参数改成随机值（LayerNorm 的 scale 在 1 附近），让每个参数都起作用。"""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        noise = rng.normal(0.0, scale, p.shape).astype(p.dtype)
        p.data[...] = (1.0 + noise) if name.endswith(".scale") else noise * (3.0 if "emb" in name else 1.0)


def numpy_model(cfg: GPTConfig, seed: int = 0) -> Any:
    """按种子建一个参数随机化过的 gpt_numpy 模型（精度为当前默认精度）。"""
    from gpt_numpy.model import GPTModel

    tt.manual_seed(seed)
    m = GPTModel(cfg)
    randomize(m, seed)
    return m


def batch(cfg: GPTConfig, seed: int, b: int = 2, t: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """随机的 (输入, 目标) 词元 id，形状 (B, T)。"""
    rng = np.random.default_rng(1000 + seed)
    t = cfg.context_length if t is None else t
    return rng.integers(0, cfg.vocab_size, (b, t)), rng.integers(0, cfg.vocab_size, (b, t))


# ---------------------------------------------------------------------------- HF GPT-2 布局
def hf_config(n_embd: int = 16, n_layer: int = 2, n_head: int = 4, n_positions: int = 12, vocab_size: int = 37,
              **extra: Any) -> dict[str, Any]:
    """与 Hugging Face GPT2Config.to_dict() 相同字段的 config.json 内容。"""
    cfg = {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": n_positions, "n_embd": n_embd,
        "n_head": n_head, "n_inner": None, "n_layer": n_layer, "n_positions": n_positions,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True, "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "torch_dtype": "float32", "transformers_version": "4.44.0", "use_cache": True, "vocab_size": vocab_size,
    }
    cfg.update(extra)
    return cfg


def hf_state(cfg: dict[str, Any], seed: int = 0, prefix: str = "", masks: bool = True) -> dict[str, np.ndarray]:
    """随机的 GPT-2 权重，键名与形状完全按 HF 布局（Conv1D 权重存为 (in, out)）。"""
    rng = np.random.default_rng(seed)
    c, v, t, n = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]

    def r(*shape: int, s: float = 0.3) -> np.ndarray:
        return rng.normal(0.0, s, shape).astype(np.float32)

    st = {"wte.weight": r(v, c, s=1.0), "wpe.weight": r(t, c, s=1.0)}
    for i in range(n):
        h = f"h.{i}."
        st.update({
            h + "ln_1.weight": 1 + r(c, s=0.1), h + "ln_1.bias": r(c, s=0.1),
            h + "attn.c_attn.weight": r(c, 3 * c), h + "attn.c_attn.bias": r(3 * c),
            h + "attn.c_proj.weight": r(c, c), h + "attn.c_proj.bias": r(c),
            h + "ln_2.weight": 1 + r(c, s=0.1), h + "ln_2.bias": r(c, s=0.1),
            h + "mlp.c_fc.weight": r(c, 4 * c), h + "mlp.c_fc.bias": r(4 * c),
            h + "mlp.c_proj.weight": r(4 * c, c), h + "mlp.c_proj.bias": r(c),
        })
        if masks:
            st[h + "attn.bias"] = np.tril(np.ones((t, t), dtype=np.float32))[None, None]
            st[h + "attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    st.update({"ln_f.weight": 1 + r(c, s=0.1), "ln_f.bias": r(c, s=0.1)})
    return {prefix + k: a for k, a in st.items()}


def write_hf_dir(path: Path, cfg: dict[str, Any], state: dict[str, np.ndarray]) -> Path:
    """像 save_pretrained 一样写出 config.json + model.safetensors。"""
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def gpt2_reference_logits(st: dict[str, np.ndarray], n_head: int, ids: np.ndarray) -> np.ndarray:
    """独立的 GPT-2 前向（float64，直接用 HF 布局的数组；Conv1D 即 x @ W + b），返回 logits (B, T, V)。"""
    g = {k.removeprefix("transformer."): np.asarray(a, dtype=np.float64) for k, a in st.items()}
    b, t = ids.shape
    x = g["wte.weight"][ids] + g["wpe.weight"][:t]  # (B, T, C)
    c = x.shape[-1]
    hs = c // n_head
    causal = np.tril(np.ones((t, t), dtype=bool))
    i = 0
    while f"h.{i}.ln_1.weight" in g:
        p = f"h.{i}."
        a = _ln(x, g[p + "ln_1.weight"], g[p + "ln_1.bias"])
        qkv = a @ g[p + "attn.c_attn.weight"] + g[p + "attn.c_attn.bias"]  # (B, T, 3C)
        q, k, v = (z.reshape(b, t, n_head, hs).transpose(0, 2, 1, 3) for z in np.split(qkv, 3, axis=-1))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
        s = np.where(causal, s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        o = (w @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
        x = x + o @ g[p + "attn.c_proj.weight"] + g[p + "attn.c_proj.bias"]
        m = _ln(x, g[p + "ln_2.weight"], g[p + "ln_2.bias"])
        m = _gelu(m @ g[p + "mlp.c_fc.weight"] + g[p + "mlp.c_fc.bias"])
        x = x + m @ g[p + "mlp.c_proj.weight"] + g[p + "mlp.c_proj.bias"]
        i += 1
    x = _ln(x, g["ln_f.weight"], g["ln_f.bias"])
    return x @ g["wte.weight"].T


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """临时设置 torch 的线程数。小模型用 1 个线程快得多（机器繁忙时多线程互相等待，可慢 20 倍）。"""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
