"""GPT 模型（原书第 4 章的结构），建立在 tinytensor 上。

    词元嵌入 + 位置嵌入 → dropout → n_layers 个 Transformer 块 → 最终 LayerNorm → 输出层 → logits

每个块是 pre-norm 结构：x = x + Drop(Attn(LN1(x)))；x = x + Drop(FF(LN2(x)))。
参数名与 gpt_torch/model.py 完全相同，检查点可以在两条轨道之间直接互换。
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import tinytensor as tt
from tinytensor import nn
from tinytensor.nn import functional as F

from .attention import MultiHeadAttention
from .checkpoint import check_state_shapes, load_model_state, save_model_state
from .config import GPTConfig
from .kv_cache import KVCache


class LayerNorm(nn.Module):
    """层归一化，参数名沿用原书：scale（乘）与 shift（加）；方差为有偏估计，eps = 1e-5。"""

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(np.ones(emb_dim, dtype=tt.get_default_dtype()))
        self.shift = nn.Parameter(np.zeros(emb_dim, dtype=tt.get_default_dtype()))

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class FeedForward(nn.Module):
    """前馈网络：C → 4C → GELU → C。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        c = cfg.emb_dim
        self.layers = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(approximate="tanh"), nn.Linear(4 * c, c))

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    """一个 pre-norm Transformer 块：注意力与前馈各带一条残差连接。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: tt.Tensor, cache: KVCache | None = None, layer: int = 0) -> tt.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), cache, layer))  # (B, T, C)
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))  # (B, T, C)
        return x


class GPTModel(nn.Module):
    """GPT：输入词元 id (B, T)，输出下一个词元的 logits (B, T, V)。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # 权重共享：同一个 Parameter

    def forward(self, idx: Any, cache: KVCache | None = None) -> tt.Tensor:
        """idx：(B, T) 的整数 id，返回 logits (B, T, V)。cache 不为 None 时只计算新词元，并把键值写入缓存。"""
        return self.out_head(self.features(idx, cache))  # (B, T, V)

    def loss(self, idx: Any, targets: Any) -> tt.Tensor:
        """训练用：平均交叉熵损失。输出层与交叉熵融合计算（F.linear_cross_entropy），不保存 (B, T, V) 的 logits；
        结果与 F.cross_entropy(model(idx) 展平, targets 展平) 相同。"""
        return F.linear_cross_entropy(self.features(idx), self.out_head.weight, targets)

    def features(self, idx: Any, cache: KVCache | None = None) -> tt.Tensor:
        """输出层之前的表示（经过最终 LayerNorm），形状 (B, T, C)。"""
        ids = np.asarray(idx.data if isinstance(idx, tt.Tensor) else idx)
        if ids.ndim != 2:
            raise ValueError(f"输入 idx 必须是 (B, T) 的二维整数数组，收到形状 {ids.shape}")
        t = ids.shape[1]
        start = 0 if cache is None else cache.pos
        if start + t > self.cfg.context_length:
            raise ValueError(
                f"输入长度 {start + t} 超过了模型的上下文长度 context_length={self.cfg.context_length}；"
                "请截断输入（generate 会自动只保留最后 context_length 个词元）"
            )
        if cache is not None and tt.is_grad_enabled():
            raise RuntimeError("使用 KV 缓存的前向只用于生成，请在 tt.no_grad() 下调用")
        tok = self.tok_emb(ids)  # (B, T, C)
        pos = self.pos_emb(np.arange(start, start + t))  # (T, C)
        x = self.drop_emb(tok + pos)  # (B, T, C)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(t)
        return self.final_norm(x)  # (B, T, C)

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """为生成分配一个空的 KV 缓存（长度上限为 context_length）。"""
        c = self.cfg
        dtype = self.tok_emb.weight.dtype
        return KVCache(c.n_layers, batch_size, c.n_heads, c.context_length, c.head_dim, dtype)

    def num_parameters(self) -> int:
        """参数个数（共享的权重只算一次，与 torch 的 sum(p.numel() for p in model.parameters()) 相同）。"""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------ 检查点（格式见 checkpoint.py）
    def state_arrays(self) -> dict[str, np.ndarray]:
        """参数名 → NumPy 数组（与模型共享内存）。"""
        return {k: v.data for k, v in self.state_dict().items()}

    def load_arrays(self, state: dict[str, Any]) -> None:
        """按名字载入参数；键或形状不一致时报出键名与两边的形状。"""
        check_state_shapes({k: v.shape for k, v in self.state_dict().items()}, state, tied=self.cfg.tie_weights)
        self.load_state_dict(state)

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """保存为 safetensors + config.json（可被 gpt_torch 直接读取）。"""
        return save_model_state(directory, self.state_arrays(), self.cfg, extra)

    @classmethod
    def load(cls, directory: str | Path, dtype: Any = None) -> GPTModel:
        """从检查点目录（任一轨道保存的）建立模型。"""
        state, cfg, _ = load_model_state(directory)
        model = cls(cfg)
        if dtype is not None:
            model.to(dtype)
        model.load_arrays(state)
        return model
