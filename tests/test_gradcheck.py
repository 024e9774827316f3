"""tt.gradcheck 本身：对的算子通过，错的 backward 一定报错（中文信息），拒绝 float32。"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
from tinytensor.autograd import Function
from tinytensor.gradcheck import numerical_grad
from tinytensor.nn import functional as F


def _t(*shape, seed=0, requires_grad=True):
    rng = np.random.default_rng(seed)
    return tt.tensor(rng.standard_normal(shape), dtype=tt.float64, requires_grad=requires_grad)


class SquareWrong(Function):
    """y = x²，但 backward 故意写成 x（少了系数 2）。"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x


class SquareRight(Function):
    """y = x²，dy/dx = 2x。"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * g * x


class MulWrongSecond(Function):
    """y = a·b；对 a 的梯度正确，对 b 的梯度错误（返回 g·b 而非 g·a）。"""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * b, g * b


@pytest.mark.parametrize(
    "fn,shapes",
    [
        (lambda a, b: (a * b + a / (b * b + 1)).sum(), [(3, 4), (3, 4)]),
        (lambda a, b: a @ b, [(2, 3), (3, 5)]),
        (lambda a, b: (a + b).tanh(), [(2, 3), (3,)]),  # 广播
        (lambda a: a.softmax(-1), [(3, 5)]),
        (lambda a, w, b: F.layer_norm(a, (4,), w, b), [(3, 4), (4,), (4,)]),
        (lambda a, w: F.linear(a, w), [(2, 3, 4), (5, 4)]),
        (lambda a: F.gelu(a), [(6,)]),
        (lambda a: SquareRight.apply(a), [(2, 3)]),
        (lambda a: (a.T @ a).sum(), [(3, 2)]),  # 标量输出
    ],
)
def test_passes_on_correct_ops(fn, shapes):
    inputs = [_t(*s, seed=i) for i, s in enumerate(shapes)]
    assert tt.gradcheck(fn, inputs)


def test_passes_with_integer_and_constant_inputs():
    logits = _t(4, 5)
    targets = tt.tensor([0, 4, 2, 2])
    const = _t(4, 5, seed=1, requires_grad=False)
    assert tt.gradcheck(lambda z, t, c: F.cross_entropy(z * c, t), [logits, targets, const])


def test_fails_on_wrong_backward_with_chinese_message():
    x = _t(2, 3)
    with pytest.raises(AssertionError, match="gradcheck 失败") as ei:
        tt.gradcheck(lambda a: SquareWrong.apply(a), [x])
    msg = str(ei.value)
    assert "第 0 个输入" in msg and "形状 (2, 3)" in msg
    assert "解析梯度" in msg and "数值梯度" in msg and "backward" in msg
    assert not tt.gradcheck(lambda a: SquareWrong.apply(a), [x], raise_exception=False)


def test_names_the_wrong_input():
    a, b = _t(3, seed=0), _t(3, seed=1)
    with pytest.raises(AssertionError, match="第 1 个输入"):
        tt.gradcheck(lambda p, q: MulWrongSecond.apply(p, q), [a, b])


def test_detects_small_error():
    """导数错 1%（超过 rtol=1e-3）也要抓到。"""

    class Scaled(Function):
        @staticmethod
        def forward(ctx, x):
            return 3.0 * x

        @staticmethod
        def backward(ctx, g):
            return 3.03 * g

    with pytest.raises(AssertionError):
        tt.gradcheck(lambda a: Scaled.apply(a), [_t(4) + 2.0])


def test_rejects_float32_inputs():
    x = tt.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        tt.gradcheck(lambda a: (a * a).sum(), [x])


def test_non_contiguous_and_non_leaf_inputs():
    base = np.random.default_rng(0).standard_normal((4, 3))
    x = tt.tensor(base, dtype=tt.float64, requires_grad=True)
    x.data = base.T  # 非连续
    assert tt.gradcheck(lambda a: (a * a.exp()).sum(-1), [x])
    leaf = _t(3, 2)
    nonleaf = leaf * 2.0
    assert tt.gradcheck(lambda a: (a.tanh() * a).sum(), [nonleaf])


def test_numerical_grad_matches_closed_form():
    x = _t(5)
    (num,) = numerical_grad(lambda a: a * a, [x])
    w = np.random.default_rng(0).standard_normal(5)  # numerical_grad 求的是 sum(fn · w) 的梯度
    np.testing.assert_allclose(num, 2 * x.data * w, rtol=1e-7, atol=1e-8)
    # 不需要梯度的输入给出零
    c = _t(5, requires_grad=False)
    _, zero = numerical_grad(lambda a, b: (a * b).sum(), [x, c])
    assert not zero.any()
