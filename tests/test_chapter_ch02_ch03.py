"""第 2、3 章页面上的实现（标着 `# 章内实现` 的单元）与库的实现逐项一致。

只取出这些单元执行（不跑整个 notebook），在随机输入上与库比较：分词器的词表与 id、
BPE 的合并规则与编码、滑动窗口、嵌入层与各个注意力类的输出和梯度（float64）。
页面上的代码一旦与库分道扬镳，这里就会失败。
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chapter_inline import assert_modules_equal, fwd_bwd, inline_namespace  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy import attention_steps as NA  # noqa: E402
from gpt_numpy.attention import MultiHeadAttention as NumpyMHA  # noqa: E402
from gpt_torch import attention_steps as TA  # noqa: E402
from gpt_torch.attention import MultiHeadAttention as TorchMHA  # noqa: E402
from llmcore.datasets import SlidingWindowDataset  # noqa: E402
from llmcore.tokenizers import (  # noqa: E402
    ZH_PATTERN,
    BPETokenizer,
    CharTokenizer,
    UnkWordTokenizer,
    WordTokenizer,
)
from llmcore.tokenizers.bpe_train import count_chunks, train_bpe  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def ch02() -> dict[str, Any]:
    return inline_namespace("ch02")


@pytest.fixture(scope="module")
def ch03() -> dict[str, Any]:
    return inline_namespace("ch03")


def random_text(rng: np.random.Generator, n: int) -> str:
    """由少量汉字、英文词、空格和标点随机拼成的文本（重复多，BPE 才有东西可合并）。"""
    pieces = ["中", "国", "人", "民", "经济", "发展", "的", "，", "。"]
    pieces += [" the", " cat", "sat", "!", " ", "😀", "12", "é"]
    return "".join(rng.choice(pieces, size=n))


# ---------------- 第 2 章 ----------------


def test_word_tokenizers(ch02: dict[str, Any]) -> None:
    texts = [
        "The old lighthouse keeper climbed the stairs. He lit the lamp, wiped the glass--slow, safe!",
        'Hello, world. Is this-- a "test"? (yes): it is; _really_ it\'s fine.',
    ]
    for text in texts:
        words = sorted(set(ch02["split_words"](text)))
        mine, lib = ch02["SimpleTokenizerV1"](words), WordTokenizer.train(text)
        assert mine.vocab == lib.vocab
        assert mine.encode(text) == lib.encode(text)
        assert mine.decode(mine.encode(text)) == lib.decode(lib.encode(text))
        mine2, lib2 = ch02["SimpleTokenizerV2"](words), UnkWordTokenizer.train(text)
        assert mine2.vocab == lib2.vocab
        probe = "Unseen words appear here. <|endoftext|> " + text[:40]
        assert mine2.encode(probe) == lib2.encode(probe, allowed_special={"<|endoftext|>"})


def test_char_tokenizer(ch02: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    train, probe = random_text(rng, 400), random_text(rng, 200) + "生字"
    mine, lib = ch02["SimpleCharTokenizer"](train), CharTokenizer.train(train)
    assert mine.vocab == lib.vocab
    assert mine.encode(probe) == lib.encode(probe)
    assert mine.decode(mine.encode(probe)) == lib.decode(lib.encode(probe))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bpe_training_and_encoding(ch02: dict[str, Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    text = random_text(rng, 300)
    n_tokens = 256 + 40
    vocab, merges = ch02["train_bpe_naive"](text, n_tokens, ZH_PATTERN)
    lib_vocab, lib_merges = train_bpe(count_chunks([text], ZH_PATTERN), n_tokens)
    assert merges == lib_merges
    assert vocab == lib_vocab
    tok = BPETokenizer.train(text, vocab_size=n_tokens + 1, special_tokens=["<|endoftext|>"])
    assert {t: i for i, t in enumerate(vocab)} == tok.ranks
    assert {new: (a, b) for a, b, new in merges} == tok.merges
    probe = random_text(rng, 80) + "没见过的字 and text"
    ranks = {t: i for i, t in enumerate(vocab)}
    ids = ch02["bpe_encode"](probe, ranks, ZH_PATTERN)
    assert ids == tok.encode(probe)
    assert ids == BPETokenizer(tok.ranks, tok.special_tokens, tok.pattern, backend="python").encode(probe)


def test_bpe_toy_string(ch02: dict[str, Any]) -> None:
    toy = "四是四，十是十，十四是十四，四十是四十。"
    vocab, merges = ch02["train_bpe_naive"](toy, 256 + 15, ZH_PATTERN)
    assert len(merges) == 15
    assert (vocab, merges) == train_bpe(count_chunks([toy], ZH_PATTERN), 256 + 15)


@pytest.mark.parametrize("n,length,stride", [(20, 6, 1), (20, 6, 3), (20, 6, 6), (37, 5, 7), (9, 8, 8), (50, 4, 2)])
def test_sliding_window(ch02: dict[str, Any], n: int, length: int, stride: int) -> None:
    ids = np.random.default_rng(n).integers(0, 100, size=n).tolist()
    mine = ch02["SimpleSlidingWindow"](ids, length, stride)
    lib = SlidingWindowDataset(ids, length, stride)
    assert len(mine) == len(lib)
    for k in range(len(lib)):
        x, y = lib[k]
        assert mine[k] == (x.tolist(), y.tolist())


def test_embedding(ch02: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    v, c, t = 11, 3, 5
    w_tok, w_pos = rng.standard_normal((v, c)), rng.standard_normal((t, c))
    ids = np.array([[1, 2, 1, 7, 1], [0, 10, 2, 2, 9]])
    upstream = rng.standard_normal((2, t, c))

    def run_tt(make: Any) -> list[np.ndarray]:
        te, pe = make(v, c).double(), make(t, c).double()
        te.load_state_dict({"weight": w_tok})
        pe.load_state_dict({"weight": w_pos})
        h = ch02["embed_tokens_and_positions"](te, pe, tt.tensor(ids))
        (h * tt.tensor(upstream)).sum().backward()
        return [h.detach().numpy(), te.weight.grad.numpy(), pe.weight.grad.numpy()]

    mine = run_tt(ch02["SimpleEmbedding"])
    lib = run_tt(tt.nn.Embedding)
    te, pe = torch.nn.Embedding(v, c).double(), torch.nn.Embedding(t, c).double()
    te.load_state_dict({"weight": torch.from_numpy(w_tok)})
    pe.load_state_dict({"weight": torch.from_numpy(w_pos)})
    h = te(torch.from_numpy(ids)) + pe(torch.arange(t))
    (h * torch.from_numpy(upstream)).sum().backward()
    ref = [h.detach().numpy(), te.weight.grad.numpy(), pe.weight.grad.numpy()]
    for a, b, r in zip(mine, lib, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a, r, rtol=0, atol=1e-12)


# ---------------- 第 3 章 ----------------


def test_simple_self_attention(ch03: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    xb, g = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    out = {}
    for name in ("simple_self_attention_loops", "simple_self_attention"):
        out[name] = fwd_bwd(ch03[name], xb, g)
    ref = fwd_bwd(NA.simple_self_attention, xb, g)
    x = torch.tensor(xb, requires_grad=True)
    y = TA.simple_self_attention(x)
    (y * torch.from_numpy(g)).sum().backward()
    for y1, gx1, _ in out.values():
        for y2, gx2 in [(ref[0], ref[1]), (y.detach().numpy(), x.grad.numpy())]:
            np.testing.assert_allclose(y1, y2, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gx1, gx2, rtol=1e-10, atol=1e-12)


D_IN, HS, CTX = 6, 4, 8
CASES = {
    "SelfAttentionV1": ((D_IN, HS), {}),
    "SelfAttentionV2": ((D_IN, HS), {"qkv_bias": True}),
    "CausalAttention": ((D_IN, HS, CTX, 0.2), {"qkv_bias": True}),
    "MultiHeadAttentionWrapper": ((D_IN, 2 * HS, CTX, 0.2), {"num_heads": 2}),
    "MultiHeadAttention": ((D_IN, 2 * HS, CTX, 0.2), {"num_heads": 2, "qkv_bias": True}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_attention_classes_tinytensor(ch03: dict[str, Any], name: str) -> None:
    args, kw = CASES[name]
    tt.manual_seed(1)
    ours = ch03[name](*args, **kw)
    assert_modules_equal(ours, getattr(NA, name)(*args, **kw))
    assert_modules_equal(ours, getattr(TA, name)(*args, **kw))
    if name == "MultiHeadAttention":
        assert_modules_equal(ours, NumpyMHA(*args, **kw))
        assert_modules_equal(ours, TorchMHA(*args, **kw, attn_impl="explicit"))


@pytest.mark.parametrize(
    "name,impl",
    [("CausalAttentionTorch", None), ("MultiHeadAttentionTorch", "explicit"), ("MultiHeadAttentionTorch", "sdpa")],
)
def test_attention_classes_torch_twins(ch03: dict[str, Any], name: str, impl: str | None) -> None:
    base = name.removesuffix("Torch")
    args, kw = CASES[base]
    torch.manual_seed(0)
    ours = ch03[name](*args, **kw) if impl is None else ch03[name](*args, **kw, attn_impl=impl)
    assert_modules_equal(ours, getattr(TA, base)(*args, **kw))
    assert_modules_equal(ours, ch03[base](*args, **kw))  # 与页面上的 tinytensor 版也一致


def test_inline_causality(ch03: dict[str, Any]) -> None:
    """页面上的 MultiHeadAttention：位置 i 的输出对位置 j > i 的输入梯度为 0。"""
    tt.manual_seed(0)
    m = ch03["MultiHeadAttention"](D_IN, 2 * HS, CTX, 0.0, num_heads=2).double()
    xb = np.random.default_rng(0).standard_normal((1, 5, D_IN))
    for i in range(5):
        x = tt.tensor(xb, requires_grad=True)
        m(x)[:, i].sum().backward()
        grad = x.grad.numpy()
        assert np.all(grad[:, i + 1 :] == 0)
        assert np.abs(grad[:, : i + 1]).max() > 0


def test_multihead_from_wrapper(ch03: dict[str, Any]) -> None:
    tt.manual_seed(0)
    wrapper = ch03["MultiHeadAttentionWrapper"](D_IN, 2 * HS, CTX, 0.0, num_heads=2, qkv_bias=True)
    mine = ch03["multihead_from_wrapper"](wrapper, CTX)
    lib_wrapper = NA.MultiHeadAttentionWrapper(D_IN, 2 * HS, CTX, 0.0, num_heads=2, qkv_bias=True)
    lib_wrapper.load_state_dict(wrapper.state_dict())
    lib = NA.multihead_from_wrapper(lib_wrapper)
    for k, v in lib.state_dict().items():
        np.testing.assert_array_equal(mine.state_dict()[k].numpy(), v.numpy())
    xb = tt.tensor(np.random.default_rng(1).standard_normal((2, 5, D_IN)).astype(np.float32))
    np.testing.assert_allclose(mine(xb).detach().numpy(), wrapper(xb).detach().numpy(), rtol=1e-5, atol=1e-6)
