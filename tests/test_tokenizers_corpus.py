"""在默认中文语料上训练 BPE：两个编码后端一致；完整语料上的压缩率达标（slow）。"""

from __future__ import annotations

import pytest

from llmcore.datasets import load_default_corpus
from llmcore.tokenizers import BPETokenizer, get_gpt2_tokenizer


def chars_per_token(tok: BPETokenizer, text: str) -> float:
    return len(text) / len(tok.encode(text))


def test_backends_agree_on_corpus_slice() -> None:
    train, val = load_default_corpus()
    tok = BPETokenizer.train(train[:100_000], vocab_size=1000)
    py = BPETokenizer.from_dict(tok.to_dict())
    py.backend = "python"
    sample = val[:20_000]
    ids = tok.encode(sample)
    assert py.encode(sample) == ids
    assert tok.decode(ids) == sample
    # 即使只在 10 万字上训练 1000 个词元（大半花在拼出单个汉字上），也已比 GPT-2 省 1/3 以上
    assert chars_per_token(tok, sample) > 1.5 * chars_per_token(get_gpt2_tokenizer(), sample)


@pytest.mark.slow
def test_full_corpus_bpe_reaches_target_compression() -> None:
    train, val = load_default_corpus()
    tok = BPETokenizer.train(train, vocab_size=8000)
    assert tok.vocab_size <= 8192
    ours = chars_per_token(tok, val)
    gpt2 = chars_per_token(get_gpt2_tokenizer(), val)
    assert ours >= 1.4, f"验证集压缩率 {ours:.3f} 字/词元，目标 ≥ 1.4"
    assert 0.35 < gpt2 < 0.55, f"GPT-2 在中文上的压缩率 {gpt2:.3f} 字/词元，应在 0.45 左右"
