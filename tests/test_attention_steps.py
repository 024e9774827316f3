"""第 3 章注意力各个版本（tinytensor 轨道）：数值参考、因果性、dropout、wrapper 与高效写法等价。

与 PyTorch 的逐项对照在 test_attention_steps_torch.py（没有 torch 时本文件照常运行）。
"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
from gpt_numpy.attention_steps import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttentionV1,
    SelfAttentionV2,
    multihead_from_wrapper,
    simple_self_attention,
)

D_IN, D_OUT, T, NH = 6, 8, 7, 4


def _x(seed: int = 0, b: int = 2, t: int = T, c: int = D_IN) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((b, t, c))


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _causal_modules(dropout: float = 0.0) -> list[tt.nn.Module]:
    tt.manual_seed(1)
    mods = [
        CausalAttention(D_IN, D_OUT, T, dropout),
        MultiHeadAttentionWrapper(D_IN, D_OUT, T, dropout, NH),
        MultiHeadAttention(D_IN, D_OUT, T, dropout, NH),
    ]
    return [m.to(tt.float64) for m in mods]


def test_simple_self_attention_matches_numpy() -> None:
    x = _x()
    want = _softmax(x @ x.transpose(0, 2, 1)) @ x
    got = simple_self_attention(tt.tensor(x)).data
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # 不带批维度时也一样
    np.testing.assert_allclose(simple_self_attention(tt.tensor(x[0])).data, want[0], rtol=1e-12, atol=1e-12)


def test_self_attention_v1_matches_numpy_reference() -> None:
    tt.manual_seed(0)
    m = SelfAttentionV1(D_IN, D_OUT).to(tt.float64)
    x = _x()
    q, k, v = (x @ getattr(m, n).data for n in ("W_query", "W_key", "W_value"))
    want = _softmax(q @ k.transpose(0, 2, 1) / np.sqrt(D_OUT)) @ v
    np.testing.assert_allclose(m(tt.tensor(x)).data, want, rtol=1e-12, atol=1e-12)


def test_v1_equals_v2_with_transposed_weights() -> None:
    """V1 的 (d_in, d_out) 矩阵就是 V2 中 Linear 权重 (d_out, d_in) 的转置。"""
    tt.manual_seed(0)
    v2 = SelfAttentionV2(D_IN, D_OUT).to(tt.float64)
    v1 = SelfAttentionV1(D_IN, D_OUT).to(tt.float64)
    v1.load_state_dict({n: getattr(v2, n).weight.data.T for n in ("W_query", "W_key", "W_value")})
    x = tt.tensor(_x())
    np.testing.assert_allclose(v1(x).data, v2(x).data, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["causal", "wrapper", "mha"])
def test_causal_future_tokens_do_not_leak(index: int) -> None:
    m = _causal_modules()[index]
    x = _x()
    y = m(tt.tensor(x)).data
    for t in range(T - 1):
        x2 = x.copy()
        x2[:, t + 1 :] = np.random.default_rng(100 + t).standard_normal(x2[:, t + 1 :].shape)
        y2 = m(tt.tensor(x2)).data
        np.testing.assert_allclose(y2[:, : t + 1], y[:, : t + 1], rtol=1e-12, atol=1e-12)
        assert np.abs(y2[:, t + 1 :] - y[:, t + 1 :]).max() > 1e-6  # 未来位置确实变了


def test_causal_check_detects_leak_without_mask() -> None:
    """对照组：没有掩码的 SelfAttentionV2，改动最后一个词元会影响第一个位置。"""
    tt.manual_seed(0)
    m = SelfAttentionV2(D_IN, D_OUT).to(tt.float64)
    x = _x()
    x2 = x.copy()
    x2[:, -1] += 1.0
    assert np.abs(m(tt.tensor(x2)).data[:, 0] - m(tt.tensor(x)).data[:, 0]).max() > 1e-6


def test_causal_attention_rejects_too_long_input() -> None:
    m = CausalAttention(D_IN, D_OUT, context_length=4, dropout=0.0)
    with pytest.raises(ValueError, match="context_length=4"):
        m(tt.tensor(_x(t=5).astype(np.float32)))


def test_dropout_acts_on_attention_weights() -> None:
    """x = 单位矩阵、W_value = 单位矩阵时 v = I，输出就是（dropout 后的）注意力权重本身。"""
    p = 0.5
    tt.manual_seed(3)
    m = CausalAttention(T, T, T, dropout=p).to(tt.float64)
    with tt.no_grad():
        m.W_value.weight.data[...] = np.eye(T)
    x = tt.tensor(np.eye(T)[None])  # (1, T, T)
    m.eval()
    w = m(x).data[0]  # 注意力权重 (T, T)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.triu(w, k=1) == 0)
    m.train()
    tt.manual_seed(4)
    wd = m(x).data[0]
    kept = wd != 0
    np.testing.assert_allclose(wd[kept], w[kept] / (1 - p), rtol=1e-12)  # 留下的放大 1/(1-p)
    lower = np.tril(np.ones((T, T), dtype=bool))
    assert 0 < kept[lower].sum() < lower.sum()  # 确实丢掉了一部分，也留下了一部分
    assert not np.any(kept & ~lower)  # 未来位置始终是 0


@pytest.mark.parametrize("index", [0, 1, 2], ids=["causal", "wrapper", "mha"])
def test_dropout_train_vs_eval(index: int) -> None:
    m = _causal_modules(dropout=0.5)[index]
    ref = _causal_modules(dropout=0.0)[index]
    ref.load_state_dict(m.state_dict())
    x = tt.tensor(_x(b=1))
    m.eval()
    y_eval = m(x).data
    np.testing.assert_allclose(y_eval, ref(x).data, rtol=1e-12, atol=1e-12)  # eval 时 dropout 什么都不做
    np.testing.assert_array_equal(m(x).data, y_eval)
    m.train()
    tt.manual_seed(5)
    y1 = m(x).data
    tt.manual_seed(5)
    np.testing.assert_array_equal(m(x).data, y1)  # 同一个种子可复现
    assert np.abs(m(x).data - y1).max() > 1e-6  # 不同的随机掩码给出不同输出
    # dropout 不改变期望：很多次训练模式输出的平均值接近 eval 输出
    n = 2000
    tt.manual_seed(6)
    mean = sum(m(x).data for _ in range(n)) / n
    assert np.abs(mean - y_eval).max() < 0.1 * np.abs(y_eval).max() + 0.05


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_efficient_mha_equals_wrapper(qkv_bias: bool) -> None:
    tt.manual_seed(7)
    wrapper = MultiHeadAttentionWrapper(D_IN, D_OUT, T, 0.0, NH, qkv_bias).to(tt.float64)
    mha = multihead_from_wrapper(wrapper)
    x_np = _x()
    x1, x2 = tt.tensor(x_np, requires_grad=True), tt.tensor(x_np, requires_grad=True)
    y1, y2 = wrapper(x1), mha(x2)
    assert y1.shape == y2.shape == (2, T, D_OUT)
    np.testing.assert_allclose(y2.data, y1.data, rtol=1e-10, atol=1e-12)
    g = tt.tensor(np.random.default_rng(1).standard_normal(y1.shape))
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    np.testing.assert_allclose(x2.grad.data, x1.grad.data, rtol=1e-10, atol=1e-12)
    # 高效版 W_query.weight 的第 h 段行的梯度 = 第 h 个头 W_query.weight 的梯度
    hs = D_OUT // NH
    for h, head in enumerate(wrapper.heads):
        for name in ("W_query", "W_key", "W_value"):
            got = getattr(mha, name).weight.grad.data[h * hs : (h + 1) * hs]
            np.testing.assert_allclose(got, getattr(head, name).weight.grad.data, rtol=1e-10, atol=1e-12)


def test_efficient_mha_with_out_proj_equals_out_proj_of_wrapper() -> None:
    """一般情形：任意 out_proj 的高效版 = out_proj(wrapper 的拼接输出)。"""
    tt.manual_seed(8)
    wrapper = MultiHeadAttentionWrapper(D_IN, D_OUT, T, 0.0, NH).to(tt.float64)
    mha = multihead_from_wrapper(wrapper)
    with tt.no_grad():
        mha.out_proj.weight.data[...] = np.random.default_rng(2).standard_normal((D_OUT, D_OUT))
        mha.out_proj.bias.data[...] = np.random.default_rng(3).standard_normal(D_OUT)
    x = tt.tensor(_x())
    np.testing.assert_allclose(mha(x).data, mha.out_proj(wrapper(x)).data, rtol=1e-10, atol=1e-12)


def test_head_order_matters() -> None:
    """对照组：把各头权重按错误的顺序拼接，结果就对不上（说明上面的等价测试能失败）。"""
    tt.manual_seed(9)
    wrapper = MultiHeadAttentionWrapper(D_IN, D_OUT, T, 0.0, NH).to(tt.float64)
    mha = multihead_from_wrapper(wrapper)
    hs = D_OUT // NH
    with tt.no_grad():
        w = mha.W_value.weight.data
        w[...] = np.concatenate([w[h * hs : (h + 1) * hs] for h in reversed(range(NH))], axis=0)
    x = tt.tensor(_x())
    assert np.abs(mha(x).data - wrapper(x).data).max() > 1e-3


def test_wrapper_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="整除"):
        MultiHeadAttentionWrapper(D_IN, 7, T, 0.0, 2)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["causal", "wrapper", "mha"])
def test_dropout_applies_under_no_grad_in_train_mode(index: int) -> None:
    """与 torch 相同：dropout 只看 train/eval 模式，不看是否在 no_grad 下（融合的注意力算子曾经漏掉这一点）。"""
    m = _causal_modules(dropout=0.5)[index]
    x = tt.tensor(_x(b=1))
    with tt.no_grad():
        tt.manual_seed(0)
        y1 = m(x).data
        y2 = m(x).data
        m.eval()
        y_eval = m(x).data
    assert np.abs(y1 - y2).max() > 1e-6
    assert np.abs(y1 - y_eval).max() > 1e-6
