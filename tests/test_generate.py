"""gpt_numpy 的生成：KV 缓存与不用缓存逐词元一致（含超过 context_length 的回退）、抽样、种子、eos、参数检查。"""

from __future__ import annotations

import numpy as np
import pytest
from gpt_testutil import default_dtype, numpy_model, tiny_cfg

import tinytensor as tt
from gpt_numpy.generate import generate, generate_text_simple, stream_generate, stream_tokens

CTX = 12  # tiny_cfg 的 context_length


@pytest.fixture
def f64():
    with default_dtype(tt.float64):
        yield


def prompt(b: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 37, (b, t))


@pytest.mark.parametrize("b,t,new", [(1, 4, 20), (2, 1, 15), (3, 12, 5), (2, 17, 6)])
def test_cache_equals_no_cache_greedy(f64, b, t, new):
    """t + new 超过 CTX 时缓存写满，之后每步回退为重算；t > CTX 时先裁剪提示。"""
    m = numpy_model(tiny_cfg(qkv_bias=True), 1)
    x = prompt(b, t)
    a = generate(m, x, new, use_cache=True)
    c = generate(m, x, new, use_cache=False)
    assert a.shape == (b, t + new)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a[:, :t], x)
    assert len(np.unique(a[:, t:])) > 1  # 不是平凡地重复同一个词元


def test_cache_equals_no_cache_float32_default_dtype():
    m = numpy_model(tiny_cfg(tie_weights=True), 2)
    x = prompt(2, 5, 2)
    np.testing.assert_array_equal(generate(m, x, 15), generate(m, x, 15, use_cache=False))


def recording_step(model, log: list):
    def step(tokens, cache):
        with tt.no_grad():
            out = model(tokens, cache).data[:, -1, :]
        log.append(out.copy())
        return out

    return step


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-5)])
def test_cached_logits_match_every_step(dtype, tol):
    with default_dtype(getattr(tt, dtype)):
        m = numpy_model(tiny_cfg(qkv_bias=True), 3)
        m.eval()
        x = prompt(2, 3, 3)
        logs: dict[bool, list] = {True: [], False: []}
        for use in (True, False):
            nc = (lambda: m.new_cache(2)) if use else None
            toks = list(stream_tokens(recording_step(m, logs[use]), x, 16, CTX, nc))
        assert len(toks) == 16 and len(logs[True]) == len(logs[False]) == 16
        for i, (a, b) in enumerate(zip(logs[True], logs[False])):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max(), err_msg=f"第 {i} 步")


def test_chunked_prefill_with_cache_matches_full_forward(f64):
    """缓存里已有词元时一次送入多个新词元（用到带偏移的因果掩码）。"""
    m = numpy_model(tiny_cfg(), 4)
    x = prompt(2, 11, 4)
    with tt.no_grad():
        full = m(x).data
        cache = m.new_cache(2)
        parts = [m(x[:, a:b], cache).data for a, b in ((0, 4), (4, 5), (5, 11))]
    assert cache.pos == 11
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-10, atol=1e-12)


def test_cache_forward_requires_no_grad_and_respects_capacity():
    m = numpy_model(tiny_cfg(), 0)
    cache = m.new_cache(1)
    with pytest.raises(RuntimeError, match="no_grad"):
        m(prompt(1, 3), cache)
    with tt.no_grad():
        m(prompt(1, 10), cache)
        with pytest.raises(ValueError, match="输入长度 13 超过"):
            m(prompt(1, 3), cache)


@pytest.mark.parametrize("t", [3, 15])
def test_generate_text_simple_equals_temperature_zero(f64, t):
    m = numpy_model(tiny_cfg(), 5)
    x = prompt(2, t, 5)
    simple = generate_text_simple(m, x, 10, context_size=CTX)
    np.testing.assert_array_equal(simple, generate(m, x, 10, temperature=0.0))
    np.testing.assert_array_equal(simple, generate(m, x, 10, temperature=0.0, use_cache=False))


def test_generate_accepts_tensor_and_list_and_restores_mode():
    m = numpy_model(tiny_cfg(drop_rate=0.3), 0)
    m.train()
    a = generate(m, [[1, 2, 3]], 4)
    b = generate(m, tt.tensor(np.array([[1, 2, 3]])), 4)
    np.testing.assert_array_equal(a, b)  # 生成时处于 eval 模式：dropout 关闭，结果确定
    assert m.training


def test_context_size_smaller_than_model(f64):
    m = numpy_model(tiny_cfg(), 6)
    x = prompt(1, 4, 6)
    a = generate(m, x, 10, context_size=5)
    np.testing.assert_array_equal(a, generate_text_simple(m, x, 10, context_size=5))
    np.testing.assert_array_equal(a, generate(m, x, 10, context_size=5, use_cache=False))


