"""GPT 模型（原书第 4 章的结构），建立在 tinytensor 上。

    词元嵌入 + 位置嵌入 → dropout → n_layers 个 Transformer 块 → 最终 LayerNorm → 输出层 → logits

每个块是 pre-norm 结构：x = x + Drop(Attn(LN1(x)))；x = x + Drop(FF(LN2(x)))。
参数名与 gpt_torch/model.py 完全相同，检查点可以在两条轨道之间直接互换。

模型有两条前向：``forward``（tinytensor 张量，建计算图，训练用）与 ``infer``（NumPy 数组，
不建计算图、不为反向保存任何东西，配合 KV 缓存，生成用）。生成一个新词元只是几十次小矩阵乘，
计算图节点的开销会占大头，所以生成走 ``infer``；两者用同一组参数，结果相同（只差浮点舍入的顺序，测试检查）。
``infer`` 的主体是 ``TransformerBlock.infer``：它把本块各子模块的权重取成一组普通数组（``BlockWeights``），
整块在数组上一口气算完——逐个解码时每层只有几次矩阵-向量乘，一层层调用子模块的 Python 开销就占到一成以上。
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import tinytensor as tt
from llmcore.checkpoint import check_state_shapes, load_model_state, save_model_state
from llmcore.config import GPTConfig
from tinytensor import kernels, nn
from tinytensor.kernels.decode_attention import cached_attention_mask, decode_attention
from tinytensor.nn import functional as F
from tinytensor.ops.fused import attention_core_fwd

from .attention import MultiHeadAttention
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

    def infer(self, x: np.ndarray) -> np.ndarray:
        """不建计算图的 LayerNorm（融合内核），x 的形状任意，沿最后一维归一化。"""
        rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
        return kernels.layer_norm_fwd(rows, self.scale.data, self.shift.data, self.eps)[0].reshape(x.shape)


class FeedForward(nn.Module):
    """前馈网络：C → 4C → GELU → C。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        c = cfg.emb_dim
        self.layers = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(approximate="tanh"), nn.Linear(4 * c, c))

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return self.layers(x)


class BlockWeights(NamedTuple):
    """一个 Transformer 块在生成时用到的全部权重（NumPy 数组，与模块共享内存；只有 QKV 是拼出来的新数组）。"""

    ln1_scale: np.ndarray
    ln1_shift: np.ndarray
    ln1_eps: float
    w_qkv: np.ndarray  # (3C, C)：W_query、W_key、W_value 上下拼接，一次矩阵乘算出 q、k、v
    b_qkv: np.ndarray | None  # (3C,)；没有 qkv 偏置时为 None
    w_out: np.ndarray  # out_proj (C, C)
    b_out: np.ndarray | None
    ln2_scale: np.ndarray
    ln2_shift: np.ndarray
    ln2_eps: float
    w_fc1: np.ndarray  # (4C, C)
    b_fc1: np.ndarray | None
    w_fc2: np.ndarray  # (C, 4C)
    b_fc2: np.ndarray | None
    n_heads: int


