"""字节级 BPE：训练算法（对照朴素实现）、两个编码后端一致、任意 Unicode 往返、保存/加载。"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcore.tokenizers import EOT, ZH_PATTERN, BPETokenizer, load_tokenizer
from llmcore.tokenizers.bpe_encode import bpe_merge
from llmcore.tokenizers.bpe_train import count_chunks, train_bpe

SAMPLE = (
    "人民日报记者报道：今年一月，全国经济保持稳定增长，人民生活水平进一步提高。\n"
    "经济发展是硬道理。记者从国家统计局了解到，１９９７年国内生产总值增长８．８％。\n"
    "The quick brown fox jumps over the lazy dog; it's 2024 and we'll see    spaces.\n"
    "表情符号 😀🎉 也要能处理，还有 tabs\t\tand\r\nnewlines\n\n"
) * 3


def naive_train(chunks: Counter[str], n_tokens: int) -> list[tuple[int, int, int]]:
    """朴素参考实现：每次合并后重新统计全部相邻对。"""
    words = Counter({tuple(c.encode("utf-8")): n for c, n in chunks.items()})
    vocab = [bytes([b]) for b in range(256)]
    index = {b: i for i, b in enumerate(vocab)}
    merges = []
    while len(vocab) < n_tokens:
        counts: Counter[tuple[int, int]] = Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                counts[p] += n
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], p))
        merged = vocab[a] + vocab[b]
        new = index.get(merged)
        if new is None:
            new = len(vocab)
            vocab.append(merged)
            index[merged] = new
        merges.append((a, b, new))
        out: Counter[tuple[int, ...]] = Counter()
        for w, n in words.items():
            res, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    res.append(new)
                    i += 2
                else:
                    res.append(w[i])
                    i += 1
            out[tuple(res)] += n
        words = out
    return merges


@pytest.fixture(scope="module")
def small_bpe() -> BPETokenizer:
    return BPETokenizer.train(SAMPLE, vocab_size=400, special_tokens=[EOT, "<|pad|>"])


def test_incremental_training_matches_naive() -> None:
    chunks = count_chunks([SAMPLE], ZH_PATTERN)
    _, fast = train_bpe(chunks, 420)
    assert fast == naive_train(chunks, 420)
    assert len(fast) == 420 - 256


def test_training_handles_repeated_and_overlapping_pairs() -> None:
    # "aaaa" 里的 (a, a) 相邻出现会重叠，计数与合并都要按不重叠、从左到右处理
    chunks = Counter({"aaaaaaa": 3, "abababab": 2, "aab": 5, "baaab": 1})
    _, fast = train_bpe(chunks, 270)
    assert fast == naive_train(chunks, 270)


def test_training_stops_when_nothing_left_to_merge() -> None:
    vocab, merges = train_bpe(Counter({"ab": 1}), 1000)
    assert len(vocab) == 257 and merges == [(97, 98, 256)]


def test_train_vocab_layout(small_bpe: BPETokenizer) -> None:
    assert small_bpe.vocab_size == 400
    assert small_bpe.special_tokens == {EOT: 398, "<|pad|>": 399}
    assert small_bpe.token_bytes(65) == b"A"  # 前 256 个 id 就是字节值
    # 每条合并的结果字节串等于左右两部分拼接
    for new, (a, b) in small_bpe.merges.items():
        assert small_bpe.token_bytes(new) == small_bpe.token_bytes(a) + small_bpe.token_bytes(b)
    # 语料里最常见的多字组合应学成一个词元
    assert "经济" in {small_bpe.token_str(i) for i in range(small_bpe.vocab_size)}


def test_trained_bpe_compresses_chinese(small_bpe: BPETokenizer) -> None:
    line = "人民日报记者报道：全国经济保持稳定增长。"
    ids = small_bpe.encode(line)
    assert len(ids) < len(line.encode("utf-8")) / 2
    assert small_bpe.decode(ids) == line


def test_special_tokens_excluded_from_training() -> None:
    tok = BPETokenizer.train((f"ab{EOT}" * 50) + "ab", vocab_size=300, special_tokens=[EOT])
    learned = {tok.token_bytes(i) for i in range(256, tok.vocab_size - 1)}
    assert not any(b"<|" in b or b"|>" in b for b in learned)


def test_backends_agree_on_text(small_bpe: BPETokenizer) -> None:
    py = BPETokenizer.from_dict(small_bpe.to_dict())
    py.backend = "python"
    text = SAMPLE + "未见过的字：龘靐齉 and unseen ‘quotes’ ５０００万 \u3000全角空格\u00a0nbsp"
    assert py.encode(text) == small_bpe.encode(text)


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_roundtrip_any_unicode(small_bpe_text: str) -> None:
    tok = _cached_small()
    ids = tok.encode(small_bpe_text, disallowed_special=())
    assert tok.decode(ids) == small_bpe_text


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_backends_agree_any_unicode(text: str) -> None:
    tok = _cached_small()
    py = _cached_small_python()
    assert py.encode(text, disallowed_special=()) == tok.encode(text, disallowed_special=())


_SMALL: dict[str, BPETokenizer] = {}


def _cached_small() -> BPETokenizer:
    if "tt" not in _SMALL:
        _SMALL["tt"] = BPETokenizer.train(SAMPLE, vocab_size=400, special_tokens=[EOT])
    return _SMALL["tt"]


def _cached_small_python() -> BPETokenizer:
    if "py" not in _SMALL:
        tok = BPETokenizer.from_dict(_cached_small().to_dict())
        tok.backend = "python"
        _SMALL["py"] = tok
    return _SMALL["py"]


def test_bpe_merge_lowest_rank_first() -> None:
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"bc"] = 256
    ranks[b"ab"] = 257
    # "bc" 排名更靠前，先合并；之后 a + bc 不在词表里，停止
    assert bpe_merge(b"abc", ranks) == [97, 256]
    ranks[b"abc"] = 258
    assert bpe_merge(b"abc", ranks) == [258]
    ranks[b"aa"] = 259
    assert bpe_merge(b"aaaaa", ranks) == [259, 259, 97]  # 并列时取最左边


WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u200a"
    "\u2028\u2029\u202f\u205f\u3000\u200b\ufeff"
)


@pytest.mark.parametrize("ch", list(WHITESPACE), ids=[f"U+{ord(c):04X}" for c in WHITESPACE])
def test_backends_agree_on_unicode_whitespace(ch: str) -> None:
    text = f"a{ch}{ch}b {ch}经济{ch} {ch}\n{ch}x{ch}"
    tok, py = _cached_small(), _cached_small_python()
    assert py.encode(text) == tok.encode(text)


def test_special_token_handling(small_bpe: BPETokenizer) -> None:
    text = f"经济{EOT}发展"
    with pytest.raises(ValueError, match="未被允许的特殊词元"):
        small_bpe.encode(text)
    ids = small_bpe.encode(text, allowed_special={EOT})
    assert EOT not in small_bpe.decode(ids[:1]) and ids.count(small_bpe.eot_id) == 1
    assert small_bpe.decode(ids) == text
    as_text = small_bpe.encode(text, disallowed_special=())
    assert small_bpe.eot_id not in as_text and small_bpe.decode(as_text) == text


def test_save_load_json(tmp_path, small_bpe: BPETokenizer) -> None:
    path = tmp_path / "bpe.json"
    small_bpe.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "bpe" and data["pattern"] == ZH_PATTERN
    by_text = {e.get("text"): e for e in data["tokens"]}
    assert "经济" in by_text and "merge" in by_text["经济"]
    # 不是合法 UTF-8 的词元（如汉字的前两个字节）用十六进制存
    assert any("bytes" in e for e in data["tokens"])
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    assert loaded.ranks == small_bpe.ranks and loaded.special_tokens == small_bpe.special_tokens
    assert loaded.encode(SAMPLE) == small_bpe.encode(SAMPLE)
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_rejects_inconsistent_merge(tmp_path, small_bpe: BPETokenizer) -> None:
    data = small_bpe.to_dict()
    entry = next(e for e in data["tokens"] if "merge" in e)
    entry["merge"] = [entry["merge"][1], entry["merge"][0]]
    with pytest.raises(ValueError, match="合并规则"):
        BPETokenizer.from_dict(data)


def test_missing_byte_is_rejected() -> None:
    ranks = {bytes([b]): b for b in range(255)}
    with pytest.raises(ValueError, match="256"):
        BPETokenizer(ranks, {}, ZH_PATTERN)


def test_vocab_size_too_small() -> None:
    with pytest.raises(ValueError, match="vocab_size=200"):
        BPETokenizer.train("abc", vocab_size=200)


def test_decode_bad_id(small_bpe: BPETokenizer) -> None:
    with pytest.raises(ValueError, match="5000"):
        small_bpe.decode([1, 5000])
    with pytest.raises(ValueError, match="-1"):
        small_bpe.decode([1, -1])
