"""词元文件：把语料编码一次存成 `.npy`，训练时用内存映射读取，适合放不进内存的大语料。

- 词表 ≤ 65,536 时用 uint16 存储（每个词元 2 字节），否则用 uint32；
- `encode_file_to_npy` 逐行读取源文件，分块编码后追加写入，内存占用与文件大小无关；
  块只在“安全”的行边界切开（上一行以非空白字符 + "\\n" 结尾，下一行以非空白字符开头），
  因此结果与一次性编码全文完全相同；
- `load_tokens` 用 `np.load(mmap_mode="r")` 打开，不把文件读进内存；
- `RandomWindowSampler` 每次在整串词元里随机取 B 个起点，组成 (B, T) 的 (输入, 目标) 批次。
所有写文件操作都先写临时文件再原子改名。
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import regex
from numpy.typing import ArrayLike

from .sliding import _positive_int

_SPACE = regex.compile(r"\s")
Allowed = Collection[str] | Literal["all"]


def token_dtype(vocab_size: int) -> np.dtype:
    """能装下 [0, vocab_size) 的最小无符号整数类型。"""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _tmp_path(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}.{os.getpid()}.part")


def save_tokens(ids: ArrayLike, path: str | os.PathLike[str], vocab_size: int) -> Path:
    """把一维词元 id 存成 .npy（dtype 由 vocab_size 决定），返回路径。"""
    path = Path(path)
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"词元 id 应是一维数组，实际形状为 {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"词元 id 超出词表范围 [0, {vocab_size})：最小 {arr.min()}，最大 {arr.max()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path, "npy")
    try:
        with open(tmp, "wb") as f:
            np.save(f, arr.astype(token_dtype(vocab_size)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def encode_to_npy(
    text: str, tokenizer: Any, path: str | os.PathLike[str], allowed_special: Allowed = frozenset()
) -> Path:
    """编码内存中的文本并存成 .npy。"""
    ids = tokenizer.encode(text, allowed_special=allowed_special)
    return save_tokens(np.asarray(ids, dtype=np.int64), path, tokenizer.vocab_size)


def _safe_cut(prev_line: str, next_line: str) -> bool:
    """在 prev_line 与 next_line 之间切块，是否与整体编码结果一致。"""
    return (
        len(prev_line) >= 2
        and prev_line.endswith("\n")
        and not _SPACE.match(prev_line[-2])
        and not _SPACE.match(next_line[:1] or " ")
    )


def encode_file_to_npy(
    src: str | os.PathLike[str],
    tokenizer: Any,
    dst: str | os.PathLike[str],
    block_chars: int = 1 << 22,
    allowed_special: Allowed = frozenset(),
) -> Path:
    """流式编码 UTF-8 文本文件 src，写成 .npy 文件 dst；返回 dst。"""
    block_chars = _positive_int("block_chars", block_chars)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    raw, tmp = _tmp_path(dst, "raw"), _tmp_path(dst, "npy")
    n = 0
    try:
        with open(src, encoding="utf-8", newline="") as f, open(raw, "wb") as out:
            block: list[str] = []
            size = 0

            def flush() -> int:
                ids = tokenizer.encode("".join(block), allowed_special=allowed_special)
                arr = np.asarray(ids, dtype=dtype)
                arr.tofile(out)
                return len(arr)

            for line in f:
                if size >= block_chars and _safe_cut(block[-1], line):
                    n += flush()
                    block, size = [], 0
                block.append(line)
                size += len(line)
            if block:
                n += flush()
        if n == 0:
            with open(tmp, "wb") as g:
                np.save(g, np.zeros(0, dtype=dtype))
        else:
            src_mm = np.memmap(raw, dtype=dtype, mode="r", shape=(n,))
            dst_mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n,))
            step = 1 << 24
            for i in range(0, n, step):
                dst_mm[i : i + step] = src_mm[i : i + step]
            dst_mm.flush()
            del src_mm, dst_mm
        os.replace(tmp, dst)
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return dst


def load_tokens(path: str | os.PathLike[str]) -> np.ndarray:
    """以只读内存映射打开 .npy 词元文件。"""
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path} 应是一维整数数组，实际形状 {arr.shape}、dtype {arr.dtype}")
    return arr


class RandomWindowSampler:
    """从一整串词元里随机取窗口组成批次：`x, y = sampler.sample()`，形状都是 (B, T)、int64。

    起点在 [0, n - T - 1] 中均匀随机（可重复），目标 y 是 x 右移一位；用于大语料的“无限”采样。
    """

    def __init__(self, tokens: ArrayLike, batch_size: int, context_length: int, seed: int = 0) -> None:
        self.tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.context_length = _positive_int("context_length", context_length)
        n = len(self.tokens)
        need = self.context_length + 1
        if n < need:
            raise ValueError(f"词元文件只有 {n} 个词元，至少需要 context_length + 1 = {need} 个")
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """取一批 (x, y)。"""
        T = self.context_length
        starts = self.rng.integers(0, len(self.tokens) - T, size=self.batch_size)
        windows = np.asarray(self.tokens[starts[:, None] + np.arange(T + 1)], dtype=np.int64)  # (B, T+1)
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.sample()
