"""教学用的正则分词器：按空白和标点把英文切成“词”，用文本自己的词表编号。

- `WordTokenizer`：词表只含训练文本里出现过的词，遇到没见过的词直接报错；
- `UnkWordTokenizer`：多了两个特殊词元 `<|endoftext|>`（文档分隔）与 `<|unk|>`（未知词）。

解码时用空格把词连起来，再去掉标点前的空格——所以 decode(encode(x)) 不一定等于 x，
这正是它的局限之一（另一个局限：对中文几乎无用，因为中文词之间没有空格）。
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from .base import EOT, UNK, Tokenizer, as_int_list, check_ids

# 切分规则：逗号、句号等标点、双破折号 "--" 以及空白各自成为分隔符（并保留标点）
SPLIT_RE = re.compile(r'(--|[,.:;?_!"()\']|\s)')
# 解码时去掉标点前多出来的空格
_JOIN_RE = re.compile(r'\s+([,.:;?_!"()\'])')


def split_words(text: str) -> list[str]:
    """按 SPLIT_RE 切分并丢掉空白，返回词与标点的列表。"""
    return [p for p in (s.strip() for s in SPLIT_RE.split(text)) if p]


class WordTokenizer(Tokenizer):
    """词级分词器：id 是词在有序词表中的位置；未知词报错。"""

    type_name = "word"

    def __init__(self, vocab: Sequence[str], special_tokens: Sequence[str] = ()) -> None:
        self.vocab = list(vocab)
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("词表中有重复的词")
        self.str_to_id = {w: i for i, w in enumerate(self.vocab)}
        missing = [t for t in special_tokens if t not in self.str_to_id]
        if missing:
            raise ValueError(f"特殊词元 {missing} 不在词表中")
        self.special_tokens = {t: self.str_to_id[t] for t in special_tokens}
        # 普通文本编码时只查普通词，特殊词元只能经 allowed_special 进入
        self._word_to_id = {w: i for w, i in self.str_to_id.items() if w not in self.special_tokens}

    @classmethod
    def train(cls, text: str, special_tokens: Sequence[str] = ()) -> WordTokenizer:
        """用文本中出现过的全部词（排序后）建词表，特殊词元接在末尾。"""
        words = sorted(set(split_words(text)) - set(special_tokens))
        return cls(words + list(special_tokens), special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _unknown(self, word: str) -> int:
        raise ValueError(
            f"词 {word!r} 不在词表中（词表共 {len(self.vocab)} 个词）；可改用带 <|unk|> 的 UnkWordTokenizer"
        )

    def encode_ordinary(self, text: str) -> list[int]:
        get = self._word_to_id.get
        return [i if (i := get(w)) is not None else self._unknown(w) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = as_int_list(ids)
        check_ids(ids, self.vocab_size)
        return _JOIN_RE.sub(r"\1", " ".join(self.vocab[i] for i in ids))

    def to_dict(self) -> dict[str, Any]:
        specials = list(self.special_tokens)
        return {"type": self.type_name, "version": 1, "special_tokens": specials, "vocab": self.vocab}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        return cls(data["vocab"], data.get("special_tokens", ()))


class UnkWordTokenizer(WordTokenizer):
    """带 `<|unk|>` 与 `<|endoftext|>` 的词级分词器：未知词编码为 `<|unk|>`。"""

    type_name = "word_unk"

    def __init__(self, vocab: Sequence[str], special_tokens: Sequence[str] = (EOT, UNK)) -> None:
        super().__init__(vocab, special_tokens)
        if UNK not in self.special_tokens:
            raise ValueError(f"UnkWordTokenizer 的特殊词元必须包含 {UNK!r}，实际为 {list(special_tokens)}")
        self.unk_id = self.special_tokens[UNK]

    @classmethod
    def train(cls, text: str, special_tokens: Sequence[str] = (EOT, UNK)) -> UnkWordTokenizer:
        """同 `WordTokenizer.train`，默认特殊词元为 `<|endoftext|>` 与 `<|unk|>`。"""
        return super().train(text, special_tokens)  # type: ignore[return-value]

    def _unknown(self, word: str) -> int:
        return self.unk_id
