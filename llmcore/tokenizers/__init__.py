"""分词器 (tokenizer)：文本 ↔ 词元 id。与框架无关，gpt_numpy 与 gpt_torch 共用。

- `WordTokenizer` / `UnkWordTokenizer`：教学用的英文正则分词器；
- `CharTokenizer`：中文字符级分词器；
- `BPETokenizer`：从零实现的字节级 BPE（训练、编码、解码、保存/加载、读取 GPT-2 词表）；
- `get_gpt2_tokenizer()`：不联网的 GPT-2 分词器；
- `load_tokenizer(path)`：按 JSON 的 "type" 字段加载任意一种。
"""

from .base import EOT, UNK, Tokenizer
from .bpe import BPETokenizer
from .char import CharTokenizer
from .gpt2 import get_gpt2_tokenizer
from .load import load_tokenizer
from .patterns import GPT2_PATTERN, ZH_PATTERN
from .word import UnkWordTokenizer, WordTokenizer

__all__ = [
    "EOT",
    "UNK",
    "GPT2_PATTERN",
    "ZH_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "UnkWordTokenizer",
    "WordTokenizer",
    "get_gpt2_tokenizer",
    "load_tokenizer",
]
