"""融合的多头因果自注意力 F.causal_self_attention：与逐步写法、有限差分、torch 一致。"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
from tinytensor import composed as TF
from tinytensor.nn import functional as F


def _inputs(rng, bias, dtype, b=2, t=6, c_in=8, c=12):
    x = tt.tensor(rng.standard_normal((b, t, c_in)).astype(dtype), requires_grad=True)
    ws = [tt.tensor(rng.standard_normal((c, c_in)).astype(dtype) * 0.5, requires_grad=True) for _ in range(3)]
    bs = [tt.tensor(rng.standard_normal(c).astype(dtype), requires_grad=True) for _ in range(3)] if bias else []
    return x, ws, bs


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_fused_equals_composed_twin(bias: bool, dtype, tol: float) -> None:
    rng = np.random.default_rng(1)
    x, ws, bs = _inputs(rng, bias, dtype)
    g = tt.tensor(rng.standard_normal((2, 6, 12)).astype(dtype))
    leaves = [x, *ws, *bs]
    outs = []
    for fn in (F.causal_self_attention, TF.causal_self_attention):
        for t in leaves:
            t.grad = None
        y = fn(x, *ws, 3, *(bs or [None] * 3))
        (y * g).sum().backward()
        assert y.dtype == dtype
        outs.append((y.data.copy(), [t.grad.data.copy() for t in leaves]))
    (y1, g1), (y2, g2) = outs
    np.testing.assert_allclose(y1, y2, rtol=tol, atol=tol)
    for a, b in zip(g1, g2):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("bias", [False, True])
def test_fused_gradcheck(bias: bool) -> None:
    rng = np.random.default_rng(2)
    x, ws, bs = _inputs(rng, bias, np.float64, b=1, t=4, c_in=4, c=6)
    tt.gradcheck(lambda x, *a: F.causal_self_attention(x, *a[:3], 2, *a[3:]), [x, *ws, *bs])


def test_fused_dropout_matches_unfused_with_same_seed() -> None:
    """dropout 掩码从同一个全局随机数发生器按同样的形状抽取，融合与逐步写法给出同样的结果。"""
    from gpt_numpy.attention import MultiHeadAttention

    tt.manual_seed(0)
    mha = MultiHeadAttention(8, 8, context_length=6, dropout=0.3, num_heads=2, qkv_bias=True)
    x = tt.randn(2, 6, 8, requires_grad=True)
    results = []
    for fused in (True, False):
        mha.fused = fused
        tt.manual_seed(5)
        y = mha(x)
        y.sum().backward()
        results.append((y.data.copy(), x.grad.data.copy()))
        x.grad = None
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
    mha.eval()
    mha.fused = True
    y_eval = mha(x).data
    assert not np.allclose(y_eval, results[0][0])  # 训练模式确实用了 dropout


@pytest.mark.torch
def test_fused_matches_torch_sdpa() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, ws, bs = _inputs(rng, True, np.float64)
    y = F.causal_self_attention(x, *ws, 3, *bs)
    g = rng.standard_normal(y.shape)
    (y * tt.tensor(g)).sum().backward()
    tx = torch.tensor(x.data, requires_grad=True)
    tw = [torch.tensor(w.data, requires_grad=True) for w in ws]
    tb = [torch.tensor(b.data, requires_grad=True) for b in bs]
    heads = [torch.nn.functional.linear(tx, w, b).view(2, 6, 3, 4).transpose(1, 2) for w, b in zip(tw, tb)]
    ty = torch.nn.functional.scaled_dot_product_attention(*heads, is_causal=True).transpose(1, 2).reshape(2, 6, 12)
    (ty * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip([x, *ws, *bs], [tx, *tw, *tb]):
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_fused_bad_input() -> None:
    x = tt.randn(1, 3, 4)
    w = tt.randn(6, 4)
    with pytest.raises(ValueError, match="n_heads"):
        F.causal_self_attention(x, w, w, w, 4)
    with pytest.raises(RuntimeError, match="w_key"):
        F.causal_self_attention(x, w, tt.randn(6, 5), w, 2)
    with pytest.raises(ValueError, match="都给"):
        F.causal_self_attention(x, w, w, w, 2, tt.randn(6))
