"""`load_tokenizer(path)`：读取任意分词器 JSON，按其 "type" 字段分派到具体的类。"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Tokenizer, read_json
from .bpe import BPETokenizer
from .char import CharTokenizer
from .word import UnkWordTokenizer, WordTokenizer

TOKENIZER_TYPES: dict[str, type[Tokenizer]] = {
    cls.type_name: cls for cls in (WordTokenizer, UnkWordTokenizer, CharTokenizer, BPETokenizer)
}


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """加载 `Tokenizer.save` 写出的 JSON 文件，或 Hugging Face 的 tokenizer.json。"""
    data = read_json(Path(path))
    if "type" not in data and "model" in data and "added_tokens" in data:  # Hugging Face 的 tokenizer.json
        from .hf_json import HFJsonTokenizer

        return HFJsonTokenizer(data, str(path))
    kind = data.get("type")
    cls = TOKENIZER_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"{path} 的分词器类型 {kind!r} 未知，应为 {sorted(TOKENIZER_TYPES)} 之一")
    return cls.from_dict(data)
