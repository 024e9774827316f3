"""词级、字符级分词器与公共接口（特殊词元、保存/加载）的测试。"""

from __future__ import annotations

import json

import pytest

from llmcore.tokenizers import (
    EOT,
    UNK,
    CharTokenizer,
    UnkWordTokenizer,
    WordTokenizer,
    load_tokenizer,
)
from llmcore.tokenizers.base import split_special

ENGLISH = 'It was the best of times--it was the worst of times. "Really?" she asked (quietly).'


def test_word_tokenizer_roundtrip_and_ids() -> None:
    tok = WordTokenizer.train(ENGLISH)
    ids = tok.encode("it was the worst of times.")
    assert [tok.vocab[i] for i in ids] == ["it", "was", "the", "worst", "of", "times", "."]
    # 解码有损：空白信息丢了，只能“标点前不加空格”地拼回去——这是词级分词器的局限
    want = 'It was the best of times -- it was the worst of times." Really?" she asked( quietly).'
    assert tok.decode(tok.encode(ENGLISH)) == want
    assert tok.vocab == sorted(tok.vocab)


def test_word_tokenizer_splits_double_dash_and_punct() -> None:
    tok = WordTokenizer.train(ENGLISH)
    words = [tok.vocab[i] for i in tok.encode("times--it")]
    assert words == ["times", "--", "it"]


def test_word_tokenizer_unknown_word_errors_with_word() -> None:
    tok = WordTokenizer.train(ENGLISH)
    with pytest.raises(ValueError, match="'palace'"):
        tok.encode("the palace")


def test_unk_word_tokenizer() -> None:
    tok = UnkWordTokenizer.train(ENGLISH)
    assert tok.vocab[-2:] == [EOT, UNK]
    text = f"the palace {EOT} it was"
    ids = tok.encode(text, allowed_special={EOT})
    assert ids[1] == tok.special_tokens[UNK]
    assert ids[2] == tok.special_tokens[EOT]
    assert tok.decode(ids) == f"the {UNK} {EOT} it was"


def test_special_token_in_text_must_be_allowed() -> None:
    tok = UnkWordTokenizer.train(ENGLISH)
    with pytest.raises(ValueError, match="未被允许的特殊词元"):
        tok.encode(f"it was {EOT} the")
    # 显式不禁止时当作普通文本：不在普通词表里，变成 <|unk|>
    ids = tok.encode(f"it {EOT}", disallowed_special=())
    assert ids[-1] == tok.special_tokens[UNK]


def test_allowed_special_must_exist() -> None:
    tok = UnkWordTokenizer.train(ENGLISH)
    with pytest.raises(ValueError, match="<\\|pad\\|>"):
        tok.encode("it", allowed_special={"<|pad|>"})


def test_split_special_pieces() -> None:
    specials = {EOT: 7, "<|end|>": 8}
    assert split_special(f"a{EOT}b<|end|>", specials, "all") == ["a", 7, "b", 8, ""]
    assert split_special(f"a{EOT}", specials, {EOT}, disallowed_special=()) == ["a", 7, ""]


CHINESE = "今天天气很好，我们去公园散步。公园里的花开了，天气真好！"


def test_char_tokenizer_vocab_order_and_roundtrip() -> None:
    tok = CharTokenizer.train(CHINESE)
    assert tok.vocab[:2] == [EOT, UNK]
    # 频次最高的字排在特殊词元之后："天"出现 3 次，其余最多 2 次
    assert tok.vocab[2] == "天"
    assert tok.decode(tok.encode(CHINESE)) == CHINESE
    assert tok.vocab_size == 2 + len(set(CHINESE))


def test_char_tokenizer_unknown_chars() -> None:
    tok = CharTokenizer.train(CHINESE)
    text = "今天下雨了吗？"
    ids = tok.encode(text)
    unk = tok.special_tokens[UNK]
    assert ids.count(unk) == 4  # 下、雨、吗、？ 都没见过（"了"见过）
    assert tok.unknown_chars(text) == {"下": 1, "雨": 1, "吗": 1, "？": 1}
    assert tok.decode(ids) == f"今天{UNK}{UNK}了{UNK}{UNK}"


def test_char_tokenizer_min_freq_and_max_size() -> None:
    tok = CharTokenizer.train(CHINESE, min_freq=2)
    assert set(tok.vocab[2:]) == {"天", "气", "好", "公", "园", "，"}
    small = CharTokenizer.train(CHINESE, max_size=5)
    assert small.vocab_size == 5
    assert small.vocab[2] == "天"
    with pytest.raises(ValueError, match="max_size=2"):
        CharTokenizer.train(CHINESE, max_size=2)


def test_char_tokenizer_eot_allowed() -> None:
    tok = CharTokenizer.train(CHINESE)
    ids = tok.encode(f"天气{EOT}好", allowed_special={EOT})
    assert ids[2] == tok.eot_id == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: WordTokenizer.train(ENGLISH),
        lambda: UnkWordTokenizer.train(ENGLISH),
        lambda: CharTokenizer.train(CHINESE),
    ],
    ids=["word", "word_unk", "char"],
)
def test_save_load_roundtrip(tmp_path, make) -> None:
    tok = make()
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == tok.type_name
    again = load_tokenizer(path)
    assert type(again) is type(tok)
    assert again.vocab == tok.vocab and again.special_tokens == tok.special_tokens
    sample = ENGLISH if "word" in tok.type_name else CHINESE
    assert again.encode(sample) == tok.encode(sample)
    assert type(tok).load(path).vocab == tok.vocab


def test_load_rejects_wrong_type(tmp_path) -> None:
    path = tmp_path / "tok.json"
    CharTokenizer.train(CHINESE).save(path)
    with pytest.raises(ValueError, match="'char'"):
        WordTokenizer.load(path)
    path.write_text(json.dumps({"type": "sentencepiece"}), encoding="utf-8")
    with pytest.raises(ValueError, match="sentencepiece"):
        load_tokenizer(path)


def test_decode_rejects_out_of_range() -> None:
    tok = CharTokenizer.train(CHINESE)
    with pytest.raises(ValueError, match=str(tok.vocab_size + 3)):
        tok.decode([2, tok.vocab_size + 3])
