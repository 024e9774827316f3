"""读取 GPT-2 的 `encoder.json`（词元字符串 → id）与 `vocab.bpe`（按顺序的合并规则）。

校验二者一致：前 256 个 id 是单字节；`vocab.bpe` 第 i 条合并 (左, 右) 得到的字节串，
在 `encoder.json` 里的 id 必须是 256 + i；`<|endoftext|>` 是唯一的特殊词元。
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import EOT
from .byte_unicode import bytes_to_unicode, decode_gpt2_token


def read_gpt2_files(
    encoder_json_path: str | os.PathLike[str], vocab_bpe_path: str | os.PathLike[str]
) -> tuple[dict[bytes, int], dict[str, int], dict[int, tuple[int, int]]]:
    """返回 (ranks, special_tokens, merges)：ranks 是 {字节串: id}，merges 是 {id: (左 id, 右 id)}。"""
    with open(encoder_json_path, encoding="utf-8") as f:
        encoder: dict[str, int] = json.load(f)
    if EOT not in encoder:
        raise ValueError(f"{encoder_json_path} 里没有特殊词元 {EOT!r}，不像是 GPT-2 的 encoder.json")
    special_tokens = {EOT: encoder.pop(EOT)}
    ranks: dict[bytes, int] = {}
    for token, idx in encoder.items():
        ranks[decode_gpt2_token(token)] = idx
    if len(ranks) != len(encoder):
        raise ValueError(f"{encoder_json_path} 中有两个词元对应同一个字节串")

    byte_chars = bytes_to_unicode()
    for b in range(256):
        if ranks.get(bytes([b])) is None:
            raise ValueError(f"{encoder_json_path} 缺少单字节词元 {byte_chars[b]!r}（字节 {b}）")

    lines = Path(vocab_bpe_path).read_text(encoding="utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges: dict[int, tuple[int, int]] = {}
    for k, line in enumerate(ln for ln in lines if ln):
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{vocab_bpe_path} 第 {k + 2} 行应是“左 右”两个词元，实际是 {line!r}")
        left, right = (decode_gpt2_token(p) for p in parts)
        merged = left + right
        want = 256 + k
        got = ranks.get(merged)
        if got != want:
            raise ValueError(
                f"{vocab_bpe_path} 第 {k + 2} 行的合并结果 {merged!r} 在 encoder.json 中的 id 是 {got}，"
                f"应为 {want}"
            )
        merges[want] = (ranks[left], ranks[right])
    if len(merges) + 256 != len(ranks):
        raise ValueError(f"合并规则 {len(merges)} 条 + 256 个字节 ≠ encoder.json 中的普通词元数 {len(ranks)}")
    return ranks, special_tokens, merges
