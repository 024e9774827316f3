"""按 Hugging Face 的键名读取 Qwen3 的 safetensors 权重。

safetensors 文件的布局很简单：8 字节小端整数 N，N 字节 JSON 头（每个张量的 dtype、形状、字节区间），
然后是紧挨着的原始数据。我们自己解析头部，再对每个张量单独做一次内存映射（np.memmap）：
读哪个张量就只映射哪一段，转换完映射即释放，所以加载 0.6B 模型时不会同时存在第二份完整的权重。

Qwen3 在磁盘上是 bf16。NumPy 没有 bf16 类型，但 bf16 恰好是 float32 的高 16 位：
把 uint16 左移 16 位放进 uint32，再按 float32 解释，就是精确的转换（``bf16_to_float32``）。
反方向（float32 → bf16）按“就近舍入、平局取偶”截掉低 16 位（``float32_to_bf16``）。

键名（L 层，i = 0..L-1）::

    model.embed_tokens.weight                          (V, C)
    model.layers.{i}.input_layernorm.weight            (C,)
    model.layers.{i}.self_attn.q_proj.weight           (nh·hd, C)
    model.layers.{i}.self_attn.k_proj.weight           (nkv·hd, C)
    model.layers.{i}.self_attn.v_proj.weight           (nkv·hd, C)
    model.layers.{i}.self_attn.o_proj.weight           (C, nh·hd)
    model.layers.{i}.self_attn.q_norm.weight           (hd,)
    model.layers.{i}.self_attn.k_norm.weight           (hd,)
    model.layers.{i}.post_attention_layernorm.weight   (C,)
    model.layers.{i}.mlp.gate_proj.weight              (F, C)
    model.layers.{i}.mlp.up_proj.weight                (F, C)
    model.layers.{i}.mlp.down_proj.weight              (C, F)
    model.norm.weight                                  (C,)
    lm_head.weight                                     (V, C)，共享嵌入 (tie_word_embeddings) 时文件里没有
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Qwen3Config

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
LM_HEAD = "lm_head.weight"
EMBED = "model.embed_tokens.weight"

# safetensors 的 dtype 名 → 读取原始字节用的 NumPy 类型（BF16 先按 uint16 读）
_RAW_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


def layer_keys(i: int) -> list[str]:
    p = f"model.layers.{i}."
    return [p + s for s in (
        "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "self_attn.q_norm.weight", "self_attn.k_norm.weight",
        "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    )]


def expected_shapes(cfg: Qwen3Config) -> dict[str, tuple[int, ...]]:
    """每个键应有的形状（共享嵌入时不含 lm_head.weight）。"""
    c, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    out: dict[str, tuple[int, ...]] = {EMBED: (cfg.vocab_size, c)}
    per = [(c,), (nh * hd, c), (nkv * hd, c), (nkv * hd, c), (c, nh * hd), (hd,), (hd,), (c,), (f, c), (f, c), (c, f)]
    for i in range(cfg.num_hidden_layers):
        out.update(zip(layer_keys(i), per))
    out["model.norm.weight"] = (c,)
    if not cfg.tie_word_embeddings:
        out[LM_HEAD] = (cfg.vocab_size, c)
    return out


def bf16_to_float32(raw: np.ndarray, out: np.ndarray | None = None, chunk: int = 1 << 22) -> np.ndarray:
    """uint16 形式的 bf16 → float32（精确）。分块转换，临时内存只有 chunk 个元素。"""
    flat = raw.reshape(-1)
    res = np.empty(raw.shape, dtype=np.float32) if out is None else out
    dst = res.reshape(-1).view(np.uint32)
    for lo in range(0, flat.size, chunk):
        seg = flat[lo : lo + chunk].astype(np.uint32)
        seg <<= 16
        dst[lo : lo + chunk] = seg
    return res


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 → bf16（以 uint16 存放），就近舍入、平局取偶；NaN 保持为 NaN。"""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16
    nan = np.isnan(x)
    if nan.any():
        rounded = np.where(nan, (u >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16)


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str  # safetensors 的 dtype 名：F32 / F16 / BF16 / F64
    shape: tuple[int, ...]
    offset: int  # 数据在文件中的起始字节


def read_header(path: Path) -> dict[str, TensorInfo]:
    """解析一个 safetensors 文件的头部，返回 {键名: TensorInfo}。"""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} 太短，不是 safetensors 文件")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{path} 的头部长度 {n} 不合理，不是 safetensors 文件")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} 的头部不是合法的 JSON：{e}") from None
    size = path.stat().st_size
    out: dict[str, TensorInfo] = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        dtype = meta["dtype"]
        if dtype not in _RAW_DTYPES:
            raise ValueError(f"{path} 中 {key} 的类型 {dtype} 不受支持（支持 {', '.join(_RAW_DTYPES)}）")
        begin, end = meta["data_offsets"]
        shape = tuple(int(s) for s in meta["shape"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_RAW_DTYPES[dtype]).itemsize
        if end - begin != nbytes or 8 + n + end > size:
            raise ValueError(f"{path} 中 {key} 的字节区间 [{begin}, {end}) 与形状 {shape}、文件大小 {size} 不符")
        out[key] = TensorInfo(path, dtype, shape, 8 + n + begin)
    return out


class Qwen3Checkpoint:
    """一个 Hugging Face 格式的 Qwen3 目录（config.json + model.safetensors 或分片 + 索引）。

    打开时只读头部并检查键名与形状；张量在 ``get`` / ``raw`` 时才读（逐个内存映射）。
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"Qwen3 检查点目录 {self.directory} 不存在")
        self.config = Qwen3Config.from_file(self.directory)
        self.tensors = self._read_all_headers()
        self.check()

    def _read_all_headers(self) -> dict[str, TensorInfo]:
        single = self.directory / WEIGHTS_NAME
        index = self.directory / INDEX_NAME
        if single.is_file():
            return read_header(single)
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            out: dict[str, TensorInfo] = {}
            for name in sorted(set(weight_map.values())):
                shard = self.directory / name
                if not shard.is_file():
                    raise FileNotFoundError(f"{index} 列出的分片 {shard} 不存在")
                out.update(read_header(shard))
            return out
        raise FileNotFoundError(f"{self.directory} 中没有 {WEIGHTS_NAME}，也没有分片索引 {INDEX_NAME}")

    def check(self) -> None:
        """所有应有的键都在、形状都对；否则报出第一个问题的键名与两边的形状。"""
        want = expected_shapes(self.config)
        missing = [k for k in want if k not in self.tensors]
        if missing:
            more = f" 等 {len(missing)} 个" if len(missing) > 1 else ""
            raise ValueError(f"{self.directory} 的权重里缺少 {missing[0]}{more}")
        for k, shape in want.items():
            if self.tensors[k].shape != shape:
                raise ValueError(
                    f"{self.directory} 中 {k} 的形状是 {self.tensors[k].shape}，按 config.json 应为 {shape}"
                )
        if LM_HEAD in self.tensors and self.tensors[LM_HEAD].shape != want[EMBED]:
            raise ValueError(f"{LM_HEAD} 的形状 {self.tensors[LM_HEAD].shape} 应为 {want[EMBED]}")

    def keys(self) -> Iterator[str]:
        """模型需要的键（按 expected_shapes 的顺序）。"""
        return iter(expected_shapes(self.config))

    def raw(self, key: str) -> np.ndarray:
        """磁盘上的原始数据（只读内存映射；bf16 以 uint16 出现）。用完即丢，映射随之释放。"""
        if key not in self.tensors:
            raise KeyError(f"检查点里没有 {key}")
        t = self.tensors[key]
        return np.memmap(t.file, dtype=_RAW_DTYPES[t.dtype], mode="r", offset=t.offset, shape=t.shape)

    def is_bf16(self, key: str) -> bool:
        return self.tensors[key].dtype == "BF16"

    def get(self, key: str, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """读一个张量并转成 dtype（新数组，不再引用文件）。"""
        raw = self.raw(key)
        if self.is_bf16(key):
            x = bf16_to_float32(raw)
            return x if np.dtype(dtype) == np.float32 else x.astype(dtype)
        return np.array(raw, dtype=dtype)

    def get_rows(self, key: str, lo: int, hi: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """读一个矩阵的第 [lo, hi) 行（大矩阵分块处理时用，例如 15 万行的嵌入表）。"""
        raw = self.raw(key)[lo:hi]
        if self.is_bf16(key):
            return bf16_to_float32(raw).astype(dtype, copy=False)
        return np.array(raw, dtype=dtype)


def open_checkpoint(directory: str | Path) -> Qwen3Checkpoint:
    """打开并检查一个 Qwen3 检查点目录。"""
    return Qwen3Checkpoint(directory)
