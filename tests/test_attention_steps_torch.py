"""第 3 章注意力各个版本：tinytensor 与 PyTorch 两条轨道逐项一致（前向、输入梯度、每个参数的梯度）。

权重按名字从 tinytensor 复制到 torch；float64 用很紧的容差，float32 用宽松的容差。
另外：gpt_torch 的 SDPA 实现 == 显式实现；torch 轨道上的因果性、dropout、wrapper == 高效写法。
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tinytensor as tt  # noqa: E402
from gpt_numpy import attention_steps as NA  # noqa: E402
from gpt_torch import attention_steps as TA  # noqa: E402

pytestmark = pytest.mark.torch

D_IN, D_OUT, T, NH, CTX = 6, 8, 5, 4, 7
TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}

# 名字 → 用同样参数构造两条轨道模块的函数 (轨道模块, 是否带偏置)
BUILDERS: dict[str, Callable[..., object]] = {
    "v1": lambda m, bias: m.SelfAttentionV1(D_IN, D_OUT),
    "v2": lambda m, bias: m.SelfAttentionV2(D_IN, D_OUT, qkv_bias=bias),
    "causal": lambda m, bias: m.CausalAttention(D_IN, D_OUT, CTX, 0.0, qkv_bias=bias),
    "causal_eval": lambda m, bias: m.CausalAttention(D_IN, D_OUT, CTX, 0.3, qkv_bias=bias).eval(),
    "wrapper": lambda m, bias: m.MultiHeadAttentionWrapper(D_IN, D_OUT, CTX, 0.0, NH, qkv_bias=bias),
    "mha": lambda m, bias: m.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, NH, qkv_bias=bias),
}


def _copy_to_torch(src: tt.nn.Module, dst: torch.nn.Module) -> None:
    """按参数名把 tinytensor 模块的权重复制进 torch 模块（键必须完全一致）。"""
    state = {k: torch.from_numpy(v.data.copy()) for k, v in src.state_dict().items()}
    dst.load_state_dict(state, strict=True)


def _fwd_bwd(track: str, f: Callable, x_np: np.ndarray, params: dict, g: np.ndarray | None) -> tuple:
    """在一条轨道上做前向与反向（损失为 Σ y·g），返回 (输出, 输入梯度, {参数名: 梯度})，都是 NumPy 数组。"""
    lib = tt if track == "tt" else torch
    x = lib.tensor(x_np, requires_grad=True)
    y = f(x)
    if g is None:
        g = np.random.default_rng(11).standard_normal(tuple(y.shape)).astype(x_np.dtype)
    (y * lib.tensor(g)).sum().backward()
    arr = (lambda t: t.data) if track == "tt" else (lambda t: t.detach().numpy())
    return arr(y), arr(x.grad), {k: arr(p.grad) for k, p in params.items()}


def _run_both(
    f1: Callable,
    f2: Callable,
    x_np: np.ndarray,
    params1: dict,
    params2: dict,
    dtype: str,
    tracks: tuple[str, str] = ("tt", "torch"),
) -> None:
    """两边做同样的前向与反向，比较输出、输入梯度和每个参数（按名字）的梯度。"""
    tol = TOL[dtype]
    x_np = x_np.astype(dtype)
    y1, gx1, gp1 = _fwd_bwd(tracks[0], f1, x_np, params1, None)
    g = np.random.default_rng(11).standard_normal(y1.shape).astype(dtype)
    y2, gx2, gp2 = _fwd_bwd(tracks[1], f2, x_np, params2, g)
    np.testing.assert_allclose(y1, y2, **tol)
    np.testing.assert_allclose(gx1, gx2, **tol)
    assert gp1.keys() == gp2.keys()
    for name in gp1:
        np.testing.assert_allclose(gp1[name], gp2[name], err_msg=name, **tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_simple_self_attention_parity(dtype: str) -> None:
    x = np.random.default_rng(0).standard_normal((2, T, D_IN))
    _run_both(NA.simple_self_attention, TA.simple_self_attention, x, {}, {}, dtype)


CASES = [(n, b) for n in BUILDERS for b in (False, True) if not (n == "v1" and b)]  # V1 没有偏置


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("name", "bias"), CASES, ids=[f"{n}-{'bias' if b else 'nobias'}" for n, b in CASES])
def test_variant_parity(name: str, bias: bool, dtype: str) -> None:
    tt.manual_seed(CASES.index((name, bias)))
    m_tt = BUILDERS[name](NA, bias).to(np.dtype(dtype))
    m_torch = BUILDERS[name](TA, bias).to(getattr(torch, dtype))
    if name == "mha":
        m_torch.attn_impl = "explicit"
    _copy_to_torch(m_tt, m_torch)
    x = np.random.default_rng(1).standard_normal((2, T, D_IN))
    _run_both(m_tt, m_torch, x, dict(m_tt.named_parameters()), dict(m_torch.named_parameters()), dtype)


def test_parity_check_can_fail() -> None:
    """对照组：torch 一侧少复制一个权重，比较就会失败。"""
    tt.manual_seed(0)
    m_tt = NA.SelfAttentionV2(D_IN, D_OUT).double()
    m_torch = TA.SelfAttentionV2(D_IN, D_OUT).double()
    _copy_to_torch(m_tt, m_torch)
    with torch.no_grad():
        m_torch.W_key.weight[0, 0] += 1e-3
    x = np.random.default_rng(1).standard_normal((2, T, D_IN))
    with pytest.raises(AssertionError):
        _run_both(m_tt, m_torch, x, dict(m_tt.named_parameters()), dict(m_torch.named_parameters()), "float64")


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_sdpa_equals_explicit(bias: bool) -> None:
    """gpt_torch 的 MultiHeadAttention：attn_impl="sdpa" 与 "explicit" 前向、反向一致。"""
    torch.manual_seed(0)
    sdpa = TA.MultiHeadAttention(D_IN, D_OUT, CTX, 0.2, NH, bias, attn_impl="sdpa").double().eval()
    expl = TA.MultiHeadAttention(D_IN, D_OUT, CTX, 0.2, NH, bias, attn_impl="explicit").double().eval()
    expl.load_state_dict(sdpa.state_dict())
    x = np.random.default_rng(2).standard_normal((3, CTX, D_IN))
    _run_both(
        sdpa, expl, x, dict(sdpa.named_parameters()), dict(expl.named_parameters()), "float64", ("torch", "torch")
    )


def test_torch_dropout_on_attention_weights() -> None:
    """与 tinytensor 版相同的构造：v = I 时输出就是 dropout 后的注意力权重。"""
    p = 0.5
    torch.manual_seed(3)
    m = TA.CausalAttention(T, T, T, dropout=p).double()
    with torch.no_grad():
        m.W_value.weight.copy_(torch.eye(T))
    x = torch.eye(T, dtype=torch.float64)[None]
    m.eval()
    w = m(x)[0].detach().numpy()
    m.train()
    wd = m(x)[0].detach().numpy()
    kept = wd != 0
    np.testing.assert_allclose(wd[kept], w[kept] / (1 - p), rtol=1e-12)
    lower = np.tril(np.ones((T, T), dtype=bool))
    assert 0 < kept[lower].sum() < lower.sum()
    assert not np.any(kept & ~lower)


@pytest.mark.parametrize("name", ["causal", "wrapper", "mha"])
def test_torch_causal_future_tokens_do_not_leak(name: str) -> None:
    torch.manual_seed(4)
    m = BUILDERS[name](TA, False).double()
    x = torch.randn(2, CTX, D_IN, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        for t in range(CTX - 1):
            x2 = x.clone()
            x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
            y2 = m(x2)
            torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attn_impl", ["explicit", "sdpa"])
def test_torch_efficient_mha_equals_wrapper(attn_impl: str) -> None:
    torch.manual_seed(5)
    wrapper = TA.MultiHeadAttentionWrapper(D_IN, D_OUT, CTX, 0.0, NH, qkv_bias=True).double()
    mha = TA.multihead_from_wrapper(wrapper, attn_impl=attn_impl)
    _run_both(
        wrapper, mha, np.random.default_rng(3).standard_normal((2, CTX, D_IN)), {}, {}, "float64", ("torch", "torch")
    )


def test_wrapper_conversion_agrees_across_tracks() -> None:
    """两条轨道各自把 wrapper 转成高效版，得到的 state_dict 逐项相同。"""
    tt.manual_seed(6)
    w_tt = NA.MultiHeadAttentionWrapper(D_IN, D_OUT, CTX, 0.0, NH, qkv_bias=True).double()
    w_torch = TA.MultiHeadAttentionWrapper(D_IN, D_OUT, CTX, 0.0, NH, qkv_bias=True).double()
    _copy_to_torch(w_tt, w_torch)
    s_tt = NA.multihead_from_wrapper(w_tt).state_dict()
    s_torch = TA.multihead_from_wrapper(w_torch).state_dict()
    assert list(s_tt) == list(s_torch)
    for k in s_tt:
        np.testing.assert_array_equal(s_tt[k].data, s_torch[k].numpy(), err_msg=k)
