"""gpt_torch 的生成：KV 缓存与不用缓存一致、与原书写法一致、与 NumPy 轨道逐词元相同（同样的种子）。"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt_testutil import default_dtype, numpy_model, tiny_cfg, torch_threads  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy.generate import generate as np_generate  # noqa: E402
from gpt_torch.generate import generate, generate_text_simple, stream_generate  # noqa: E402
from gpt_torch.model import GPTModel  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield
CTX = 12


def twins(seed: int, dtype: str = "float64", attn_impl: str = "sdpa", **cfg_kw):
    """同样参数的 (gpt_numpy 模型, gpt_torch 模型)。"""
    with default_dtype(getattr(tt, dtype)):
        nm = numpy_model(tiny_cfg(**cfg_kw), seed)
    tm = GPTModel(nm.cfg, attn_impl=attn_impl).to(getattr(torch, dtype))
    tm.load_arrays(nm.state_arrays())
    return nm, tm


def prompt(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 37, (b, t)))


@pytest.mark.parametrize("b,t,new", [(1, 4, 20), (2, 12, 4), (2, 16, 8)])
@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
def test_cache_equals_no_cache_greedy(b, t, new, attn_impl):
    _, tm = twins(1, attn_impl=attn_impl, qkv_bias=True)
    x = prompt(b, t)
    a = generate(tm, x, new)
    assert a.dtype == torch.long and a.shape == (b, t + new)
    assert torch.equal(a, generate(tm, x, new, use_cache=False))
    assert torch.equal(a[:, :t], x)


def test_cached_logits_match_float32():
    _, tm = twins(2, "float32")
    tm.eval()
    x = prompt(2, 11, 2)
    with torch.no_grad():
        full = tm(x)
        cache = tm.new_cache(2)
        parts = [tm(x[:, :5], cache)] + [tm(x[:, i : i + 1], cache) for i in range(5, 11)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=2e-5, atol=2e-5)
    assert cache.pos == 11


def test_cached_logits_match_every_step_through_generation_loop():
    """经过共享生成循环（含缓存写满后的重算回退），每一步的 logits 与不用缓存时一致。"""
    from gpt_numpy.generate import stream_tokens
    from gpt_torch.generate import _torch_step

    _, tm = twins(7, "float32", qkv_bias=True)
    tm.eval()
    step = _torch_step(tm, torch.device("cpu"))
    logs: dict[bool, list] = {True: [], False: []}
    for use in (True, False):
        def rec(tokens, cache, log=logs[use]):
            out = step(tokens, cache)
            log.append(out)
            return out

        nc = (lambda: tm.new_cache(2)) if use else None
        assert len(list(stream_tokens(rec, prompt(2, 4, 7).numpy(), 14, CTX, nc))) == 14
    for i, (a, b) in enumerate(zip(logs[True], logs[False], strict=True)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max(), err_msg=f"第 {i} 步")


@pytest.mark.parametrize("t", [3, 15])
def test_generate_text_simple_equals_temperature_zero(t):
    _, tm = twins(3)
    tm.eval()
    x = prompt(2, t, 3)
    assert torch.equal(generate_text_simple(tm, x, 10, CTX), generate(tm, x, 10, temperature=0))


@pytest.mark.parametrize(
    "kw",
    [dict(temperature=0.0), dict(temperature=1.3, seed=7), dict(temperature=0.9, top_k=5, seed=1),
     dict(temperature=1.0, top_p=0.8, seed=2), dict(temperature=1.0, top_k=8, top_p=0.9, seed=3)],
)
def test_identical_across_tracks(kw):
    nm, tm = twins(4)
    x = prompt(2, 3, 4)
    a = np_generate(nm, x.numpy(), 20, **kw)
    b = generate(tm, x, 20, **kw)
    np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(a, np_generate(nm, x.numpy(), 20, use_cache=False, **kw))


def test_eos_identical_across_tracks():
    nm, tm = twins(5)
    x = prompt(2, 3, 5)
    greedy = generate(tm, x, 12)
    eos = int(greedy[0, 5])
    a = generate(tm, x, 12, eos_id=eos)
    np.testing.assert_array_equal(a.numpy(), np_generate(nm, x.numpy(), 12, eos_id=eos))
    first = int((greedy[0, 3:] == eos).nonzero()[0])  # 第 0 行第一次生成 eos 的步数
    assert a.shape[1] - 3 >= first
    assert torch.equal(a[0, 3 : 3 + first], greedy[0, 3 : 3 + first])
    assert torch.all(a[0, 3 + first :] == eos)


def test_same_seed_same_samples_and_mode_restored():
    _, tm = twins(6, drop_rate=0.2)
    tm.train()
    x = prompt(1, 2, 6)
    a = generate(tm, x, 15, temperature=1.0, seed=9)
    assert torch.equal(a, generate(tm, x, 15, temperature=1.0, seed=9))
    assert not torch.equal(a, generate(tm, x, 15, temperature=1.0, seed=10))
    assert tm.training


def test_bad_arguments():
    _, tm = twins(0)
    for kw, msg in [({"temperature": -0.5}, "temperature 不能为负"), ({"temperature": 1.0, "top_p": 2.0}, "top_p")]:
        with pytest.raises(ValueError, match=msg):
            generate(tm, prompt(1, 2), 3, **kw)
    with pytest.raises(IndexError, match="词元 id 40"):
        generate(tm, torch.tensor([[1, 40]]), 2)
    assert len(list(stream_generate(tm, [[1, 2]], 3))) == 3
