"""Qwen3 的结构参数：从 Hugging Face 的 config.json 读取。

只支持稠密的 `Qwen3ForCausalLM`（0.6B、1.7B、4B、8B、14B、32B 都是这个结构）；MoE 版本（Qwen3MoeForCausalLM）、
滑动窗口注意力、RoPE 缩放等变体读到时直接报错，说明读到的是什么、支持的是什么，而不是悄悄算错。
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM",)


@dataclass(frozen=True)
class Qwen3Config:
    """Qwen3 的结构参数（字段名与 Hugging Face 的 config.json 相同）。默认值是 Qwen3-0.6B。"""

    vocab_size: int = 151_936
    hidden_size: int = 1024
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    intermediate_size: int = 3072
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 40_960

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Qwen3 配置字段 {name} 应为正整数，收到 {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} 必须是 num_key_value_heads="
                f"{self.num_key_value_heads} 的整数倍（分组查询注意力）"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} 必须是偶数（RoPE 把每个头的维度两两配对旋转）")

    @property
    def n_groups(self) -> int:
        """每个键值头被几个查询头共用。"""
        return self.num_attention_heads // self.num_key_value_heads

    def num_parameters(self, count_tied_head: bool = False) -> int:
        """参数个数（共享的输出层只算一次；Qwen3-0.6B 为 596,049,920）；count_tied_head=True 时再算一遍输出层。"""
        c, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        nh, nkv = self.num_attention_heads, self.num_key_value_heads
        per_layer = c * hd * (2 * nh + 2 * nkv) + 3 * c * f + 2 * hd + 2 * c
        n = self.vocab_size * c + self.num_hidden_layers * per_layer + c
        if count_tied_head or not self.tie_word_embeddings:
            n += self.vocab_size * c
        return n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def tiny(cls, **overrides: Any) -> Qwen3Config:
        """测试与章节用的小结构（与 0.6B 同样的组件，只是尺寸小）。"""
        base: dict[str, Any] = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=128, rope_theta=10_000.0,
                    max_position_embeddings=256)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> Qwen3Config:
        """从 Hugging Face config.json 的内容建立配置；遇到不支持的结构报错。"""
        arch = d.get("architectures")
        if arch is not None:
            bad = [a for a in arch if a not in SUPPORTED_ARCHITECTURES]
            if bad:
                raise ValueError(
                    f"{source} 中的架构 {bad} 不受支持；本实现支持：{', '.join(SUPPORTED_ARCHITECTURES)}"
                    "（稠密的 Qwen3，例如 Qwen/Qwen3-0.6B）"
                )
        elif d.get("model_type") != "qwen3":
            raise ValueError(
                f"{source} 既没有 architectures 字段，model_type 也不是 'qwen3'（收到 {d.get('model_type')!r}）；"
                f"本实现支持：{', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        rope = d.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", "default")
        scaling = d.get("rope_scaling")
        scaled = scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")
        if rope_type != "default" or scaled:
            raise ValueError(f"{source} 使用了 RoPE 缩放（{rope_type!r} / {scaling!r}），本实现只支持默认的 RoPE")
        if d.get("use_sliding_window"):
            raise ValueError(f"{source} 开启了滑动窗口注意力 (use_sliding_window)，本实现只支持全注意力")
        if d.get("attention_bias"):
            raise ValueError(f"{source} 的 attention_bias 为 true；Qwen3 的注意力投影没有偏置，本实现不支持")
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source} 的激活函数是 {d.get('hidden_act')!r}，本实现只支持 'silu'（SwiGLU）")
        theta = rope.get("rope_theta", d.get("rope_theta", 10_000.0))
        try:
            return cls(
                vocab_size=d["vocab_size"],
                hidden_size=d["hidden_size"],
                num_hidden_layers=d["num_hidden_layers"],
                num_attention_heads=d["num_attention_heads"],
                num_key_value_heads=d.get("num_key_value_heads", d["num_attention_heads"]),
                head_dim=d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"],
                intermediate_size=d["intermediate_size"],
                rope_theta=float(theta),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                max_position_embeddings=d.get("max_position_embeddings", 40_960),
            )
        except KeyError as e:
            raise ValueError(f"{source} 缺少必需的字段 {e.args[0]!r}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Qwen3Config:
        """读取 config.json（可以给文件，也可以给所在目录）。"""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise FileNotFoundError(f"找不到 Qwen3 的配置文件 {p}")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} 不是合法的 JSON：{e}") from None
        return cls.from_hf_dict(d, str(p))
