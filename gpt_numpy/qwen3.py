"""Qwen3 的 NumPy 实现（推理用，不建计算图），参数名与 Hugging Face 的 Qwen3ForCausalLM 相同。

与我们的 GPT（gpt_numpy/model.py）相比，每一处变化：

==============  ================================  =====================================================
部件             GPT-2 / 我们的 GPT                  Qwen3
==============  ================================  =====================================================
归一化           LayerNorm（减均值、除标准差、乘加）   RMSNorm（只除均方根、乘权重，没有平移与偏置）
位置信息         学到的位置嵌入表，加在输入上          RoPE：在每层的注意力里按位置旋转 q、k
注意力头         每个查询头有自己的 k、v              分组查询注意力 (GQA)：每 nh/nkv 个查询头共用一组 k、v
q、k             直接做点积                          先对每个头做 RMSNorm（QK-norm），再旋转、点积
前馈网络         C → 4C → GELU → C                  SwiGLU：down(silu(gate(x)) · up(x))
偏置             线性层都有偏置                       全部没有偏置
输出层           与嵌入共享（我们的默认）              与嵌入共享（0.6B、1.7B、4B；更大的不共享）
==============  ================================  =====================================================

生成时的两处提速：q/k/v 三个投影拼成一个矩阵、gate/up 拼成一个矩阵，一次矩阵乘算完（结果与分开算相同）；
线性层的权重可以存成 float32、int8 或 bf16（gpt_numpy/quant.py），int8/bf16 由 numba 内核直接读。
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from llmcore.qwen3.config import Qwen3Config
from llmcore.qwen3.weights import EMBED, LM_HEAD, Qwen3Checkpoint, expected_shapes
from tinytensor.kernels.decode_attention import decode_attention, grouped_attention_numpy
from tinytensor.kernels.rms_norm import rms_norm_fwd

from .quant import SCHEMES, BF16Weight, Int8Weight, Weight, make_weight


class Qwen3KVCache:
    """每层预分配的键值缓存，形状 (B, nkv, max_len, hd)：GQA 只存 nkv 个头，比 nh 个头省 nh/nkv 倍。

    ``pos`` 可以改小（多轮对话复用公共前缀时），之后写入的键值覆盖旧的。RoPE 是相对位置，
    没有 GPT 那种“窗口一滑就全部失效”的问题，但缓存写满后本实现不滑动，生成就此停止。
    """

    def __init__(self, cfg: Qwen3Config, batch_size: int, max_len: int, dtype: Any) -> None:
        shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.keys = [np.zeros(shape, dtype) for _ in range(cfg.num_hidden_layers)]
        self.values = [np.zeros(shape, dtype) for _ in range(cfg.num_hidden_layers)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        end = self.pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV 缓存已满：已有 {self.pos} 个词元，再写 {k.shape[2]} 个会超过上限 {self.max_len}")
        self.keys[layer][:, :, self.pos : end] = k
        self.values[layer][:, :, self.pos : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def reset(self) -> None:
        self.pos = 0


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm：x / sqrt(mean(x²) + eps) · w（最后一维）。融合内核与 NumPy 参考见 tinytensor/kernels/rms_norm.py。"""
    return rms_norm_fwd(x, w, eps)