def test_same_seed_same_samples(f64):
    m = numpy_model(tiny_cfg(), 7)
    x = prompt(2, 3, 7)
    kw = dict(temperature=1.5, top_k=10, seed=123)
    a = generate(m, x, 20, **kw)
    np.testing.assert_array_equal(a, generate(m, x, 20, **kw))
    np.testing.assert_array_equal(a, generate(m, x, 20, use_cache=False, **kw))
    assert not np.array_equal(a, generate(m, x, 20, **{**kw, "seed": 124}))
    assert not np.array_equal(a, generate(m, x, 20, temperature=0.0))


def test_top_k_one_and_tiny_top_p_equal_greedy(f64):
    m = numpy_model(tiny_cfg(), 8)
    x = prompt(2, 3, 8)
    greedy = generate(m, x, 15)
    np.testing.assert_array_equal(generate(m, x, 15, temperature=2.0, top_k=1, seed=0), greedy)
    np.testing.assert_array_equal(generate(m, x, 15, temperature=2.0, top_p=1e-9, seed=0), greedy)


def test_sampled_tokens_stay_in_top_k(f64):
    m = numpy_model(tiny_cfg(), 9)
    x = prompt(1, 3, 9)
    logs: list = []
    toks = list(stream_tokens(recording_step(m, logs), x, 30, CTX, lambda: m.new_cache(1), 3.0, 3, None, None, 0))
    for tok, logits in zip(toks, logs):
        assert tok[0] in np.argsort(-logits[0])[:3]


# ---------------------------------------------------------------------------- eos（用一个假模型精确控制输出）
def counting_step(vocab: int = 10):
    """假模型：下一个词元总是 (最后一个词元 + 1) % vocab；记录调用次数。"""
    calls = []

    def step(tokens, cache):
        calls.append(tokens.shape)
        logits = np.zeros((len(tokens), vocab))
        logits[np.arange(len(tokens)), (tokens[:, -1] + 1) % vocab] = 1.0
        return logits

    return step, calls


def test_eos_stops_batch_of_one():
    step, _ = counting_step()
    out = list(stream_tokens(step, np.array([[2]]), 10, 100, eos_id=5))
    assert [int(t[0]) for t in out] == [3, 4]  # eos 本身不产出


def test_eos_batch_pads_finished_rows_until_all_done():
    step, _ = counting_step()
    out = np.stack(list(stream_tokens(step, np.array([[2], [0]]), 10, 100, eos_id=5)), axis=1)
    # 第 0 行第 3 步生成 eos 后一直填 eos；第 1 行第 5 步生成 eos，此时全部结束（最后一步不产出）
    np.testing.assert_array_equal(out, [[3, 4, 5, 5], [1, 2, 3, 4]])


def test_eos_with_real_model(f64):
    m = numpy_model(tiny_cfg(), 10)
    x = prompt(1, 3, 10)
    greedy = generate(m, x, 12)[0, 3:]
    eos = int(greedy[4])
    first = int(np.flatnonzero(greedy == eos)[0])
    out = generate(m, x, 12, eos_id=eos)
    np.testing.assert_array_equal(out[0], np.concatenate([x[0], greedy[:first]]))


def test_max_new_tokens_zero_runs_no_forward():
    step, calls = counting_step()
    assert list(stream_tokens(step, np.array([[1]]), 0, 10)) == []
    assert calls == []


def test_last_step_does_not_compute_extra_forward():
    step, calls = counting_step()
    assert len(list(stream_tokens(step, np.array([[1]]), 4, 10))) == 4
    assert len(calls) == 4


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"temperature": -1.0}, "temperature 不能为负"),
        ({"temperature": 1.0, "top_p": 0.0}, r"top_p 必须在 \(0, 1\] 内"),
        ({"temperature": 1.0, "top_p": 1.01}, r"top_p 必须在 \(0, 1\] 内"),
        ({"temperature": 1.0, "top_k": 0}, "top_k 必须是 ≥ 1 的整数"),
    ],
)
def test_bad_arguments_fail_before_any_forward(kw, msg):
    step, calls = counting_step()
    with pytest.raises(ValueError, match=msg):
        list(stream_tokens(step, np.array([[1]]), 5, 10, **kw))
    assert calls == []
    m = numpy_model(tiny_cfg(), 0)
    with pytest.raises(ValueError, match=msg):
        generate(m, [[1, 2]], 5, **kw)


def test_bad_shapes_and_counts():
    m = numpy_model(tiny_cfg(), 0)
    with pytest.raises(ValueError, match="max_new_tokens 不能为负"):
        generate(m, [[1]], -1)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        generate(m, [1, 2, 3], 2)
    with pytest.raises(IndexError, match="词元 id 99"):
        generate(m, [[1, 99]], 2)


def test_stream_generate_yields_one_token_per_row():
    m = numpy_model(tiny_cfg(), 0)
    toks = list(stream_generate(m, prompt(3, 2), 4))
    assert len(toks) == 4 and all(t.shape == (3,) and t.dtype == np.int64 for t in toks)
