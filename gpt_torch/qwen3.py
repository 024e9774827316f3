"""Qwen3 的 PyTorch 实现，模块与参数名和 Hugging Face 的 Qwen3ForCausalLM 完全相同（state_dict 可直接互换）。

结构与 gpt_numpy/qwen3.py 一致（那里的文档逐项对比了它与 GPT-2 的不同）。GPU 上用 bf16 与
``F.scaled_dot_product_attention``（有 Flash/高效注意力内核时自动使用）；CPU 上默认 float32。
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmcore.qwen3.config import Qwen3Config
from llmcore.qwen3.weights import EMBED, LM_HEAD, Qwen3Checkpoint, expected_shapes


class Qwen3KVCache:
    """每层预分配的键值缓存 (B, nkv, max_len, hd)；``pos`` 可读写（与 NumPy 轨道的缓存接口相同）。"""

    def __init__(self, cfg: Qwen3Config, batch_size: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV 缓存已满：已有 {self.pos} 个词元，再写 {k.shape[2]} 个会超过上限 {self.max_len}")
        self.keys[layer][:, :, self.pos : end] = k
        self.values[layer][:, :, self.pos : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def reset(self) -> None:
        self.pos = 0


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight；在 float32 里算均方根（与 HF 相同），再转回输入精度。"""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """位置 (T,) → cos、sin (T, hd/2)，在 float64 里算角度再转成 dtype（与 NumPy 轨道相同）。"""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim))
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Qwen3Attention(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.cfg = cfg
        c, hd, nh, nkv = cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        self.q_proj = nn.Linear(c, nh * hd, bias=False)
        self.k_proj = nn.Linear(c, nkv * hd, bias=False)
        self.v_proj = nn.Linear(c, nkv * hd, bias=False)
        self.o_proj = nn.Linear(nh * hd, c, bias=False)
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Qwen3KVCache | None,
                layer: int) -> torch.Tensor:
        b, t, _ = x.shape
        cfg = self.cfg
        nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = self.q_norm(self.q_proj(x).view(b, t, nh, hd)).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_norm(self.k_proj(x).view(b, t, nkv, hd)).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(b, t, nkv, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)
        s = k.shape[2]
        g = nh // nkv
        k = k.repeat_interleave(g, dim=1)  # (B, nh, S, hd)：第 h 个查询头用第 h // g 组键值
        v = v.repeat_interleave(g, dim=1)
        if t == 1:
            ctx = F.scaled_dot_product_attention(q, k, v)
        elif start == 0:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = torch.arange(s, device=x.device)[None, :] <= (start + torch.arange(t, device=x.device))[:, None]
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(ctx.transpose(1, 2).reshape(b, t, nh * hd))


class Qwen3MLP(nn.Module):
    """SwiGLU：down(silu(gate(x)) · up(x))。"""

    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.self_attn = Qwen3Attention(cfg)
        self.mlp = Qwen3MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Qwen3KVCache | None,
                layer: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Body(nn.Module):
    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Qwen3DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen3ForCausalLM(nn.Module):
    """ids (B, T) → logits (B, T, V)；参数名即 HF 键名（model.layers.0.self_attn.q_proj.weight …）。"""

    def __init__(self, cfg: Qwen3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Qwen3Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, idx: torch.Tensor, cache: Qwen3KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"输入应为 (B, T) 且 T ≥ 1 的整数张量，收到形状 {tuple(idx.shape)}")
        v = self.cfg.vocab_size
        if int(idx.min()) < 0 or int(idx.max()) >= v:
            bad = int(idx[(idx < 0) | (idx >= v)].flatten()[0])
            raise IndexError(f"词元 id {bad} 超出词表范围 [0, {v})")
        start = 0 if cache is None else cache.pos
        t = idx.shape[1]
        limit = cache.max_len if cache is not None else self.cfg.max_position_embeddings
        if start + t > limit:
            raise ValueError(f"输入到位置 {start + t}，超过了{'KV 缓存' if cache else '模型的上下文'}长度 {limit}")
        x = self.model.embed_tokens(idx)
        pos = torch.arange(start, start + t, device=idx.device)
        cos, sin = rope_cos_sin(pos, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, cache, i)
        if cache is not None:
            cache.pos += t
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.model.norm(x))

    @torch.no_grad()
    def infer(self, idx: Any, cache: Qwen3KVCache | None = None, last_only: bool = True) -> np.ndarray:
        """与 NumPy 轨道同样的接口：NumPy ids → NumPy logits（bf16/fp16 转成 float32）。"""
        dev = self.lm_head.weight.device
        out = self.forward(torch.as_tensor(np.asarray(idx), dtype=torch.long, device=dev), cache, last_only)
        out = out[:, 0] if last_only else out
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        return out.cpu().numpy()

    def step(self, ids: np.ndarray, cache: Qwen3KVCache) -> np.ndarray:
        return self.infer(ids, cache, last_only=True)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> Qwen3KVCache:
        max_len = min(self.cfg.max_position_embeddings, 4096) if max_len is None else max_len
        if not 1 <= max_len <= self.cfg.max_position_embeddings:
            raise ValueError(f"max_len 应在 [1, {self.cfg.max_position_embeddings}] 内，收到 {max_len}")
        w = self.lm_head.weight
        return Qwen3KVCache(self.cfg, batch_size, max_len, w.dtype, w.device)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> Qwen3ForCausalLM:
        """从 HF 格式目录加载：逐个张量读取（bf16 原样转成 torch.bfloat16，不经 float32），直接放到目标设备。

        默认：有 GPU 时 bf16 放 GPU，否则 float32 放 CPU。
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        ckpt = Qwen3Checkpoint(directory)
        with torch.device("meta"):
            model = cls(ckpt.config)
        state = {}
        for key in expected_shapes(ckpt.config):
            if ckpt.is_bf16(key):
                t = torch.from_numpy(np.array(ckpt.raw(key))).view(torch.bfloat16)
            else:
                t = torch.from_numpy(ckpt.get(key, np.float32 if dtype != torch.float64 else np.float64))
            state[key] = t.to(device=device, dtype=dtype)
        if ckpt.config.tie_word_embeddings:
            state[LM_HEAD] = state[EMBED]
        model.load_state_dict(state, assign=True)
        if ckpt.config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        return model.eval()


def load_qwen3(directory: str | Path, dtype: str | None = None, device: str | None = None) -> Qwen3ForCausalLM:
    """命令行用：dtype 为 "fp32" / "bf16" / None（自动）。"""
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, None: None}.get(dtype, "bad")
    if dt == "bad":
        raise ValueError(f"PyTorch 轨道的权重格式只能是 fp32 或 bf16，收到 {dtype!r}")
    model = Qwen3ForCausalLM.from_pretrained(directory, dt, device)  # type: ignore[arg-type]
    w = model.lm_head.weight
    print(f"已加载 {directory}（{w.dtype}，{w.device}）", file=sys.stderr)
    return model


__all__ = ["Qwen3ForCausalLM", "Qwen3KVCache", "load_qwen3"]
