"""字节级 BPE 分词器 `BPETokenizer`：训练、编码、解码、保存/加载，以及加载 GPT-2 的词表。

- 词元都是字节串，256 个单字节全在词表里，所以任何 Unicode 文本都能编码，
  且 decode(encode(x)) == x。
- 编码有两个等价的后端：`"tiktoken"`（默认，用我们的词表构造一个 `tiktoken.Encoding`，快）
  与 `"python"`（`bpe_encode.py` 里的纯 Python 实现，可读）；测试保证二者 id 完全相同。
- 训练：`BPETokenizer.train(text, vocab_size, special_tokens)`，算法见 `bpe_train.py`；
  词表前 256 个 id 是单字节（id = 字节值），然后是按合并顺序排列的新词元，最后是特殊词元。
- JSON 格式（`save`/`load`）：
  {"type": "bpe", "version": 1, "name": ..., "pattern": 预分词正则,
   "special_tokens": {"<|endoftext|>": id},
   "tokens": [{"id": 0, "bytes": "00"}, ..., {"id": 300, "text": "中国", "merge": [左 id, 右 id]}, ...]}
  每个词元一行；字节串是合法 UTF-8 时写 "text"，否则写十六进制 "bytes"；"merge" 可选。
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import regex

from .base import EOT, Tokenizer, as_int_list, check_ids
from .bpe_encode import PyBPEEncoder
from .bpe_train import count_chunks, train_bpe
from .gpt2_files import read_gpt2_files
from .patterns import GPT2_PATTERN, ZH_PATTERN

Backend = Literal["tiktoken", "python"]


class BPETokenizer(Tokenizer):
    """字节级 BPE：`ranks` 是 {字节串: id}，`special_tokens` 是 {字符串: id}。"""

    type_name = "bpe"

    def __init__(
        self,
        ranks: Mapping[bytes, int],
        special_tokens: Mapping[str, int],
        pattern: str,
        merges: Mapping[int, tuple[int, int]] | None = None,
        name: str = "bpe",
        backend: Backend = "tiktoken",
    ) -> None:
        self.ranks = dict(ranks)
        self.special_tokens = dict(special_tokens)
        self.pattern = pattern
        self.merges = dict(merges or {})
        self.name = name
        self.backend: Backend = backend
        self._validate()
        size = max([*self.ranks.values(), *self.special_tokens.values()]) + 1
        self._id_to_bytes: list[bytes | None] = [None] * size
        for b, i in self.ranks.items():
            self._id_to_bytes[i] = b
        for s, i in self.special_tokens.items():
            self._id_to_bytes[i] = s.encode("utf-8")
        self._py: PyBPEEncoder | None = None
        self._tt: Any = None

    def _validate(self) -> None:
        missing = [b for b in range(256) if bytes([b]) not in self.ranks]
        if missing:
            raise ValueError(
                f"字节级 BPE 的词表必须包含全部 256 个单字节，缺少 {len(missing)} 个，例如字节 {missing[0]}"
            )
        ids = list(self.ranks.values()) + list(self.special_tokens.values())
        if len(set(ids)) != len(ids):
            raise ValueError("词表里有两个词元共用同一个 id")
        if min(ids) < 0:
            raise ValueError(f"词元 id 不能为负，发现 {min(ids)}")
        try:
            regex.compile(self.pattern)
        except regex.error as e:
            raise ValueError(f"预分词正则无法编译：{e}") from None
        id_to_bytes = {i: b for b, i in self.ranks.items()}
        for new, (a, b) in self.merges.items():
            if id_to_bytes.get(a, b"") + id_to_bytes.get(b, b"") != id_to_bytes.get(new):
                raise ValueError(f"合并规则 {a} + {b} → {new} 与词表中的字节串不符")

    # ---- 构造 ----

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (EOT,),
        pattern: str = ZH_PATTERN,
        verbose: bool = False,
    ) -> BPETokenizer:
        """在 text（一个字符串或多段文本）上训练，词表大小 vocab_size 含特殊词元。

        训练文本里出现的特殊词元字符串会被剔除，不参与统计。若可合并的相邻对先用完，
        词表会比 vocab_size 小。
        """
        n_tokens = vocab_size - len(special_tokens)
        if n_tokens < 256:
            need = 256 + len(special_tokens)
            raise ValueError(
                f"vocab_size={vocab_size} 太小：256 个单字节加 {len(special_tokens)} 个特殊词元"
                f"至少需要 {need}"
            )
        texts = [text] if isinstance(text, str) else text
        if special_tokens:
            alts = sorted(special_tokens, key=len, reverse=True)
            splitter = regex.compile("|".join(regex.escape(t) for t in alts))
            texts = (piece for t in texts for piece in splitter.split(t))
        chunks = count_chunks(texts, pattern)
        vocab, merge_list = train_bpe(chunks, n_tokens, verbose=verbose)
        ranks = {b: i for i, b in enumerate(vocab)}
        specials = {t: len(vocab) + k for k, t in enumerate(special_tokens)}
        merges = {new: (a, b) for a, b, new in merge_list if new >= 256}
        return cls(ranks, specials, pattern, merges=merges, name="bpe")

    @classmethod
    def from_gpt2_files(
        cls, encoder_json_path: str | os.PathLike[str], vocab_bpe_path: str | os.PathLike[str]
    ) -> BPETokenizer:
        """读取 GPT-2 的 encoder.json 与 vocab.bpe；得到的分词器与 tiktoken 的 "gpt2" 编码完全一致。"""
        ranks, specials, merges = read_gpt2_files(encoder_json_path, vocab_bpe_path)
        return cls(ranks, specials, GPT2_PATTERN, merges=merges, name="gpt2")

    # ---- 基本属性 ----

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_bytes)

    def token_bytes(self, token_id: int) -> bytes:
        """一个 id 对应的字节串（特殊词元返回其 UTF-8 字符串）。"""
        if not 0 <= token_id < len(self._id_to_bytes) or self._id_to_bytes[token_id] is None:
            raise ValueError(f"词元 id {token_id} 不在词表中（词表大小 {self.vocab_size}）")
        return self._id_to_bytes[token_id]  # type: ignore[return-value]

    def token_str(self, token_id: int) -> str:
        """便于展示的词元文本：合法 UTF-8 时是文字本身，否则是字节的十六进制形如 <e4 b8>。"""
        b = self.token_bytes(token_id)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return "<" + b.hex(" ") + ">"

    # ---- 编码 / 解码 ----

    def encode_ordinary(self, text: str) -> list[int]:
        if self.backend == "tiktoken":
            return self.tiktoken_encoding().encode_ordinary(text)
        if self.backend == "python":
            if self._py is None:
                self._py = PyBPEEncoder(self.pattern, self.ranks)
            return self._py.encode_ordinary(text)
        raise ValueError(f"未知的编码后端 {self.backend!r}，应为 'tiktoken' 或 'python'")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """把 id 序列解码为字节串（不做 UTF-8 解码）。"""
        ids = as_int_list(ids)
        table = self._id_to_bytes
        if ids and min(ids) < 0:
            check_ids(ids, self.vocab_size)
        try:
            return b"".join(table[i] for i in ids)  # type: ignore[misc]
        except (IndexError, TypeError):
            check_ids(ids, self.vocab_size)
            bad = next(i for i in ids if table[i] is None)
            raise ValueError(f"词元 id {bad} 在词表中没有对应的字节串") from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """解码为文本；被截断的多字节字符按 errors（默认 "replace"，即 U+FFFD）处理。"""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def tiktoken_encoding(self) -> Any:
        """用本词表构造（并缓存）一个 `tiktoken.Encoding`。"""
        if self._tt is None:
            import tiktoken

            self._tt = tiktoken.Encoding(
                name=f"llmzh-{self.name}",
                pat_str=self.pattern,
                mergeable_ranks=self.ranks,
                special_tokens=self.special_tokens,
            )
        return self._tt

    # ---- 序列化 ----

    def to_dict(self) -> dict[str, Any]:
        tokens: list[dict[str, Any]] = []
        for b, i in sorted(self.ranks.items(), key=lambda kv: kv[1]):
            entry: dict[str, Any] = {"id": i}
            try:
                entry["text"] = b.decode("utf-8")
            except UnicodeDecodeError:
                entry["bytes"] = b.hex()
            if i in self.merges:
                entry["merge"] = list(self.merges[i])
            tokens.append(entry)
        return {
            "type": self.type_name,
            "version": 1,
            "name": self.name,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "tokens": tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        ranks: dict[bytes, int] = {}
        merges: dict[int, tuple[int, int]] = {}
        for entry in data["tokens"]:
            if "text" in entry:
                b = entry["text"].encode("utf-8")
            elif "bytes" in entry:
                b = bytes.fromhex(entry["bytes"])
            else:
                raise ValueError(f"词元条目 {entry} 既没有 'text' 也没有 'bytes'")
            if b in ranks:
                raise ValueError(f"字节串 {b!r} 出现了两次（id {ranks[b]} 与 {entry['id']}）")
            ranks[b] = int(entry["id"])
            if "merge" in entry:
                left, right = entry["merge"]
                merges[int(entry["id"])] = (int(left), int(right))
        specials = data.get("special_tokens", {})
        return cls(ranks, specials, data["pattern"], merges=merges, name=data.get("name", "bpe"))
