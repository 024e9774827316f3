"""float64 中心差分检查每个可求导算子的解析梯度；float32 输入时输出与梯度都保持 float32。

用例表见 helpers_ops.CASES（与 torch 对照共用同一张表）。不需要 torch。
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers_ops import CASES, Case, run_tt, tt_inputs, upstream

import tinytensor as tt
import tinytensor.nn.functional as F
from tinytensor.autograd import Function
from tinytensor.ops import elementwise as E

GRADCHECK_CASES = [c for c in CASES if c.gradcheck]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: c.name)
def test_gradcheck(case: Case) -> None:
    xs = tt_inputs(case, np.float64)
    assert tt.gradcheck(lambda *a: run_tt(case, a), xs)


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: c.name)
def test_gradcheck_second_draw(case: Case) -> None:
    """换一组随机数再查一次（某些错误只在特定取值下暴露）。"""
    xs = tt_inputs(case, np.float64, salt=7)
    assert tt.gradcheck(lambda *a: run_tt(case, a), xs)


class _Spy(Function):
    """恒等算子，记录反向时流经它的梯度的 dtype（检查图内部的梯度，而不只是叶子的 .grad）。"""

    seen: list = []

    @staticmethod
    def forward(ctx, a):
        return a

    @staticmethod
    def backward(ctx, g):
        _Spy.seen.append(g.dtype)
        return g


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_float32_stays_float32(case: Case) -> None:
    """float32 输入：输出、流经图内部的梯度、每个叶子的梯度都是 float32，且有限。"""
    xs = tt_inputs(case, np.float32)
    _Spy.seen = []
    out = run_tt(case, [_Spy.apply(x) for x in xs])
    if case.keeps_dtype:
        assert out.dtype == tt.float32, f"输出 dtype {out.dtype}"
    out.backward(upstream(out.shape, out.dtype))
    for i, x in enumerate(xs):
        assert x.grad is not None, f"输入 {i} 没有梯度"
        assert x.grad.dtype == tt.float32, f"输入 {i} 的梯度 dtype {x.grad.dtype}"
        assert x.grad.shape == x.shape
        assert np.all(np.isfinite(x.grad.data))
    assert _Spy.seen and all(d == np.float32 for d in _Spy.seen), _Spy.seen


# ---------------------------------------------------------------------------- dropout：掩码固定


def test_dropout_gradcheck_with_fixed_seed() -> None:
    """F.dropout 每次调用重新采样掩码；在函数里先 manual_seed，使每次求值的掩码相同。"""
    x = tt.randn(4, 5, dtype=tt.float64, requires_grad=True)

    def fn(a: tt.Tensor) -> tt.Tensor:
        tt.manual_seed(123)
        return F.dropout(a, p=0.4, training=True)

    assert tt.gradcheck(fn, [x])
    # 掩码确实把一部分元素置零、其余乘 1/(1-p)，且梯度就是掩码
    y = fn(x)
    x.grad = None
    y.backward(np.ones(y.shape))
    g = x.grad.data
    assert set(np.round(np.unique(g), 12)) <= {0.0, round(1 / 0.6, 12)}
    assert 0 < np.count_nonzero(g) < g.size
    np.testing.assert_array_equal(y.data, x.data * g)


def test_dropout_op_gradcheck_with_given_mask() -> None:
    rng = np.random.default_rng(0)
    mask = (rng.random((3, 4)) >= 0.5) / 0.5
    x = tt.randn(3, 4, dtype=tt.float64, requires_grad=True)
    assert tt.gradcheck(lambda a: E.Dropout.apply(a, mask=mask), [x])


def test_dropout_p1_zeroes_everything() -> None:
    x = tt.randn(3, 4, requires_grad=True)
    y = F.dropout(x, p=1.0)
    assert not np.any(y.data)
    y.sum().backward()
    assert not np.any(x.grad.data)


def test_sdpa_dropout_gradcheck_with_fixed_seed() -> None:
    q, k, v = (tt.randn(2, 4, 3, dtype=tt.float64, requires_grad=True) for _ in range(3))

    def fn(a, b, c):
        tt.manual_seed(7)
        return F.scaled_dot_product_attention(a, b, c, dropout_p=0.3, is_causal=True)

    assert tt.gradcheck(fn, [q, k, v])


# ---------------------------------------------------------------------------- 梯度检查本身能失败


class _WrongSquare(Function):
    """故意写错的反向：dy/da 应为 2a，这里给 a。"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * a


def test_gradcheck_catches_wrong_backward() -> None:
    x = tt.randn(3, dtype=tt.float64, requires_grad=True)
    with pytest.raises(AssertionError, match="gradcheck 失败"):
        tt.gradcheck(_WrongSquare.apply, [x])
    assert tt.gradcheck(_WrongSquare.apply, [x], raise_exception=False) is False


def test_gradcheck_requires_float64() -> None:
    x = tt.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        tt.gradcheck(lambda a: a * 2, [x])


def test_gradcheck_non_contiguous_input() -> None:
    """gradcheck 对非连续的叶子数据也成立（内部会转成连续数组再扰动）。"""
    base = np.random.default_rng(0).standard_normal((4, 3))
    x = tt.from_numpy(base.T).requires_grad_()
    assert tt.gradcheck(lambda a: (a @ a.T).tanh(), [x])
