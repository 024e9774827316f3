"""融合算子 (tt.nn.functional) 与它们由基本算子拼成的孪生实现 (tinytensor/functional.py) 一致：
前向与反向，float64 严格、float32 宽松。孪生实现本身也做有限差分检查。不需要 torch。
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import tinytensor as tt
import tinytensor.composed as C  # 拼出来的孪生
import tinytensor.nn.functional as F  # 融合版 (fused)

T = np.array([3, 0, 6, 2, 3, 5])
T_IGN = np.array([3, -100, 6, -100, 1, 0])

# (名字, 融合版, 孪生版, 输入形状)
PAIRS: list[tuple[str, Callable, Callable, tuple]] = [
    ("layer_norm-affine", lambda x, w, b: F.layer_norm(x, (8,), w, b), C.layer_norm, ((2, 3, 8), (8,), (8,))),
    ("layer_norm-plain", lambda x: F.layer_norm(x, (8,)), C.layer_norm, ((4, 8),)),
    ("layer_norm-weight", lambda x, w: F.layer_norm(x, (8,), w), C.layer_norm, ((4, 8), (8,))),
    (
        "layer_norm-eps",
        lambda x, w, b: F.layer_norm(x, (8,), w, b, eps=1e-3),
        lambda x, w, b: C.layer_norm(x, w, b, eps=1e-3),
        ((4, 8), (8,), (8,)),
    ),
    ("gelu", F.gelu, C.gelu, ((3, 4, 5),)),
    ("cross_entropy-mean", lambda x: F.cross_entropy(x, T), lambda x: C.cross_entropy(x, T), ((6, 7),)),
    (
        "cross_entropy-sum",
        lambda x: F.cross_entropy(x, T, reduction="sum"),
        lambda x: C.cross_entropy(x, T, reduction="sum"),
        ((6, 7),),
    ),
    (
        "cross_entropy-none",
        lambda x: F.cross_entropy(x, T, reduction="none"),
        lambda x: C.cross_entropy(x, T, reduction="none"),
        ((6, 7),),
    ),
    (
        "cross_entropy-ignore",
        lambda x: F.cross_entropy(x, T_IGN),
        lambda x: C.cross_entropy(x, T_IGN),
        ((6, 7),),
    ),
    (
        "cross_entropy-ignore-3",
        lambda x: F.cross_entropy(x, T, ignore_index=3, reduction="sum"),
        lambda x: C.cross_entropy(x, T, ignore_index=3, reduction="sum"),
        ((6, 7),),
    ),
    (
        "sdpa",
        F.scaled_dot_product_attention,
        C.scaled_dot_product_attention,
        ((2, 2, 5, 4),) * 3,
    ),
    (
        "sdpa-causal",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        lambda q, k, v: C.scaled_dot_product_attention(q, k, v, is_causal=True),
        ((2, 2, 5, 4),) * 3,
    ),
    (
        "sdpa-causal-rect-scale",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.7),
        lambda q, k, v: C.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.7),
        ((2, 3, 4), (2, 6, 4), (2, 6, 5)),
    ),
]


def _inputs(shapes: tuple, dtype: type, seed: int) -> list[tt.Tensor]:
    rng = np.random.default_rng(seed)
    return [tt.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True) for s in shapes]


def _fwd_bwd(fn: Callable, xs: list[tt.Tensor], g: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray]]:
    out = fn(*xs)
    if g is None:
        g = np.random.default_rng(99).standard_normal(out.shape).astype(out.dtype)
    out.backward(g)
    return out, [x.grad.data for x in xs]


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float64, 1e-12, 1e-13), (np.float32, 2e-5, 2e-6)])
@pytest.mark.parametrize("name,fused,composed,shapes", PAIRS, ids=[p[0] for p in PAIRS])
def test_fused_equals_composed(name, fused, composed, shapes, dtype, rtol, atol) -> None:
    xs1 = _inputs(shapes, dtype, seed=len(name))
    xs2 = [tt.tensor(x.data, requires_grad=True) for x in xs1]
    out1, g1 = _fwd_bwd(fused, xs1, None)
    g = np.random.default_rng(99).standard_normal(out1.shape).astype(out1.dtype)
    out2, g2 = _fwd_bwd(composed, xs2, g)
    assert out1.dtype == out2.dtype == dtype
    np.testing.assert_allclose(out1.data, out2.data, rtol=rtol, atol=atol, err_msg="前向")
    for i, (a, b) in enumerate(zip(g1, g2)):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"输入 {i} 的梯度")


@pytest.mark.parametrize("name,fused,composed,shapes", PAIRS, ids=[p[0] for p in PAIRS])
def test_composed_twin_gradcheck(name, fused, composed, shapes) -> None:
    assert tt.gradcheck(composed, _inputs(shapes, np.float64, seed=1))


def test_fused_is_one_node_composed_is_many() -> None:
    """融合的意义：一个计算图节点（孪生版有很多个）。"""
    x = tt.randn(2, 8, requires_grad=True)
    w, b = tt.ones(8, requires_grad=True), tt.zeros(8, requires_grad=True)
    y = F.layer_norm(x, (8,), w, b)
    assert [id(p) for p in y.grad_fn.parents] == [id(x), id(w), id(b)]
    z = C.layer_norm(x, w, b)
    assert z.grad_fn.parents[0].grad_fn is not None  # 由更小的节点拼成
