"""融合的输出层 + 交叉熵 F.linear_cross_entropy：与 F.linear + F.cross_entropy、有限差分、torch 一致。"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
from tinytensor.nn import functional as F


def _case(rng, dtype, bias, n=37, c=6, v=11, ignore=True):
    x = tt.tensor(rng.standard_normal((n, c)).astype(dtype), requires_grad=True)
    w = tt.tensor(rng.standard_normal((v, c)).astype(dtype), requires_grad=True)
    b = tt.tensor(rng.standard_normal(v).astype(dtype), requires_grad=True) if bias else None
    t = rng.integers(0, v, n)
    if ignore:
        t[::5] = -100
    return x, w, b, t


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 8, 256])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 3e-5)])
def test_matches_linear_then_cross_entropy(reduction, bias, chunk, dtype, tol):
    rng = np.random.default_rng(0)
    x, w, b, t = _case(rng, dtype, bias)
    leaves = [p for p in (x, w, b) if p is not None]
    results = []
    for fused in (True, False):
        for p in leaves:
            p.grad = None
        if fused:
            loss = F.linear_cross_entropy(x, w, t, b, reduction=reduction, chunk_size=chunk)
        else:
            loss = F.cross_entropy(F.linear(x, w, b), t, reduction=reduction)
        (loss * 1.7).backward()
        assert loss.dtype == dtype
        results.append((loss.item(), [p.grad.data.copy() for p in leaves]))
    (l1, g1), (l2, g2) = results
    assert abs(l1 - l2) <= tol * max(1.0, abs(l2))
    for a, b_ in zip(g1, g2):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b_, rtol=tol, atol=tol)


@pytest.mark.parametrize("nt", [2, 3])
@pytest.mark.parametrize("chunk", [1, 4, 512])
@pytest.mark.parametrize("bias", [False, True])
def test_threaded_blocks_match_linear_then_cross_entropy(request, monkeypatch: pytest.MonkeyPatch, nt, chunk, bias):
    """各块切给 nt 个线程（每个线程累加自己的 dW、db，最后相加）与不融合的写法一致；块数少于线程数时块自动改小。"""
    from tinytensor.kernels import backend, threads
    from tinytensor.ops import fused

    if not threads.available():
        pytest.skip("threadpoolctl 找不到可设置的 BLAS")
    threads.claim_blas()  # 切分只在调优打开（BLAS 单线程）时发生
    request.addfinalizer(threads.release_blas)
    monkeypatch.setattr(fused, "_LCE_PAR_MIN", 0)
    monkeypatch.setattr(backend, "get_num_threads", lambda: nt)
    calls = []
    run_parts = threads.run_parts
    monkeypatch.setattr(threads, "run_parts", lambda fn, n, k: calls.append((n, k)) or run_parts(fn, n, k))
    rng = np.random.default_rng(nt * 10 + chunk)
    x, w, b, t = _case(rng, np.float64, bias)
    leaves = [p for p in (x, w, b) if p is not None]
    loss = F.linear_cross_entropy(x, w, t, b, chunk_size=chunk)
    loss.backward()
    got = [loss.item(), *(p.grad.data.copy() for p in leaves)]
    assert calls and calls[0][1] == nt  # 真的切给了 nt 个线程（37 行：块 ≤ ⌈37/nt⌉ 行）
    for p in leaves:
        p.grad = None
    ref = F.cross_entropy(F.linear(x, w, b), t)
    ref.backward()
    np.testing.assert_allclose(got[0], ref.item(), rtol=1e-12)
    for a, p in zip(got[1:], leaves):
        np.testing.assert_allclose(a, p.grad.data, rtol=1e-12, atol=1e-12)


def test_bad_chunk_size_is_rejected():
    rng = np.random.default_rng(4)
    x, w, b, t = _case(rng, np.float64, False)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            F.linear_cross_entropy(x, w, t, chunk_size=bad)


def test_gradcheck_and_3d_input():
    rng = np.random.default_rng(1)
    x = tt.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    w = tt.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    b = tt.tensor(rng.standard_normal(5), requires_grad=True)
    t = rng.integers(0, 5, (2, 3))
    tt.gradcheck(lambda x, w, b: F.linear_cross_entropy(x, w, t, b, chunk_size=2), [x, w, b])


def test_no_grad_and_none_reduction():
    rng = np.random.default_rng(2)
    x, w, b, t = _case(rng, np.float64, True)
    with tt.no_grad():
        rows = F.linear_cross_entropy(x, w, t, b, reduction="none")
    ref = F.cross_entropy(F.linear(x, w, b), t, reduction="none")
    np.testing.assert_allclose(rows.data, ref.data, rtol=1e-12)
    with pytest.raises(RuntimeError, match="reduction"):
        F.linear_cross_entropy(x, w, t, b, reduction="none")


def test_bad_input():
    x, w = tt.randn(4, 3), tt.randn(5, 3)
    with pytest.raises(IndexError, match="7"):
        F.linear_cross_entropy(x, w, np.array([0, 1, 7, 2]))
    with pytest.raises(RuntimeError, match="target 形状"):
        F.linear_cross_entropy(x, w, np.array([0, 1]))
    with pytest.raises(RuntimeError, match="权重形状"):
        F.linear_cross_entropy(x, tt.randn(5, 4), np.array([0, 1, 2, 3]))


@pytest.mark.torch
def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, w, b, t = _case(rng, np.float64, True)
    loss = F.linear_cross_entropy(x, w, t, b, chunk_size=8)
    loss.backward()
    tx, tw, tb = (torch.tensor(a.data, requires_grad=True) for a in (x, w, b))
    tl = torch.nn.functional.cross_entropy(tx @ tw.T + tb, torch.tensor(t))
    tl.backward()
    assert abs(loss.item() - tl.item()) < 1e-12
    for a, tb_ in zip((x, w, b), (tx, tw, tb)):
        np.testing.assert_allclose(a.grad.data, tb_.grad.numpy(), rtol=1e-10, atol=1e-12)
