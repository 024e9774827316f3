"""GPT-2 的“字节 ↔ 可见字符”映射。

GPT-2 的 `encoder.json` 与 `vocab.bpe` 用字符串存词元，但词元本质是字节串。为了让每个字节
都对应一个可打印、非空白的字符，GPT-2 把 256 个字节一一映射到 Unicode 字符：可见的
ASCII 与 Latin-1 字符映射到自身，其余（控制字符、空格等）依次映射到 U+0100 之后的字符，
例如空格 0x20 → "Ġ"，换行 0x0A → "Ċ"。
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """返回 {字节值: 代表它的字符}，共 256 项，与 GPT-2 原实现相同。"""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    """`bytes_to_unicode` 的逆映射。"""
    return {c: b for b, c in bytes_to_unicode().items()}


def decode_gpt2_token(token: str) -> bytes:
    """把 encoder.json 里的词元字符串还原为字节串，遇到不在映射里的字符时报错。"""
    table = unicode_to_bytes()
    try:
        return bytes(table[c] for c in token)
    except KeyError as e:
        raise ValueError(f"词元 {token!r} 含有不属于 GPT-2 字节映射的字符 {e.args[0]!r}") from None