def _linear(x: np.ndarray, w: Any, b: np.ndarray | None) -> np.ndarray:
    """x (N, in) @ Wᵀ + b，W 存为 (out, in)：普通数组直接交给 BLAS（二维矩阵乘），
    量化的权重（gpt_numpy.quant 的 Int8Weight 等，有 ``matmul`` 方法）交给它自己的内核。

    浮点权重不包成 quant.Dense：Dense 在单行输入时走 numba 的矩阵-向量内核，那是为 Qwen3 的大矩阵写的；
    GPT 的矩阵小，BLAS 更快（small 模型逐个解码实测：BLAS 209 词元/秒，numba 内核 112–131）。"""
    out = x @ w.T if isinstance(w, np.ndarray) else w.matmul(x)
    if b is not None:
        out += b
    return out


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

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))  # (B, T, C)
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))  # (B, T, C)
        return x

    # 生成时四个大矩阵的存法：None 表示用模块里的浮点数组；gpt_numpy.quant.quantize_gpt 在这里放好现成的
    # 量化权重对象 {"qkv", "out", "fc1", "fc2"}（Int8Weight / BF16Weight），生成就走 int8 / bf16 内核，
    # 每次调用不必重新量化。它们是量化那一刻的快照：之后再改模块的权重，要重新调用 quantize_gpt。
    quantized: dict[str, Any] | None = None

    def infer_weights(self) -> BlockWeights:
        """按名字从子模块取出生成用的权重（LoRA 层的 .weight 是合并后的权重，同样适用）。"""
        att, (fc1, _, fc2) = self.att, self.ff.layers
        qkv = (att.W_query, att.W_key, att.W_value)
        qw = self.quantized or {
            "qkv": np.concatenate([lin.weight.data for lin in qkv]),
            "out": att.out_proj.weight.data, "fc1": fc1.weight.data, "fc2": fc2.weight.data,
        }  # fmt: skip

        def data(p: Any) -> np.ndarray | None:
            return None if p is None else p.data

        b_qkv = None if qkv[0].bias is None else np.concatenate([lin.bias.data for lin in qkv])
        return BlockWeights(
            self.norm1.scale.data, self.norm1.shift.data, self.norm1.eps,
            qw["qkv"], b_qkv, qw["out"], data(att.out_proj.bias),
            self.norm2.scale.data, self.norm2.shift.data, self.norm2.eps,
            qw["fc1"], data(fc1.bias), qw["fc2"], data(fc2.bias), att.num_heads,
        )  # fmt: skip

    def infer(self, x: np.ndarray, cache: KVCache | None = None, layer: int = 0) -> np.ndarray:
        """生成用的前向：x (B, T, C) → (B, T, C)，与 forward 是同一个块（生成时没有 dropout）。

        有缓存时 x 只含新词元：它们的键值写入缓存第 layer 层，第 i 个新词元只看到绝对位置 ≤ pos+i 的键。
        权重在一次生成之中不变，所以有缓存时 infer_weights() 只调用一次，结果存在这次生成的缓存里。
        """
        w = self.infer_weights() if cache is None else cache.packed(layer, self.infer_weights)
        b, t, c = x.shape
        nh = w.n_heads
        hs = c // nh
        x = np.ascontiguousarray(x).reshape(b * t, c)  # (B·T, C)：行都排成一列，矩阵乘是一次二维 BLAS 调用
        # 注意力分支：LN1 → 一次算出 q、k、v → 拆头 → （写缓存）→ 因果注意力 → 合并各头 → out_proj
        h = kernels.layer_norm_fwd(x, w.ln1_scale, w.ln1_shift, w.ln1_eps)[0]
        qkv = _linear(h, w.w_qkv, w.b_qkv)  # (B·T, 3C)
        q, k, v = qkv.reshape(b, t, 3, nh, hs).transpose(2, 0, 3, 1, 4)  # 各 (B, nh, T, hs)
        start = 0 if cache is None else cache.pos
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, pos+T, hs)
        scale = 1.0 / math.sqrt(hs)
        if cache is not None and t == 1:  # 逐个解码：融合内核直接读整块缓存的前 pos+1 个位置
            ctx = decode_attention(q[:, :, 0], cache.keys[layer], cache.values[layer], scale, start + 1)  # (B, nh, hs)
        else:
            causal = start == 0  # 从头算时是普通的因果掩码；接着缓存算时新词元之间才需要掩码
            mask = None if causal else cached_attention_mask(t, start)
            ctx, _ = attention_core_fwd(q, k, v, scale, is_causal=causal and t > 1, attn_mask=mask)
            ctx = ctx.transpose(0, 2, 1, 3)  # (B, T, nh, hs)
        x = x + _linear(ctx.reshape(b * t, c), w.w_out, w.b_out)  # 合并各头；残差（新数组，不改输入）
        # 前馈分支：LN2 → fc1 → GELU → fc2，原地加回残差
        h = kernels.layer_norm_fwd(x, w.ln2_scale, w.ln2_shift, w.ln2_eps)[0]
        x += _linear(kernels.gelu_fwd(_linear(h, w.w_fc1, w.b_fc1))[0], w.w_fc2, w.b_fc2)
        return x.reshape(b, t, c)


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
        """idx：(B, T) 的整数 id，返回 logits (B, T, V)。

        给出 cache 时走生成用的 ``infer``（只计算新词元并把键值写入缓存，不建计算图，须在 tt.no_grad() 下）。
        """
        if cache is not None:
            if tt.is_grad_enabled():
                raise RuntimeError("使用 KV 缓存的前向只用于生成，请在 tt.no_grad() 下调用")
            return tt.from_numpy(self.infer(idx, cache, last_only=False))
        return self.out_head(self.features(idx))  # (B, T, V)

    def loss(self, idx: Any, targets: Any) -> tt.Tensor:
        """训练用：平均交叉熵损失。输出层与交叉熵融合计算（F.linear_cross_entropy），不保存 (B, T, V) 的 logits；
        结果与 F.cross_entropy(model(idx) 展平, targets 展平) 相同。"""
        return F.linear_cross_entropy(self.features(idx), self.out_head.weight, targets)

    def _check_ids(self, idx: Any, start: int) -> np.ndarray:
        ids = np.asarray(idx.data if isinstance(idx, tt.Tensor) else idx)
        if ids.ndim != 2:
            raise ValueError(f"输入 idx 必须是 (B, T) 的二维整数数组，收到形状 {ids.shape}")
        if start + ids.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"输入长度 {start + ids.shape[1]} 超过了模型的上下文长度 context_length={self.cfg.context_length}；"
                "请截断输入（generate 会自动只保留最后 context_length 个词元）"
            )
        return ids

    def features(self, idx: Any) -> tt.Tensor:
        """输出层之前的表示（经过最终 LayerNorm），形状 (B, T, C)。"""
        ids = self._check_ids(idx, 0)
        tok = self.tok_emb(ids)  # (B, T, C)
        pos = self.pos_emb(np.arange(ids.shape[1]))  # (T, C)
        x = self.drop_emb(tok + pos)  # (B, T, C)
        for block in self.trf_blocks:
            x = block(x)
        return self.final_norm(x)  # (B, T, C)

    def infer(self, idx: Any, cache: KVCache | None = None, last_only: bool = True) -> np.ndarray:
        """生成用的前向（不建计算图）：返回最后一个位置的 logits (B, V)，last_only=False 时返回 (B, T, V)。

        有缓存时 idx 只含新词元：它们的键值写入缓存，位置从 cache.pos 接着数。
        """
        start = 0 if cache is None else cache.pos
        ids = self._check_ids(idx, start)
        vocab = self.cfg.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            bad = int(ids[(ids < 0) | (ids >= vocab)].ravel()[0])
            raise IndexError(f"词元 id {bad} 超出嵌入表范围 [0, {vocab})")
        t = ids.shape[1]
        with kernels.threads.blas_threads_for_matvec():  # 矩阵-向量乘由 BLAS 自己多线程（开了 CPU 调优时）
            x = self.tok_emb.weight.data[ids] + self.pos_emb.weight.data[start : start + t]  # (B, T, C)
            for i, block in enumerate(self.trf_blocks):
                x = block.infer(x, cache, i)
            if cache is not None:
                cache.advance(t)
            if last_only:
                x = x[:, -1]  # (B, C)：生成只需要最后一个位置
            h = self.final_norm.infer(x)
            head = self.out_head.weight.data if self.quantized_head is None else self.quantized_head
            return _linear(h.reshape(-1, h.shape[-1]), head, None).reshape(*h.shape[:-1], -1)  # (B, V) 或 (B, T, V)

    # 生成时输出层的存法：None 表示 out_head 的浮点权重；quantize_gpt 放好量化后的权重对象
    quantized_head: Any = None

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
