"""分词器 (tokenizer) 的公共接口。

所有分词器都继承 `Tokenizer`，约定如下：

- `encode(text, allowed_special=..., disallowed_special=...) -> list[int]`：文本 → 词元 id；
  特殊词元 (special token) 的处理与 tiktoken 相同：文本里出现的特殊词元字符串，若在
  `allowed_special` 中则编码为特殊 id；若在 `disallowed_special`（默认 "all"，即除允许者外全部）
  中则报错；其余情况当作普通文本编码。
- `decode(ids) -> str`：词元 id → 文本。
- `vocab_size`：词表大小（最大 id + 1）；`special_tokens`：特殊词元 → id。
- `save(path)` / `load(path)`：可读的 JSON 文件，顶层 "type" 字段说明是哪种分词器，
  `load_tokenizer(path)` 据此分派到具体的类。
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

import regex

EOT = "<|endoftext|>"
UNK = "<|unk|>"

SpecialSet = Collection[str] | Literal["all"]


class Tokenizer(ABC):
    """分词器基类：子类实现编码、解码与 JSON 序列化。"""

    type_name: ClassVar[str] = ""
    special_tokens: dict[str, int]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """词表大小：最大 id + 1。"""

    @abstractmethod
    def encode_ordinary(self, text: str) -> list[int]:
        """把普通文本（不识别特殊词元）编码为 id。"""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """把 id 序列解码为文本。"""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """序列化为可写入 JSON 的字典（须含 "type" 字段）。"""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        """从 `to_dict` 的结果重建分词器。"""

    @property
    def eot_id(self) -> int | None:
        """`<|endoftext|>` 的 id；词表中没有时为 None。"""
        return self.special_tokens.get(EOT)

    def encode(
        self,
        text: str,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[int]:
        """文本 → 词元 id（特殊词元规则见模块说明）。"""
        out: list[int] = []
        for piece in split_special(text, self.special_tokens, allowed_special, disallowed_special):
            if isinstance(piece, int):
                out.append(piece)
            elif piece:
                out.extend(self.encode_ordinary(piece))
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """保存为 JSON（先写临时文件再改名，不会留下写了一半的文件）。"""
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """从 JSON 文件加载；文件里的 "type" 必须与本类相符。"""
        data = read_json(Path(path))
        if data.get("type") != cls.type_name:
            raise ValueError(
                f"{path} 中的分词器类型是 {data.get('type')!r}，而 {cls.__name__} 需要 {cls.type_name!r}"
            )
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"


def _resolve(spec: SpecialSet, special_tokens: dict[str, int]) -> set[str]:
    if spec == "all":
        return set(special_tokens)
    if isinstance(spec, str):
        raise TypeError(f"特殊词元集合应为字符串集合或 'all'，而不是单个字符串 {spec!r}")
    return set(spec)


def split_special(
    text: str,
    special_tokens: dict[str, int],
    allowed_special: SpecialSet = frozenset(),
    disallowed_special: SpecialSet = "all",
) -> list[str | int]:
    """把文本切成普通文本片段 (str) 与特殊词元 id (int) 交替的列表。

    文本中出现不允许的特殊词元时抛出 ValueError，报出是哪一个、在什么位置。
    """
    allowed = _resolve(allowed_special, special_tokens)
    unknown = allowed - set(special_tokens)
    if unknown:
        raise ValueError(
            f"allowed_special 中有词表里没有的特殊词元：{sorted(unknown)}；"
            f"词表中的特殊词元：{sorted(special_tokens)}"
        )
    disallowed = _resolve(disallowed_special, special_tokens) - allowed
    if disallowed:
        m = _special_regex(tuple(sorted(disallowed))).search(text)
        if m:
            raise ValueError(
                f"文本第 {m.start()} 个字符处出现了未被允许的特殊词元 {m.group()!r}；"
                f"如确实需要，请传入 allowed_special={{{m.group()!r}}}（或 'all'），"
                "若想把它当普通文本编码，请传入 disallowed_special=()"
            )
    if not allowed:
        return [text]
    out: list[str | int] = []
    pos = 0
    for m in _special_regex(tuple(sorted(allowed))).finditer(text):
        out.append(text[pos : m.start()])
        out.append(special_tokens[m.group()])
        pos = m.end()
    out.append(text[pos:])
    return out


_SPECIAL_RE_CACHE: dict[tuple[str, ...], regex.Pattern[str]] = {}


def _special_regex(tokens: tuple[str, ...]) -> regex.Pattern[str]:
    pat = _SPECIAL_RE_CACHE.get(tokens)
    if pat is None:
        # 长的在前，避免一个特殊词元是另一个的前缀时匹配到短的
        alts = sorted(tokens, key=len, reverse=True)
        pat = regex.compile("|".join(regex.escape(t) for t in alts))
        _SPECIAL_RE_CACHE[tokens] = pat
    return pat


def as_int_list(ids: Iterable[int]) -> list[int]:
    """把任意整数序列（含 numpy 数组、torch 张量）转成 Python int 列表。"""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def check_ids(ids: list[int], vocab_size: int) -> None:
    """所有 id 必须在 [0, vocab_size) 内，否则报出第一个越界的 id。"""
    for i in ids:
        if not 0 <= i < vocab_size:
            raise ValueError(f"词元 id {i} 超出词表范围 [0, {vocab_size})")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """把字典写成 JSON：列表里的每个元素占一行，方便阅读与 diff；写临时文件后原子改名。"""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps_readable(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps_readable(data: dict[str, Any]) -> str:
    """顶层键各占一行；值为列表时每个元素占一行（元素本身紧凑输出）。"""
    lines = ["{"]
    items = list(data.items())
    for k, (key, value) in enumerate(items):
        comma = "," if k + 1 < len(items) else ""
        head = f"  {json.dumps(key, ensure_ascii=False)}: "
        if isinstance(value, list) and value:
            lines.append(head + "[")
            for j, v in enumerate(value):
                sep = "," if j + 1 < len(value) else ""
                lines.append("    " + json.dumps(v, ensure_ascii=False, separators=(", ", ": ")) + sep)
            lines.append("  ]" + comma)
        else:
            lines.append(head + json.dumps(value, ensure_ascii=False) + comma)
    lines.append("}")
    return "\n".join(lines) + "\n"


def read_json(path: Path) -> dict[str, Any]:
    """读取分词器 JSON，顶层必须是对象。"""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} 的顶层应是 JSON 对象，实际是 {type(data).__name__}")
    return data
