"""中文字符级分词器：每个字符一个词元 (token)，词表从语料统计得到。

- 词表顺序：先是特殊词元（默认 `<|endoftext|>`=0、`<|unk|>`=1），再按出现次数从多到少排列
  字符（次数相同按码位）；可用 `min_freq` 去掉罕见字，用 `max_size` 限制词表大小（含特殊词元）。
- 语料里没有的字符编码为 `<|unk|>`，解码后变成 "<|unk|>"，信息丢失；调用者可以先用
  `unknown_chars(text)` 查出哪些字符会变成 `<|unk|>`，再决定是否警告用户。
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .base import EOT, UNK, Tokenizer, as_int_list, check_ids


class CharTokenizer(Tokenizer):
    """字符级分词器：id → 字符的表 `vocab`，未知字符 → `<|unk|>`。"""

    type_name = "char"

    def __init__(self, vocab: Sequence[str], special_tokens: Sequence[str] = (EOT, UNK)) -> None:
        self.vocab = list(vocab)
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("词表中有重复的条目")
        specials = set(special_tokens)
        bad = [t for t in self.vocab if len(t) != 1 and t not in specials]
        if bad:
            raise ValueError(f"字符词表中只能有单个字符或特殊词元，发现 {bad[:5]}")
        self.str_to_id = {t: i for i, t in enumerate(self.vocab)}
        missing = [t for t in special_tokens if t not in self.str_to_id]
        if missing:
            raise ValueError(f"特殊词元 {missing} 不在词表中")
        if UNK not in specials:
            raise ValueError(f"CharTokenizer 的特殊词元必须包含 {UNK!r}，实际为 {list(special_tokens)}")
        self.special_tokens = {t: self.str_to_id[t] for t in special_tokens}
        self.unk_id = self.special_tokens[UNK]
        # 单字符到 id 的表（不含多字符的特殊词元），编码时用
        self._char_to_id = {t: i for t, i in self.str_to_id.items() if t not in specials}

    @classmethod
    def train(
        cls,
        text: str,
        min_freq: int = 1,
        max_size: int | None = None,
        special_tokens: Sequence[str] = (EOT, UNK),
    ) -> CharTokenizer:
        """从语料建词表：出现次数 ≥ min_freq 的字符，按频次降序，总大小（含特殊词元）≤ max_size。"""
        if min_freq < 1:
            raise ValueError(f"min_freq 应 ≥ 1，实际为 {min_freq}")
        if max_size is not None and max_size <= len(special_tokens):
            raise ValueError(f"max_size={max_size} 太小：至少要比特殊词元数 {len(special_tokens)} 大")
        counts = Counter(text)
        chars = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
        if max_size is not None:
            chars = chars[: max_size - len(special_tokens)]
        return cls(list(special_tokens) + chars, special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode_ordinary(self, text: str) -> list[int]:
        get, unk = self._char_to_id.get, self.unk_id
        return [get(c, unk) for c in text]

    def unknown_chars(self, text: str) -> Counter[str]:
        """返回 text 中不在词表里的字符及其出现次数（编码时它们会变成 `<|unk|>`）。"""
        known = self._char_to_id
        return Counter(c for c in text if c not in known)

    def decode(self, ids: Iterable[int]) -> str:
        ids = as_int_list(ids)
        check_ids(ids, self.vocab_size)
        return "".join(self.vocab[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        specials = list(self.special_tokens)
        return {"type": self.type_name, "version": 1, "special_tokens": specials, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["vocab"], data.get("special_tokens", (EOT, UNK)))
