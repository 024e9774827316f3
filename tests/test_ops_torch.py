"""逐算子与 PyTorch 对照：前向、反向（同一个随机上游梯度）、输出与梯度的 dtype。

覆盖连续与非连续（转置、带步幅切片、非连续的叶子数据）输入，float64 严格（rtol 1e-10）、float32 宽松。
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers_ops import CASES, Case, single  # noqa: E402
from torch_compare import LAYOUTS, compare, same_dtype  # noqa: E402

import tinytensor as tt  # noqa: E402

pytestmark = pytest.mark.torch

TORCH_CASES = [c for c in CASES if c.torch]


def _run(case: Case, dtype: type, layout: str) -> None:
    f32 = dtype == np.float32
    compare(
        lambda *xs: single(tt, case.fn(tt, *xs)),
        lambda *xs: single(torch, case.torch_callable()(torch, *xs)),
        case.arrays(),
        dtype,
        layout,
        rtol=case.rtol32 if f32 else None,
        atol=case.atol32 if f32 else None,
        requires_grad=[case.needs_grad(i) for i in range(len(case.shapes))],
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.name)
def test_op_float64(case: Case, layout: str) -> None:
    _run(case, np.float64, layout)


@pytest.mark.parametrize("layout", ["contig", "npview"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.name)
def test_op_float32(case: Case, layout: str) -> None:
    _run(case, np.float32, layout)


# ---------------------------------------------------------------------------- 返回下标的函数


def _pair(arr: np.ndarray) -> tuple[tt.Tensor, torch.Tensor]:
    return tt.tensor(arr), torch.tensor(arr)


@pytest.mark.parametrize("fn", ["max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (-1, False), (2, True)])
def test_max_min_dim_values_and_indices(fn: str, dim: int, keepdim: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5))
    a, b = _pair(x)
    va, ia = getattr(a, fn)(dim=dim, keepdim=keepdim)
    vb, ib = getattr(b, fn)(dim=dim, keepdim=keepdim)
    np.testing.assert_array_equal(va.data, vb.numpy())
    np.testing.assert_array_equal(ia.data, ib.numpy())
    assert ia.dtype == tt.int64 and same_dtype(ia, ib)
    # 命名字段与 torch.return_types 相同
    r = getattr(a, fn)(dim)
    np.testing.assert_array_equal(r.indices.data, getattr(b, fn)(dim).indices.numpy())


def test_max_global_ties_split_gradient_like_torch() -> None:
    x = np.array([[1.0, 3.0, 3.0], [2.0, 3.0, 0.0]])
    compare(lambda a: a.max(), lambda a: a.max(), [x], np.float64)
    compare(lambda a: a.min() * 2, lambda a: a.min() * 2, [x], np.float64)


@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), (-1, False)])
def test_argmax_argmin(dim: int | None, keepdim: bool) -> None:
    x = np.random.default_rng(5).standard_normal((4, 6))
    a, b = _pair(x)
    for name in ("argmax", "argmin"):
        got = getattr(a, name)(dim=dim, keepdim=keepdim)
        want = getattr(b, name)(dim=dim, keepdim=keepdim)
        assert got.shape == tuple(want.shape) and same_dtype(got, want)
        np.testing.assert_array_equal(got.data, want.numpy())
    np.testing.assert_array_equal(tt.argmax(a, dim=dim).data, torch.argmax(b, dim=dim).numpy())


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dim", [-1, 0])
def test_topk(largest: bool, dim: int) -> None:
    x = np.random.default_rng(6).standard_normal((5, 7))
    a, b = _pair(x)
    va, ia = a.topk(3, dim=dim, largest=largest)
    vb, ib = b.topk(3, dim=dim, largest=largest)
    np.testing.assert_array_equal(va.data, vb.numpy())
    np.testing.assert_array_equal(ia.data, ib.numpy())
    assert same_dtype(ia, ib) and same_dtype(va, vb)


def test_clamp_forward_like_torch_float32() -> None:
    x = np.random.default_rng(7).standard_normal((4, 5)).astype(np.float32)
    a, b = _pair(x)
    for kw in ({"min": -0.3}, {"max": 0.1}, {"min": -0.2, "max": 0.4}):
        got, want = a.clamp(**kw), b.clamp(**kw)
        assert same_dtype(got, want)
        np.testing.assert_array_equal(got.data, want.numpy())


def test_clamp_boundary_gradient_like_torch() -> None:
    """边界上的元素（a == min 或 a == max）梯度为 1，与 torch 相同。"""
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    compare(lambda a: a.clamp(-0.5, 0.5), lambda a: a.clamp(-0.5, 0.5), [x], np.float64)


def test_relu_abs_gradient_at_zero_like_torch() -> None:
    x = np.array([-1.0, 0.0, 2.0])
    compare(lambda a: a.relu() + a.abs(), lambda a: a.relu() + a.abs(), [x], np.float64)


def test_pow_tensor_exponent_zero_base_like_torch() -> None:
    """0 ** b 对 b 的梯度取 0（而不是 0·log 0 = nan），与 torch 相同。"""
    base = np.array([0.0, 0.0, 2.0])
    exp = np.array([2.0, 3.0, 1.5])
    compare(lambda a, b: a**b, lambda a, b: a**b, [base, exp], np.float64)


# ---------------------------------------------------------------------------- 类型提升


@pytest.mark.parametrize(
    "expr",
    [
        lambda m: m.arange(3) * 2.5,
        lambda m: m.arange(3) / 2,
        lambda m: m.arange(1, 4) / m.arange(1, 4),
        lambda m: m.arange(3) + m.ones(3),
        lambda m: m.ones(3) + m.arange(3),
        lambda m: m.arange(3) * m.ones(3, dtype=m.float64),
        lambda m: m.arange(3) + 1,
        lambda m: m.arange(3) * 2,
        lambda m: m.ones(3) * 2,
        lambda m: m.ones(3, dtype=m.float64) * 2.5,
        lambda m: m.ones(3) + m.ones(3, dtype=m.float64),
        lambda m: 2.0 - m.arange(3),
        lambda m: m.arange(3) ** 2,
        lambda m: m.arange(3) ** 0.5,
        lambda m: m.where(m.arange(3) > 0, m.arange(3), 0.5),
    ],
)
def test_dtype_promotion_like_torch(expr) -> None:
    got, want = expr(tt), expr(torch)
    assert same_dtype(got, want), f"{got.dtype} ≠ {want.dtype}"
    np.testing.assert_allclose(got.data, want.numpy(), rtol=1e-6)


def test_creation_dtypes_like_torch() -> None:
    pairs = [
        (tt.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])),
        (tt.tensor([1, 2]), torch.tensor([1, 2])),
        (tt.tensor([True, False]), torch.tensor([True, False])),
        (tt.tensor(np.zeros(2)), torch.tensor(np.zeros(2))),
        (tt.tensor(np.zeros(2, dtype=np.int32)), torch.tensor(np.zeros(2, dtype=np.int32))),
        (tt.tensor(3.5), torch.tensor(3.5)),
        (tt.tensor([1, 2.5]), torch.tensor([1, 2.5])),
        (tt.zeros(2, 3), torch.zeros(2, 3)),
        (tt.ones(2), torch.ones(2)),
        (tt.randn(2), torch.randn(2)),
        (tt.rand(2), torch.rand(2)),
        (tt.empty(2), torch.empty(2)),
        (tt.arange(5), torch.arange(5)),
        (tt.arange(0, 1, 0.25), torch.arange(0, 1, 0.25)),
        (tt.arange(5, dtype=tt.float64), torch.arange(5, dtype=torch.float64)),
        (tt.full((2,), 3), torch.full((2,), 3)),
        (tt.full((2,), 3.0), torch.full((2,), 3.0)),
        (tt.zeros_like(tt.ones(2, dtype=tt.float64)), torch.zeros_like(torch.ones(2, dtype=torch.float64))),
        (tt.ones_like(tt.arange(3)), torch.ones_like(torch.arange(3))),
        (tt.randn_like(tt.ones(2), dtype=tt.float64), torch.randn_like(torch.ones(2), dtype=torch.float64)),
    ]
    for a, b in pairs:
        assert same_dtype(a, b), f"{a.dtype} ≠ {b.dtype}"
        assert a.shape == tuple(b.shape)
    np.testing.assert_array_equal(tt.arange(0, 1, 0.25).data, torch.arange(0, 1, 0.25).numpy())
    np.testing.assert_array_equal(tt.arange(2, 11, 3).data, torch.arange(2, 11, 3).numpy())


# ---------------------------------------------------------------------------- 数值稳定性

EXTREME = np.array([[-1000.0, 0.0, 1000.0], [50.0, 50.0, -50.0], [1e4, 1e4, 1e4], [-800.0, -799.0, -801.0]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "name,fn",
    [
        ("sigmoid", lambda m, x: x.sigmoid()),
        ("tanh", lambda m, x: x.tanh()),
        ("softmax", lambda m, x: x.softmax(-1)),
        ("softmax-0", lambda m, x: x.softmax(0)),
        ("log_softmax", lambda m, x: x.log_softmax(-1)),
        ("cross_entropy", lambda m, x: m.nn.functional.cross_entropy(x, m.tensor([2, 0, 1, 2]), reduction="none")),
        ("gelu", lambda m, x: m.nn.functional.gelu(x / 100, approximate="tanh")),
    ],
)
def test_extreme_values_no_overflow(name, fn, dtype) -> None:
    """极端输入：不溢出、不出 NaN、没有 NumPy 警告，且与 torch 一致。"""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = compare(lambda x: fn(tt, x), lambda x: fn(torch, x), [EXTREME], dtype)
    assert np.all(np.isfinite(out.data))