def rope_cos_sin(positions: np.ndarray, head_dim: int, base: float, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """位置 (T,) → cos、sin (T, hd/2)：第 i 对维度的角速度是 base^(-2i/hd)。"""
    inv_freq = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x (..., T, hd)：前一半与后一半配对成复数 (x1 + i·x2)，乘以 e^{iθ}（与 HF 的 rotate_half 写法相同）。"""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _check_scheme(scheme: str, dtype: Any) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"未知的权重格式 {scheme!r}，可选：{', '.join(SCHEMES)}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype 应为 float32 或 float64，收到 {np.dtype(dtype)}")
    if scheme != "fp32" and np.dtype(dtype) != np.float32:
        raise ValueError(f"{scheme} 权重只能配 float32 计算，收到 dtype={np.dtype(dtype)}")


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class Qwen3Layer:
    """一层解码器：x += o_proj(注意力(RMSNorm(x)))；x += down(silu(gate(h)) · up(h))，h = RMSNorm(x)。"""

    def __init__(self, cfg: Qwen3Config, p: dict[str, np.ndarray], prefix: str, scheme: str,
                 group: int | None) -> None:
        self.cfg = cfg
        g = p.get
        self.input_norm = g(prefix + "input_layernorm.weight")
        self.post_norm = g(prefix + "post_attention_layernorm.weight")
        self.q_norm = g(prefix + "self_attn.q_norm.weight")
        self.k_norm = g(prefix + "self_attn.k_norm.weight")
        a = prefix + "self_attn."
        qkv = np.concatenate([p[a + "q_proj.weight"], p[a + "k_proj.weight"], p[a + "v_proj.weight"]])
        self.qkv = make_weight(qkv, scheme, group)
        self.o_proj = make_weight(p[a + "o_proj.weight"], scheme, group)
        m = prefix + "mlp."
        self.gate_up = make_weight(np.concatenate([p[m + "gate_proj.weight"], p[m + "up_proj.weight"]]), scheme, group)
        self.down = make_weight(p[m + "down_proj.weight"], scheme, group)

    def __call__(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, cache: Qwen3KVCache | None,
                 layer: int) -> np.ndarray:
        c = self.cfg
        b, t, _ = x.shape
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        h = rms_norm(x, self.input_norm, c.rms_norm_eps)
        qkv = self.qkv.matmul(h.reshape(b * t, -1)).reshape(b, t, nh + 2 * nkv, hd)
        q = rms_norm(qkv[:, :, :nh], self.q_norm, c.rms_norm_eps).transpose(0, 2, 1, 3)  # (B, nh, T, hd)
        k = rms_norm(qkv[:, :, nh : nh + nkv], self.k_norm, c.rms_norm_eps).transpose(0, 2, 1, 3)  # (B, nkv, T, hd)
        v = qkv[:, :, nh + nkv :].transpose(0, 2, 1, 3)  # (B, nkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(layer, k, v)  # (B, nkv, S, hd)，S = start + T
        if cache is not None and t == 1:  # 逐个解码：融合内核直接读整块缓存的前 S 个位置
            scale = 1.0 / np.sqrt(hd)
            ctx = decode_attention(q[:, :, 0], cache.keys[layer], cache.values[layer], scale, start + 1)
            ctx = ctx.reshape(b, 1, nh * hd)
        else:
            ctx = grouped_attention_numpy(q, k, v, 1.0 / np.sqrt(hd), start)  # (B, nh, T, hd)
            ctx = ctx.transpose(0, 2, 1, 3).reshape(b, t, nh * hd)
        x = x + self.o_proj.matmul(ctx.reshape(b * t, -1)).reshape(b, t, -1)
        h = rms_norm(x, self.post_norm, c.rms_norm_eps)
        gu = self.gate_up.matmul(h.reshape(b * t, -1))
        f = c.intermediate_size
        return x + self.down.matmul(silu(gu[:, :f]) * gu[:, f:]).reshape(b, t, -1)


class Qwen3Model:
    """Qwen3ForCausalLM 的 NumPy 版：``infer(ids, cache)`` 返回 logits。

    scheme：线性层与嵌入/输出层权重的存法，"fp32"（dtype 可为 float32 或 float64）、"int8"、"bf16"。
    归一化权重、KV 缓存与激活值总是 float32（或 float64）。
    """

    def __init__(self, cfg: Qwen3Config, layers: list[Qwen3Layer], norm: np.ndarray, embed: Weight,
                 head: Weight, scheme: str, dtype: Any) -> None:
        self.cfg, self.scheme, self.dtype = cfg, scheme, np.dtype(dtype)
        self.layers, self.norm, self.embed, self.head = layers, norm, embed, head

    @classmethod
    def from_arrays(cls, cfg: Qwen3Config, params: dict[str, np.ndarray], scheme: str = "fp32",
                    dtype: Any = np.float32, group: int | None = 128) -> Qwen3Model:
        """由 {HF 键名: 数组} 建立模型（键名与形状不对时报出是哪一个）。"""
        _check_scheme(scheme, dtype)
        want = expected_shapes(cfg)
        for k, shape in want.items():
            if k not in params:
                raise ValueError(f"参数里缺少 {k}")
            if tuple(params[k].shape) != shape:
                raise ValueError(f"参数 {k} 的形状是 {tuple(params[k].shape)}，应为 {shape}")
        wdt = np.dtype(dtype) if scheme == "fp32" else np.float32
        p = {k: np.asarray(params[k], dtype=dtype) for k in want}
        layers = [Qwen3Layer(cfg, p, f"model.layers.{i}.", scheme, group) for i in range(cfg.num_hidden_layers)]
        embed = make_weight(np.asarray(params[EMBED], wdt), scheme, group)
        head = embed if cfg.tie_word_embeddings else make_weight(np.asarray(params[LM_HEAD], wdt), scheme, group)
        return cls(cfg, layers, p["model.norm.weight"], embed, head, scheme, dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path, scheme: str = "fp32", dtype: Any = np.float32,
                        group: int | None = 128) -> Qwen3Model:
        """从 Hugging Face 格式的目录加载。权重逐个张量读取、转换（bf16 → float32 或 → int8），
        大的嵌入表按行分块量化，峰值内存约为最终模型大小加一层的权重。"""
        _check_scheme(scheme, dtype)
        ckpt = Qwen3Checkpoint(directory)
        cfg = ckpt.config
        wdt = np.dtype(dtype) if scheme == "fp32" else np.float32

        def load_matrix(key: str) -> Weight:
            shape = ckpt.tensors[key].shape
            if scheme == "int8":
                return Int8Weight.from_row_chunks(shape, lambda lo, hi: ckpt.get_rows(key, lo, hi), group)
            if scheme == "bf16" and ckpt.is_bf16(key):
                return BF16Weight(np.array(ckpt.raw(key)))  # 磁盘上就是 bf16：原样拷进内存
            return make_weight(ckpt.get(key, wdt), scheme, group)

        embed = load_matrix(EMBED)
        layers = []
        for i in range(cfg.num_hidden_layers):
            prefix = f"model.layers.{i}."
            p = {k: ckpt.get(k, dtype) for k in ckpt.keys() if k.startswith(prefix)}
            layers.append(Qwen3Layer(cfg, p, prefix, scheme, group))
            del p
        head = embed if cfg.tie_word_embeddings else load_matrix(LM_HEAD)
        return cls(cfg, layers, ckpt.get("model.norm.weight", dtype), embed, head, scheme, dtype)

    # ------------------------------------------------------------ 前向
    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> Qwen3KVCache:
        """分配 KV 缓存；max_len 默认取 min(上下文长度, 4096)（0.6B 每 1000 个词元约 112 MB，float32）。"""
        max_len = min(self.cfg.max_position_embeddings, 4096) if max_len is None else max_len
        if not 1 <= max_len <= self.cfg.max_position_embeddings:
            raise ValueError(f"max_len 应在 [1, {self.cfg.max_position_embeddings}] 内，收到 {max_len}")
        return Qwen3KVCache(self.cfg, batch_size, max_len, self.dtype)

    def infer(self, idx: Any, cache: Qwen3KVCache | None = None, last_only: bool = True) -> np.ndarray:
        """ids (B, T) → logits：last_only=True 时 (B, V)（生成只需最后一个位置），否则 (B, T, V)。

        有缓存时 ids 只含新词元，位置从 cache.pos 接着数，算完后 cache.pos 前移 T。
        """
        ids = np.asarray(idx)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"输入应为 (B, T) 且 T ≥ 1 的整数数组，收到形状 {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"输入应为整数词元 id，收到 {ids.dtype}")
        v = self.cfg.vocab_size
        if ids.min() < 0 or ids.max() >= v:
            bad = int(ids[(ids < 0) | (ids >= v)].ravel()[0])
            raise IndexError(f"词元 id {bad} 超出词表范围 [0, {v})")
        start = 0 if cache is None else cache.pos
        t = ids.shape[1]
        limit = cache.max_len if cache is not None else self.cfg.max_position_embeddings
        if start + t > limit:
            raise ValueError(f"输入到位置 {start + t}，超过了{'KV 缓存' if cache else '模型的上下文'}长度 {limit}")
        x = self.embed.rows(ids).astype(self.dtype, copy=False)  # (B, T, C)
        cos, sin = rope_cos_sin(np.arange(start, start + t), self.cfg.head_dim, self.cfg.rope_theta, self.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        if cache is not None:
            cache.pos += t
        if last_only:
            x = x[:, -1:]
        x = rms_norm(x, self.norm, self.cfg.rms_norm_eps)
        b, tt = x.shape[:2]
        logits = self.head.matmul(x.reshape(b * tt, -1)).reshape(b, tt, -1)
        return logits[:, 0] if last_only else logits

    __call__ = infer

    def step(self, ids: np.ndarray, cache: Qwen3KVCache) -> np.ndarray:
        """生成循环用：新词元 (B, T) → 最后位置的 logits (B, V)。"""
        return self.infer(ids, cache, last_only=True)

    def weight_bytes(self) -> int:
        """模型权重实际占用的字节数（共享的嵌入/输出层只算一次）。"""
        n = self.embed.nbytes + self.norm.nbytes
        if self.head is not self.embed:
            n += self.head.nbytes
        for layer in self.layers:
            n += sum(w.nbytes for w in (layer.qkv, layer.o_proj, layer.gate_up, layer.down))
            n += sum(a.nbytes for a in (layer.input_norm, layer.post_norm, layer.q_norm, layer.k_norm))
        return n


def load_qwen3(directory: str | Path, scheme: str = "fp32", group: int | None = 128) -> Qwen3Model:
    """命令行用：加载并在标准错误上报告权重大小。"""
    model = Qwen3Model.from_pretrained(directory, scheme=scheme, group=group)
    print(f"已加载 {directory}（{scheme}，权重 {model.weight_bytes() / 2**20:,.0f} MiB）", file=sys.stderr)
    return model
