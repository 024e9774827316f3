"""字节级 BPE 的纯 Python 编码（与 tiktoken 的算法相同，用来对照和教学）。

词表用 `ranks: {字节串: 排名}` 表示，排名就是词元 id，越小越早学到。编码一个块时：
先把它拆成单个字节，然后反复找出“拼起来在词表里、且排名最小”的相邻两段（并列时取最左边），
把它们合成一段，直到没有可合并的相邻对。排名顺序就是训练时的合并顺序，所以这等价于
“按训练顺序重放合并规则”。
"""

from __future__ import annotations

from collections.abc import Mapping

import regex


def bpe_merge(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """把一个块的字节串合并成词元 id 列表。"""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank = -1
        best_i = -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best_rank < 0 or r < best_rank):
                best_rank, best_i = r, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [ranks[p] for p in parts]


class PyBPEEncoder:
    """纯 Python 的 BPE 编码器：预分词 → 每块 `bpe_merge`，块的结果有缓存。"""

    def __init__(self, pattern: str, ranks: Mapping[bytes, int], cache_size: int = 200_000) -> None:
        self.pattern = regex.compile(pattern)
        self.ranks = ranks
        self.cache_size = cache_size
        self._cache: dict[str, list[int]] = {}

    def encode_ordinary(self, text: str) -> list[int]:
        """编码普通文本（不识别特殊词元）。"""
        out: list[int] = []
        cache = self._cache
        for chunk in self.pattern.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = bpe_merge(chunk.encode("utf-8"), self.ranks)
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[chunk] = ids
            out.extend(ids)
        return out
