"""GPT 模型的 PyTorch 版本：结构、参数名与 gpt_numpy/model.py 完全相同。

    词元嵌入 + 位置嵌入 → dropout → n_layers 个 Transformer 块 → 最终 LayerNorm → 输出层 → logits
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from llmcore.checkpoint import check_state_shapes, load_model_state, save_model_state
from llmcore.config import GPTConfig

from .attention import MultiHeadAttention
from .kv_cache import KVCache


class LayerNorm(nn.Module):
    """层归一化，参数名沿用原书：scale 与 shift；有偏方差，eps = 1e-5。"""

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class FeedForward(nn.Module):
    """前馈网络：C → 4C → GELU(tanh) → C。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        c = cfg.emb_dim
        self.layers = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(approximate="tanh"), nn.Linear(4 * c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """pre-norm Transformer 块。"""

    def __init__(self, cfg: GPTConfig, attn_impl: str = "sdpa") -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
            attn_impl=attn_impl,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cache, layer))  # (B, T, C)
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))  # (B, T, C)
        return x


def assert_ids_in_vocab_async(idx: torch.Tensor, vocab_size: int) -> None:
    """设备端断言所有 id 都在 [0, vocab_size) 内，不把数据取回 CPU（CPU 张量上立即报错，GPU 上在下一次同步时报错）。"""
    ok = ((idx >= 0) & (idx < vocab_size)).all()
    torch._assert_async(ok, f"词元 id 超出嵌入表范围 [0, {vocab_size})")


class GPTModel(nn.Module):
    """GPT：输入词元 id (B, T)，输出 logits (B, T, V)。"""

    def __init__(self, cfg: GPTConfig, attn_impl: str = "sdpa") -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList([TransformerBlock(cfg, attn_impl) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # 权重共享

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """idx：(B, T) 的整数 id，返回 logits (B, T, V)。"""
        return self.out_head(self.features(idx, cache))  # (B, T, V)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """训练用：平均交叉熵损失（与 gpt_numpy 的同名方法结果相同）。"""
        logits = self(idx)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def features(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """输出层之前的表示（经过最终 LayerNorm），形状 (B, T, C)。"""
        if idx.ndim != 2:
            raise ValueError(f"输入 idx 必须是 (B, T) 的二维整数张量，收到形状 {tuple(idx.shape)}")
        t = idx.shape[1]
        start = 0 if cache is None else cache.pos
        if start + t > self.cfg.context_length:
            raise ValueError(
                f"输入长度 {start + t} 超过了模型的上下文长度 context_length={self.cfg.context_length}；"
                "请截断输入（generate 会自动只保留最后 context_length 个词元）"
            )
        v = self.cfg.vocab_size
        if idx.numel() and not torch.compiler.is_compiling():  # torch.compile 里不检查（会打断计算图）
            if idx.device.type == "cpu":
                if int(idx.min()) < 0 or int(idx.max()) >= v:
                    bad = int(idx[(idx < 0) | (idx >= v)][0])
                    raise IndexError(f"词元 id {bad} 超出嵌入表范围 [0, {v})")
            else:  # GPU 上取回数据会强制同步：改用设备端的异步断言，越界时在下一次同步处报错
                assert_ids_in_vocab_async(idx, v)
        tok = self.tok_emb(idx)  # (B, T, C)
        pos = self.pos_emb(torch.arange(start, start + t, device=idx.device))  # (T, C)
        x = self.drop_emb(tok + pos)  # (B, T, C)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(t)
        return self.final_norm(x)  # (B, T, C)

    def new_cache(self, batch_size: int = 1) -> KVCache:
        c = self.cfg
        w = self.tok_emb.weight
        return KVCache(c.n_layers, batch_size, c.n_heads, c.context_length, c.head_dim, w.dtype, w.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------ 检查点（格式见 llmcore/checkpoint.py）
    def state_arrays(self) -> dict[str, np.ndarray]:
        """参数名 → NumPy 数组（bf16/fp16 参数转成 float32 保存）。"""
        out = {}
        for k, v in self.state_dict().items():
            t = v.detach().cpu()
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()
            out[k] = t.numpy()
        return out

    def load_arrays(self, state: dict[str, Any]) -> None:
        """按名字载入参数（NumPy 数组或张量）；键或形状不一致时报出键名与两边的形状。"""
        own = self.state_dict()
        check_state_shapes({k: tuple(v.shape) for k, v in own.items()}, state, tied=self.cfg.tie_weights)
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(torch.as_tensor(np.asarray(state[k]) if not isinstance(state[k], torch.Tensor) else state[k]))

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """保存为 safetensors + config.json（可被 gpt_numpy 直接读取）。"""
        return save_model_state(directory, self.state_arrays(), self.cfg, extra)

    @classmethod
    def load(
        cls, directory: str | Path, dtype: torch.dtype | None = None, device: Any = None, attn_impl: str = "sdpa"
    ) -> GPTModel:
        """从检查点目录（任一轨道保存的）建立模型。"""
        state, cfg, _ = load_model_state(directory)
        model = cls(cfg, attn_impl=attn_impl)
        if dtype is not None:
            model.to(dtype)
        model.load_arrays(state)
        if device is not None:
            model.to(device)
        return model
