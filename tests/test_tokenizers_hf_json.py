"""读取 Qwen 格式的 tokenizer.json：与 Hugging Face tokenizers 库给出相同的 id，并能还原文本。

测试自己用 tokenizers 训练一个小的字节级 BPE（Qwen 的预分词正则、NFC、ChatML 特殊词元与 <think>），
存成 tokenizer.json，再用我们的实现读取。
"""

from __future__ import annotations

import json

import pytest

tokenizers = pytest.importorskip("tokenizers")

from qwen3_testutil import write_qwen_style_tokenizer  # noqa: E402

from llmcore.qwen3.chat import render_chat  # noqa: E402
from llmcore.tokenizers import load_tokenizer  # noqa: E402
from llmcore.tokenizers.hf_json import HFJsonTokenizer  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TRAIN = [
    "新华社北京12月2日电 国务院总理今天在人民大会堂会见了来访的客人。",
    "我们今天学习大语言模型：分词、注意力、训练、微调。Qwen3 是阿里巴巴的开源模型。",
    "The quick brown fox jumps over the lazy dog. It's a test; we'll see, they've done it!",
    "def attention(q, k, v):\n    scores = q @ k.T / math.sqrt(d)\n    return softmax(scores) @ v\n",
    "for i in range(10):\n\tprint(f\"{i:03d}\")  # 注释：打印数字\r\n",
    "表情符号 🙂🚀👍🏽 和 日本語のテキスト、한국어 텍스트 also Ünïcödé café naïve",
    "价格是 3.14 元，折扣 25%，共计 1,234,567 件 —— 真是“便宜”！",
]
CASES = [
    "你好，世界！今天天气很好。",
    "Hello, world! I'm fine, you're OK; we'll've DON'T It'S",
    "def f(x):\n    return x ** 2  # 平方\n\n\n",
    "emoji: 🙂🚀 👍🏽 👨‍👩‍👧 and 中文混排 GDP增长了6.5%",
    "  多个  空格   和\t制表符\n\n 换行 \r\n 结尾   ",
    "café vs cafe\u0301（组合重音，NFC 之后相同）",
    "<|im_start|>user\n你是谁？<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n我是",
    "没有见过的字：龘靐齉 и кириллица ελληνικά",
    "12345678901234567890 3.1415926",
    "",
    " ",
    "a<|im_end|>b<think>c</think>",
]


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    write_qwen_style_tokenizer(path, TRAIN * 20, 700, SPECIAL)
    return path


def test_same_ids_as_tokenizers_library(tok_file):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(tok_file))
    ours = HFJsonTokenizer.from_file(tok_file)
    assert ours.vocab_size == ref.get_vocab_size()
    total = 0
    for text in CASES + TRAIN:
        want = ref.encode(text, add_special_tokens=False).ids
        got = ours.encode(text)
        assert got == want, text
        assert ours.decode(got) == ref.decode(want, skip_special_tokens=False), text
        total += len(got)
    assert total > 300  # 确实有大量词元参与比较


def test_decode_roundtrip_and_skip_special(tok_file):
    ours = HFJsonTokenizer.from_file(tok_file)
    import unicodedata

    for text in CASES:
        assert ours.decode(ours.encode(text)) == unicodedata.normalize("NFC", text)
    ids = ours.encode("<|im_start|>user\n你好<|im_end|>")
    assert ids[0] == ours.special_tokens["<|im_start|>"]
    assert ours.decode(ids, skip_special_tokens=True) == "user\n你好"
    assert ours.decode(ours.encode("<|im_start|>x", allowed_special=()), True) == "<|im_start|>x"  # 普通文本
    assert ours.encode("<|im_start|>", allowed_special=()) != [ours.special_tokens["<|im_start|>"]]


def test_chat_template_encodes_special_tokens(tok_file):
    ours = load_tokenizer(tok_file)  # load_tokenizer 认得 HF 的格式
    assert isinstance(ours, HFJsonTokenizer)
    text = render_chat([{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好"}],
                       enable_thinking=False)
    assert text == ("<|im_start|>system\n你是助手。<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ids = ours.encode(text)
    assert ids.count(ours.special_tokens["<|im_start|>"]) == 3
    assert ours.special_tokens["<think>"] in ids


def test_legacy_merges_format(tok_file, tmp_path):
    """较早的 tokenizer.json（包括 Qwen 发布的）把合并规则写成 "a b" 字符串。"""
    from tokenizers import Tokenizer

    data = json.loads(tok_file.read_text(encoding="utf-8"))
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    ref = Tokenizer.from_file(str(p))
    ours = HFJsonTokenizer.from_file(p)
    for text in CASES:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids


def test_bad_files(tmp_path, tok_file):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        HFJsonTokenizer.from_file(tmp_path)
    data = json.loads(tok_file.read_text(encoding="utf-8"))
    data["model"]["type"] = "WordPiece"
    with pytest.raises(ValueError, match="'WordPiece'.*只支持 'BPE'"):
        HFJsonTokenizer(data)
    data = json.loads(tok_file.read_text(encoding="utf-8"))
    data["pre_tokenizer"] = {"type": "Whitespace"}
    with pytest.raises(ValueError, match="'Whitespace'"):
        HFJsonTokenizer(data)
    ours = HFJsonTokenizer.from_file(tok_file)
    with pytest.raises(ValueError, match="超出词表范围"):
        ours.decode([ours.vocab_size])
