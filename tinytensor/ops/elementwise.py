"""逐元素算子：前向与反向写在一起。

每个类的文档字符串给出公式 y = f(...) 与它的导数；``g`` 表示上游梯度 dL/dy。
二元算子的输入可以互相广播：这里的反向只按广播后的形状给出梯度，
归约回输入形状由 autograd.unbroadcast 统一完成。
"""

from __future__ import annotations

import numpy as np

from ..autograd import Function


class Add(Function):
    """y = a + b；dy/da = 1，dy/db = 1。"""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """y = a - b；dy/da = 1，dy/db = -1。"""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b；dy/da = b，dy/db = a。"""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ga = g * b if ctx.needs_input_grad[0] else None
        gb = g * a if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b；dy/da = 1/b，dy/db = -a/b² = -y/b。"""

    @staticmethod
    def forward(ctx, a, b):
        out = a / b
        ctx.save_for_backward(b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        b, out = ctx.saved_tensors
        ga = g / b
        gb = -ga * out if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """y = -a；dy/da = -1。"""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class PowScalar(Function):
    """y = a ** p（p 是常数）；dy/da = p · a^(p-1)。"""

    @staticmethod
    def forward(ctx, a, *, exponent):
        ctx.save_for_backward(a)
        ctx.exponent = exponent
        return a**exponent

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        p = ctx.exponent
        if p == 2:
            return g * (2 * a)
        return g * (p * a ** (p - 1))


class Pow(Function):
    """y = a ** b（两者都是张量）；dy/da = b · a^(b-1)，dy/db = y · ln(a)。

    与 torch 一致：a == 0 且 b >= 0 处 dy/db 取 0（而不是 0 · ln 0 = nan）。
    """

    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = g * b * a ** (b - 1)
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                gb = g * out * np.log(a)
            gb = np.where((a == 0) & (b >= 0), np.zeros_like(gb), gb)
        return ga, gb


class Exp(Function):
    """y = e^a；dy/da = y。"""

    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out


class Log(Function):
    """y = ln a；dy/da = 1/a。"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / a


class Sqrt(Function):
    """y = √a；dy/da = 1/(2y)。"""

    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g / (2 * out)


class Tanh(Function):
    """y = tanh a；dy/da = 1 - y²。"""

    @staticmethod
    def forward(ctx, a):
        out = np.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (1 - out * out)


class Sigmoid(Function):
    """y = 1/(1+e^-a)；dy/da = y(1-y)。

    前向写成 e^(-log(1+e^-a))，用 logaddexp 避免大负数时 e^-a 溢出。
    """

    @staticmethod
    def forward(ctx, a):
        out = np.exp(-np.logaddexp(0, -a)).astype(a.dtype, copy=False)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out * (1 - out)


class Relu(Function):
    """y = max(a, 0)；dy/da = 1[a > 0]（a = 0 处取 0，与 torch 一致）。"""

    @staticmethod
    def forward(ctx, a):
        mask = a > 0
        ctx.save_for_backward(mask)
        return np.where(mask, a, np.zeros((), dtype=a.dtype))

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class Abs(Function):
    """y = |a|；dy/da = sign(a)（a = 0 处为 0）。"""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * np.sign(a)


class Clamp(Function):
    """y = min(max(a, lo), hi)；dy/da = 1[lo ≤ a ≤ hi]（闭区间，与 torch 一致）。"""

    @staticmethod
    def forward(ctx, a, *, min=None, max=None):  # noqa: A002  与 torch 参数同名
        mask = np.ones(a.shape, dtype=bool)
        if min is not None:
            mask &= a >= min
        if max is not None:
            mask &= a <= max
        ctx.save_for_backward(mask)
        return np.clip(a, min, max).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class MaskedFill(Function):
    """y = where(mask, value, a)；dy/da = 1[not mask]。mask 不参与求导。"""

    @staticmethod
    def forward(ctx, a, *, mask, value):
        ctx.save_for_backward(mask)
        return np.where(mask, np.asarray(value, dtype=a.dtype), a)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return np.where(mask, np.zeros((), dtype=g.dtype), g)


class Where(Function):
    """y = where(cond, x, z)；dy/dx = 1[cond]，dy/dz = 1[not cond]。"""

    @staticmethod
    def forward(ctx, x, z, *, cond):
        ctx.save_for_backward(cond)
        return np.where(cond, x, z)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        zero = np.zeros((), dtype=g.dtype)
        gx = np.where(cond, g, zero) if ctx.needs_input_grad[0] else None
        gz = np.where(cond, zero, g) if ctx.needs_input_grad[1] else None
        return gx, gz


class Tril(Function):
    """y = tril(a, k)：保留第 k 条对角线及其下方；梯度同样只保留这些位置。"""

    @staticmethod
    def forward(ctx, a, *, diagonal=0):
        ctx.diagonal = diagonal
        return np.tril(a, diagonal)

    @staticmethod
    def backward(ctx, g):
        return np.tril(g, ctx.diagonal)


class Triu(Function):
    """y = triu(a, k)：保留第 k 条对角线及其上方；梯度同样只保留这些位置。"""

    @staticmethod
    def forward(ctx, a, *, diagonal=0):
        ctx.diagonal = diagonal
        return np.triu(a, diagonal)

    @staticmethod
    def backward(ctx, g):
        return np.triu(g, ctx.diagonal)


class Dropout(Function):
    """y = a · m，m 是预先采样的 {0, 1/(1-p)} 掩码；dy/da = m。"""

    @staticmethod
    def forward(ctx, a, *, mask):
        ctx.save_for_backward(mask)
        return a * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask
