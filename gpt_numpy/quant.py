"""线性层权重的三种存法：float32/float64（Dense）、int8 按组缩放（Int8Weight）、bf16（BF16Weight）。

三者接口相同：``matmul(x2d) -> x2d @ W.T``（W 形状 (N, K)，与 torch 的 nn.Linear 相同；int8 时输入也按组量化，
即 W8A8，见 int8_matmul.py）、
``rows(ids) -> W[ids]``（float32，嵌入表查表用：Qwen3 的嵌入与输出层共享同一个矩阵，量化后也只存一份），
``nbytes``（权重实际占的字节数）。内核在 tinytensor/kernels/int8_matmul.py。

``quantize_gpt(model, scheme)`` 把我们自己的 GPT（gpt_numpy.model.GPTModel）做一个量化副本：生成时走上面的
量化权重与内核，用来在训练好的、非随机的权重上量出量化对困惑度与 top-1 的影响。
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import numpy as np

from llmcore.qwen3.weights import float32_to_bf16
from tinytensor.kernels.int8_matmul import (
    SMALL_M,
    bf16_matmul,
    bf16_rows_to_float32,
    dequantize_int8,
    f32_matvec,
    int8_matmul,
    quantize_int8,
)

SCHEMES = ("fp32", "int8", "bf16")


class Weight(Protocol):
    shape: tuple[int, int]

    def matmul(self, x: np.ndarray) -> np.ndarray: ...

    def rows(self, ids: np.ndarray) -> np.ndarray: ...

    @property
    def nbytes(self) -> int: ...


class Dense:
    """普通的浮点权重 (N, K)，矩阵乘交给 BLAS。"""

    def __init__(self, w: np.ndarray) -> None:
        self.w = np.ascontiguousarray(w)
        self.shape = self.w.shape

    def matmul(self, x: np.ndarray) -> np.ndarray:
        if self.w.dtype == np.float32 and x.ndim == 2 and x.shape[0] <= SMALL_M:
            return f32_matvec(x, self.w)  # 生成时：按输出行切给线程的 numba 内核
        return x @ self.w.T

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return self.w[ids]

    def dense(self) -> np.ndarray:
        return self.w

    @property
    def nbytes(self) -> int:
        return self.w.nbytes


class Int8Weight:
    """int8 权重 + 每组一个 float32 缩放。"""

    def __init__(self, q: np.ndarray, scale: np.ndarray) -> None:
        self.q, self.scale = q, scale
        self.shape = q.shape

    @classmethod
    def from_float(cls, w: np.ndarray, group: int | None = 128) -> Int8Weight:
        k = w.shape[1]
        g = k if group is None or k % group else group  # 除不尽时退回按通道
        return cls(*quantize_int8(w, g))

    @classmethod
    def from_row_chunks(cls, shape: tuple[int, int], read_rows: Any, group: int | None = 128,
                        chunk: int = 8192) -> Int8Weight:
        """按行分块读取、量化（嵌入表 15 万行，避免一次得到整份 float32）。"""
        n, k = shape
        g = k if group is None or k % group else group
        q = np.empty((n, k), np.int8)
        scale = np.empty((n, k // g), np.float32)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            q[lo:hi], scale[lo:hi] = quantize_int8(read_rows(lo, hi), g)
        return cls(q, scale)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return int8_matmul(x.reshape(-1, x.shape[-1]), self.q, self.scale).reshape(*x.shape[:-1], -1)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        flat = np.asarray(ids).reshape(-1)
        out = np.stack([dequantize_int8(self.q, self.scale, int(i), int(i) + 1)[0] for i in flat]) if flat.size \
            else np.empty((0, self.shape[1]), np.float32)
        return out.reshape(*np.shape(ids), self.shape[1])

    def dense(self) -> np.ndarray:
        return dequantize_int8(self.q, self.scale)

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes


class BF16Weight:
    """bf16 权重（以 uint16 存放）。"""

    def __init__(self, w: np.ndarray) -> None:
        if w.dtype != np.uint16:
            w = float32_to_bf16(w)
        self.w = np.ascontiguousarray(w)
        self.shape = self.w.shape

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return bf16_matmul(x.reshape(-1, x.shape[-1]), self.w).reshape(*x.shape[:-1], -1)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        u = self.w[np.asarray(ids)].astype(np.uint32)
        u <<= 16
        return u.view(np.float32)

    def dense(self) -> np.ndarray:
        return bf16_rows_to_float32(self.w)

    @property
    def nbytes(self) -> int:
        return self.w.nbytes


def make_weight(w: np.ndarray, scheme: str, group: int | None = 128) -> Dense | Int8Weight | BF16Weight:
    """按方案包装一个 (N, K) 权重。"""
    if scheme == "fp32":
        return Dense(w)
    if scheme == "int8":
        return Int8Weight.from_float(w, group)
    if scheme == "bf16":
        return BF16Weight(np.asarray(w, np.float32))
    raise ValueError(f"未知的权重格式 {scheme!r}，可选：{', '.join(SCHEMES)}")


def quantize_gpt(model: Any, scheme: str, group: int | None = 128, include_head: bool = True) -> Any:
    """返回 GPT 的一个量化副本（原模型不变）：生成用的 ``infer`` 走真正的量化内核，训练用的 ``forward`` 用伪量化。

    - ``infer``：每个块的四个大矩阵（QKV、out_proj、fc1、fc2）与输出层存成 Int8Weight / BF16Weight，
      矩阵乘就是 Qwen3 用的那几个内核——int8 时激活也按组量化 (W8A8)，量出来的质量就是实际生成时的质量。
    - ``forward``（与 state_dict）：同样这些线性层的权重换成“量化再反量化”的浮点值（伪量化，fake quantization），
      激活不量化；可以保存成普通检查点，两条轨道都能读。
    """
    if scheme not in SCHEMES:
        raise ValueError(f"未知的权重格式 {scheme!r}，可选：{', '.join(SCHEMES)}")
    out = copy.deepcopy(model)
    if scheme == "fp32":
        return out

    def fmt(w: np.ndarray) -> Weight:
        return make_weight(w.astype(np.float32), scheme, group)

    def fake_quantize(lin: Any, weight: Weight) -> None:  # 训练用的前向：量化再反量化的浮点权重
        lin.weight.data[...] = weight.dense().astype(lin.weight.data.dtype)

    for block in out.trf_blocks:
        att, ff = block.att, block.ff
        qkv = (att.W_query, att.W_key, att.W_value)
        block.quantized = {"qkv": fmt(np.concatenate([lin.weight.data for lin in qkv])),
                           "out": fmt(att.out_proj.weight.data),
                           "fc1": fmt(ff.layers[0].weight.data), "fc2": fmt(ff.layers[2].weight.data)}
        # 每行各自量化，所以拼起来的 QKV 反量化后按行切回三份，就是三个矩阵各自的伪量化权重
        for lin, part in zip(qkv, np.split(block.quantized["qkv"].dense(), 3)):
            lin.weight.data[...] = part.astype(lin.weight.data.dtype)
        for lin, key in ((att.out_proj, "out"), (ff.layers[0], "fc1"), (ff.layers[2], "fc2")):
            fake_quantize(lin, block.quantized[key])
    if include_head:
        out.quantized_head = fmt(out.out_head.weight.data)
        fake_quantize(out.out_head, out.quantized_head)
    return out


def top1_and_ppl(logits_ref: np.ndarray, logits_q: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """两组 logits (N, V) 的 top-1 一致率，以及各自对 targets 的困惑度。"""
    def ppl(lg: np.ndarray) -> float:
        lg = lg.astype(np.float64)
        m = lg.max(-1, keepdims=True)
        lse = np.log(np.exp(lg - m).sum(-1)) + m[:, 0]
        return float(np.exp(np.mean(lse - lg[np.arange(len(targets)), targets])))

    agree = float(np.mean(logits_ref.argmax(-1) == logits_q.argmax(-1)))
    return {"top1_agreement": agree, "ppl_ref": ppl(logits_ref), "ppl_quant": ppl(logits_q)}


def evaluate_quantization(model: Any, tokens: np.ndarray, schemes: tuple[str, ...] = ("bf16", "int8"),
                          group: int | None = 128, n_windows: int = 16) -> dict[str, dict[str, float]]:
    """在 tokens 上取 n_windows 个不重叠的窗口（长度 context_length），比较各量化方案与 float32 的输出：
    top-1 一致率（两边预测的下一个词元是否相同）与困惑度。"""
    t = model.cfg.context_length
    n = min(n_windows, (len(tokens) - 1) // t)
    if n < 1:
        raise ValueError(f"评估至少需要 {t + 1} 个词元，收到 {len(tokens)}")
    x = np.stack([tokens[i * t : (i + 1) * t] for i in range(n)])
    y = np.stack([tokens[i * t + 1 : (i + 1) * t + 1] for i in range(n)]).reshape(-1)
    ref = model.infer(x, last_only=False).reshape(-1, model.cfg.vocab_size)
    out = {}
    for s in schemes:
        q = quantize_gpt(model, s, group)
        out[s] = top1_and_ppl(ref, q.infer(x, last_only=False).reshape(-1, model.cfg.vocab_size), y)
    return out
