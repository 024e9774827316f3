"""sampling.sample_next / filter_logits：贪心、温度、top-k、top-p 的行为与分布（固定种子的统计检验）。"""

from __future__ import annotations

import numpy as np
import pytest

from llmcore.sampling import filter_logits, sample_next, softmax

N = 40_000
LOGITS = np.log(np.array([0.05, 0.30, 0.02, 0.40, 0.15, 0.08]))  # 概率按下标：3 > 1 > 4 > 5 > 0 > 2


def draws(logits: np.ndarray, n: int = N, seed: int = 0, **kw) -> np.ndarray:
    """同一行 logits 复制 n 份，一次抽 n 个样本。"""
    rows = np.repeat(logits[None, :], n, axis=0)
    return sample_next(rows, rng=np.random.default_rng(seed), **kw)


def assert_frequencies(samples: np.ndarray, probs: np.ndarray) -> None:
    """每个词元的频率与期望概率相差不超过 5 个标准差；概率为 0 的一次都不能出现。"""
    freq = np.bincount(samples, minlength=len(probs)) / len(samples)
    sigma = np.sqrt(probs * (1 - probs) / len(samples))
    assert np.all(freq[probs == 0] == 0), freq
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-12), (freq, probs)


def test_greedy_ignores_filters_and_rng():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 3.5]])
    for kw in ({}, {"top_k": 2}, {"top_p": 0.5}):
        np.testing.assert_array_equal(sample_next(logits, temperature=0.0, **kw), [1, 2])


def test_temperature_one_matches_softmax():
    assert_frequencies(draws(LOGITS, temperature=1.0), softmax(LOGITS))


def test_temperature_scales_distribution():
    for t in (0.5, 2.0):
        assert_frequencies(draws(LOGITS, temperature=t, seed=1), softmax(LOGITS / t))


def test_top_k_never_samples_filtered_tokens():
    s = draws(LOGITS, temperature=1.0, top_k=3, seed=2)
    keep = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    p = np.where(keep, np.exp(LOGITS), 0.0)
    assert_frequencies(s, p / p.sum())
    assert set(np.unique(s)) == {1, 3, 4}


def test_top_p_keeps_smallest_prefix():
    # 排序后概率 0.40, 0.30, 0.15, ...：top_p=0.65 需要前两个（0.40 < 0.65 ≤ 0.70）
    s = draws(LOGITS, temperature=1.0, top_p=0.65, seed=3)
    assert_frequencies(s, np.array([0, 0.3, 0, 0.4, 0, 0]) / 0.7)
    # 恰好达到边界：top_p=0.70 仍是两个
    f = filter_logits(LOGITS[None], top_p=0.70 - 1e-12)
    assert np.isfinite(f).sum() == 2


def test_top_k_and_top_p_combined():
    s = draws(LOGITS, temperature=1.0, top_k=4, top_p=0.9, seed=4)
    # top_k=4 留下 {3,1,4,5}（重新归一化后 0.4/0.93, 0.3/0.93, 0.15/0.93 ...），top_p=0.9 再去掉 5
    p = np.array([0, 0.30, 0, 0.40, 0.15, 0])
    assert_frequencies(s, p / p.sum())


def test_tiny_top_p_and_top_k_one_are_greedy():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(64, 50))
    greedy = logits.argmax(-1)
    np.testing.assert_array_equal(sample_next(logits, 1.0, top_k=1, rng=rng), greedy)
    np.testing.assert_array_equal(sample_next(logits, 1.0, top_p=1e-9, rng=rng), greedy)
    np.testing.assert_array_equal(sample_next(logits, 5.0, top_p=1e-9, rng=rng), greedy)


def test_top_k_keeps_ties():
    f = filter_logits(np.array([[1.0, 3.0, 3.0, 0.0]]), top_k=1)
    np.testing.assert_array_equal(np.isfinite(f), [[False, True, True, False]])


def test_filtered_last_token_never_sampled_even_at_u_near_one():
    """u 接近 1 时也不会落到被过滤的（最后一个）词元上。"""

    class AlmostOne:
        def random(self, n):
            return np.full(n, np.nextafter(1.0, 0.0))

    logits = np.array([[1.3, 0.95, -0.7, -50.0]] * 3)  # 保留的三个概率累加起来是 0.9999999999999999
    out = sample_next(logits, 1.0, top_k=3, rng=AlmostOne())
    np.testing.assert_array_equal(out, [2, 2, 2])


def test_same_seed_same_samples():
    logits = np.random.default_rng(0).normal(size=(8, 100))
    a = sample_next(logits, 0.8, top_k=20, rng=np.random.default_rng(42))
    b = sample_next(logits, 0.8, top_k=20, rng=np.random.default_rng(42))
    c = sample_next(logits, 0.8, top_k=20, rng=np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"temperature": -0.1}, "temperature 不能为负"),
        ({"temperature": float("nan")}, "temperature 不能为负"),
        ({"temperature": 1.0, "top_p": 0.0}, r"top_p 必须在 \(0, 1\] 内"),
        ({"temperature": 1.0, "top_p": 1.5}, r"top_p 必须在 \(0, 1\] 内"),
        ({"temperature": 1.0, "top_k": 0}, "top_k 必须是 ≥ 1 的整数"),
        ({"temperature": 1.0, "top_k": 2.5}, "top_k 必须是 ≥ 1 的整数"),
    ],
)
def test_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        sample_next(np.zeros((1, 4)), **kw)


def test_bad_logits_shape():
    with pytest.raises(ValueError, match="二维"):
        sample_next(np.zeros(4))
