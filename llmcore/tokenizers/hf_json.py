"""读取 Hugging Face 的 tokenizer.json（Qwen、GPT-2、Llama-3 等用的字节级 BPE），用我们自己的代码编码与解码。

tokenizer.json 把分词的每一步都写成了数据，我们逐项照做：

1. 添加的词元 (added_tokens)：``<|im_start|>``、``<|im_end|>``、``<think>`` 等先从文本里整个切出来，直接给 id
   （在同一位置能匹配多个时取最长的，与 tokenizers 库相同）。切分复用 base.split_special。
2. 规范化 (normalizer)：Qwen 用 NFC（把“e + 组合重音”合成一个字符）。
3. 预分词 (pre_tokenizer)：先按正则切块（Split，behavior=Isolated：匹配到的是块，匹配之间的空隙也是块），
   再把每块的 UTF-8 字节映射成可见字符（ByteLevel，与 GPT-2 同一张映射表，见 byte_unicode.py）。
   Qwen 的正则与 GPT-2 的不同：数字一位一块（``\\p{N}``），字母串可以带一个前导标点，换行单独成块。
4. 模型 (model)：BPE。合并规则 merges 按顺序排了优先级：块内反复找优先级最高（序号最小）的相邻对合并。
   这与 bpe_encode.py 里“按拼起来的词元 id 排名”是同一个算法的两种写法；tiktoken 的词表里 id 就是合并顺序，
   而 tokenizer.json 明确给出合并表，同一个词元可能由不同的对拼成，所以这里按“对”的序号查。
5. 解码 (decoder)：ByteLevel，把字符映射回字节再按 UTF-8 解码。

只支持上面这些部件（Qwen 与 GPT-2 系列用到的）；遇到别的部件类型时报错，说明是哪一个。
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import regex

from .base import SpecialSet, Tokenizer, as_int_list, check_ids, read_json
from .byte_unicode import bytes_to_unicode, unicode_to_bytes

QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)
"""Qwen2/Qwen3 的预分词正则（tokenizer.json 里 Split 的 pattern）。"""


def bpe_merge_pairs(symbols: list[str], pair_ranks: dict[tuple[str, str], int]) -> list[str]:
    """反复合并序号最小的相邻对（并列取最左），直到没有可合并的对。"""
    parts = list(symbols)
    while len(parts) > 1:
        best, best_i = -1, -1
        for i in range(len(parts) - 1):
            r = pair_ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best < 0 or r < best):
                best, best_i = r, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


class HFJsonTokenizer(Tokenizer):
    """按 tokenizer.json 编码 / 解码。``encode`` 默认识别全部添加的词元（与 tokenizers 库的 encode 相同）。"""

    type_name = "hf_json"

    def __init__(self, data: dict[str, Any], source: str = "tokenizer.json") -> None:
        self.data = data
        self.source = source
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"{source} 的模型类型是 {model.get('type')!r}，本实现只支持 'BPE'")
        if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise ValueError(f"{source} 用了 byte_fallback / 子词前缀或后缀，本实现只支持字节级 BPE")
        self.vocab: dict[str, int] = dict(model["vocab"])
        merges = model.get("merges", [])
        pairs = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in merges]
        self.pair_ranks: dict[tuple[str, str], int] = {(p[0], p[1]): i for i, p in enumerate(pairs)}
        self.ignore_merges = bool(model.get("ignore_merges", False))
        self.special_tokens = {}
        self.special_flags: dict[int, bool] = {}
        for t in data.get("added_tokens", []):
            if t.get("lstrip") or t.get("rstrip") or t.get("single_word"):
                raise ValueError(f"{source} 中添加的词元 {t['content']!r} 用了 lstrip/rstrip/single_word，本实现不支持")
            self.special_tokens[t["content"]] = int(t["id"])
            self.special_flags[int(t["id"])] = bool(t.get("special", False))
        self.nfc = _parse_normalizer(data.get("normalizer"), source)
        self.pattern = _parse_pre_tokenizer(data.get("pre_tokenizer"), source)
        dec = data.get("decoder")
        if dec is not None and dec.get("type") != "ByteLevel":
            raise ValueError(f"{source} 的解码器是 {dec.get('type')!r}，本实现只支持 'ByteLevel'")
        self.id_to_token = {i: s for s, i in self.vocab.items()}
        self.id_to_added = {i: s for s, i in self.special_tokens.items()}
        self._b2u = bytes_to_unicode()
        self._u2b = unicode_to_bytes()
        self._cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- 读写
    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> HFJsonTokenizer:
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise FileNotFoundError(f"找不到分词器文件 {p}")
        return cls(read_json(p), str(p))

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HFJsonTokenizer:
        return cls(data)

    @property
    def vocab_size(self) -> int:
        return max([*self.vocab.values(), *self.special_tokens.values()]) + 1

    # ---------------------------------------------------------------- 编码
    def pre_tokenize(self, text: str) -> list[str]:
        """规范化后按正则切块（匹配与空隙都是块），每块映射成字节级字符串。"""
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        pieces: list[str] = []
        if self.pattern is None:
            pieces = [text] if text else []
        else:
            pos = 0
            for m in self.pattern.finditer(text):
                if m.start() > pos:
                    pieces.append(text[pos : m.start()])
                if m.end() > m.start():
                    pieces.append(m.group())
                pos = m.end()
            if pos < len(text):
                pieces.append(text[pos:])
        b2u = self._b2u
        return ["".join(b2u[b] for b in p.encode("utf-8")) for p in pieces]

    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        if self.ignore_merges and word in self.vocab:
            ids = [self.vocab[word]]
        else:
            parts = bpe_merge_pairs(list(word), self.pair_ranks)
            try:
                ids = [self.vocab[p] for p in parts]
            except KeyError as e:
                raise ValueError(
                    f"{self.source} 的词表里没有符号 {e.args[0]!r}（字节级词表应包含全部 256 个字节）"
                ) from None
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        out: list[int] = []
        for w in self.pre_tokenize(text):
            out.extend(self._encode_word(w))
        return out

    def encode(self, text: str, allowed_special: SpecialSet = "all", disallowed_special: SpecialSet = ()) -> list[int]:
        """文本 → id。默认把文本里出现的所有添加词元都切出来（与 tokenizers 库一致）；
        处理不可信的用户输入时可传 allowed_special=() 把它们当普通文本编码。"""
        return super().encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)

    # ---------------------------------------------------------------- 解码
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = as_int_list(ids)
        check_ids(ids, self.vocab_size)
        buf = bytearray()
        out: list[str] = []
        for i in ids:
            added = self.id_to_added.get(i)
            if added is not None:
                if buf:
                    out.append(buf.decode("utf-8", errors="replace"))
                    buf = bytearray()
                if not (skip_special_tokens and self.special_flags.get(i)):
                    out.append(added)
                continue
            tok = self.id_to_token.get(i)
            if tok is None:
                raise ValueError(f"词元 id {i} 不在 {self.source} 的词表里")
            buf.extend(self._u2b[c] for c in tok)
        if buf:
            out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


def _parse_normalizer(norm: dict[str, Any] | None, source: str) -> bool:
    if norm is None:
        return False
    kind = norm.get("type")
    if kind == "NFC":
        return True
    if kind == "Sequence" and all(n.get("type") == "NFC" for n in norm.get("normalizers", [])):
        return bool(norm.get("normalizers"))
    raise ValueError(f"{source} 的规范化器 {kind!r} 不受支持（只支持 NFC）")


def _parse_pre_tokenizer(pre: dict[str, Any] | None, source: str) -> regex.Pattern[str] | None:
    """支持 Sequence[Split(正则, Isolated), ByteLevel(use_regex=False)] 与单独的 ByteLevel（GPT-2 的正则）。"""
    from .patterns import GPT2_PATTERN

    if pre is None:
        raise ValueError(f"{source} 没有预分词器；字节级 BPE 需要 ByteLevel 预分词器")
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    pattern: str | None = None
    seen_byte_level = False
    for s in steps:
        kind = s.get("type")
        if kind == "Split":
            if s.get("behavior") != "Isolated" or s.get("invert"):
                raise ValueError(f"{source} 的 Split 预分词器用了 behavior={s.get('behavior')!r}，只支持 Isolated")
            pat = s.get("pattern", {})
            pattern = pat.get("Regex") if "Regex" in pat else regex.escape(pat.get("String", ""))
        elif kind == "ByteLevel":
            if s.get("add_prefix_space"):
                raise ValueError(f"{source} 的 ByteLevel 预分词器开了 add_prefix_space，本实现不支持")
            if s.get("use_regex", True):
                if pattern is not None:
                    raise ValueError(f"{source} 在 Split 之后又用 ByteLevel 的正则切分，本实现不支持")
                pattern = GPT2_PATTERN
            seen_byte_level = True
        else:
            raise ValueError(f"{source} 的预分词器 {kind!r} 不受支持（支持 Split 与 ByteLevel）")
    if not seen_byte_level:
        raise ValueError(f"{source} 的预分词器里没有 ByteLevel；本实现只支持字节级 BPE")
    return None if pattern is None else regex.compile(pattern)
