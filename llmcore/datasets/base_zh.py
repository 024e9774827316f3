"""`--recipe=base-zh` 的预训练语料：《人民日报》1998-01 加上评论数据的**训练划分**。

第 6 章要在评论上做分类微调，所以预训练只能看评论的训练部分：验证划分的评论进验证文本，
测试划分的评论一条也不进（tests/test_classify_data.py 检查）。划分与第 6 章完全相同
（`llmcore.finetune.classify_data.review_splits(seed)`）。每条评论一行。
"""

from __future__ import annotations

from .corpus import load_default_corpus

REVIEW_SPLIT_SEED = 123


def load_base_zh_corpus(seed: int = REVIEW_SPLIT_SEED) -> tuple[str, str]:
    """返回 (训练文本, 验证文本)。"""
    from ..finetune.classify_data import review_splits

    news_train, news_val = load_default_corpus()
    splits = review_splits(seed)
    train = news_train + "".join(t + "\n" for t, _ in splits.train)
    val = news_val + "".join(t + "\n" for t, _ in splits.val)
    return train, val
