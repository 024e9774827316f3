"""Tensor：包着一个 NumPy 数组，记录它是怎么算出来的，以便反向求梯度。

- ``.data``：底层 np.ndarray（优化器只在 no_grad 下写它）；
- ``.grad``：反向传播后累加得到的梯度（也是 Tensor）；
- ``.requires_grad``：是否需要梯度；只有浮点张量可以需要梯度；
- ``._ctx``：产生它的算子节点 (Function)，叶子张量为 None。

方法名与语义尽量和 PyTorch 相同，运算符 (+ - * / ** @ 索引) 都转到 ops 里的算子。
"""

from __future__ import annotations

import builtins
from collections import namedtuple
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import autograd
from . import dtypes as _dt
from .ops import elementwise as E
from .ops import matmul as MM
from .ops import movement as MV
from .ops import reduce as R
from .ops import softmax as SM

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])
"""max(dim) / min(dim) / topk 的返回值：(values, indices)，与 torch.return_types 相同的用法。"""


def _to_array(data: Any, dtype: Any = None) -> np.ndarray:
    """把 Python 数据 / ndarray / Tensor 转成 ndarray，按 torch 的规则推断 dtype。"""
    if isinstance(data, Tensor):
        arr = data.data
        return arr.astype(dtype) if dtype is not None else arr.copy()
    if isinstance(data, (np.ndarray, np.generic)):
        arr = np.array(data, dtype=dtype)
        return arr
    arr = np.array(data, dtype=dtype)
    if dtype is None:
        if arr.dtype.kind == "f":
            arr = arr.astype(_dt.get_default_dtype())
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "b":
            raise TypeError(f"无法从 {type(data).__name__}（numpy dtype {arr.dtype}）创建张量")
    return arr


def _promote(a: Tensor, b: Tensor, true_div: bool = False) -> tuple[Tensor, Tensor]:
    """按 torch 的类型提升统一整数与浮点：整数/布尔一方转成浮点一方的类型
    （NumPy 会把 int64 与 float32 提升成 float64，torch 得 float32）；整数相除得默认浮点类型。
    被转换的一方不是浮点，不可能需要梯度，所以直接换数据。"""
    fa, fb = a.dtype.kind == "f", b.dtype.kind == "f"
    if fa and not fb:
        b = Tensor._wrap(b.data.astype(a.dtype), False)
    elif fb and not fa:
        a = Tensor._wrap(a.data.astype(b.dtype), False)
    elif true_div and not fa and not fb:
        d = _dt.get_default_dtype()
        a, b = Tensor._wrap(a.data.astype(d), False), Tensor._wrap(b.data.astype(d), False)
    return a, b


def _dim(dim: Any, ndim: int) -> int:
    """检查并规范一个维度下标（负数从后数）；越界时报错而不是取模绕回（与 torch 相同）。"""
    dims = R.normalize_dims(int(dim), ndim)
    assert dims is not None  # 给出了整数维度，不会是 None
    return dims[0]


_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "npu")


def split_device_arg(dtype: Any, device: Any) -> tuple[Any, Any]:
    """``to("cuda")`` 这种把设备写在第一个位置的调用：返回 (dtype, device)。"""
    if isinstance(dtype, str) and dtype.split(":")[0] in _DEVICE_TYPES or type(dtype).__name__ == "device":
        if device is not None:
            raise TypeError(f"to()：设备给了两次：{dtype!r} 与 device={device!r}")
        return None, dtype
    return dtype, device


def check_device(device: Any) -> None:
    """tinytensor 只在 CPU 上运行：device 为 None、'cpu'、'cpu:0'（或等价的 torch.device）之外的都报错。"""
    if device is None:
        return
    name = str(device)
    if name not in ("cpu", "cpu:0"):
        raise RuntimeError(f"tinytensor 只在 CPU 上运行，不能使用设备 {device!r}（只接受 'cpu'）")


def _check_inplace(t: Tensor, op: str) -> None:
    """与 torch 相同：需要梯度的叶子张量（以及计算图中的张量）不能在记录梯度时原地修改。"""
    if autograd.is_grad_enabled() and (t._requires_grad or t._ctx is not None):
        what = "需要梯度的叶子张量" if t._ctx is None else "计算图中的张量"
        raise RuntimeError(f"{op}：不能原地修改{what}；请在 tt.no_grad() 下修改（如初始化参数），或改用不原地的运算")


def _check_requires_grad(arr: np.ndarray, requires_grad: bool) -> None:
    if requires_grad and arr.dtype.kind != "f":
        raise RuntimeError(f"只有浮点张量才能 requires_grad=True，而该张量的 dtype 是 {arr.dtype}")


class Tensor:
    """tinytensor 的张量。用 ``tt.tensor(...)`` 创建。"""

    __slots__ = ("data", "grad", "_requires_grad", "_ctx", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # 让 ndarray 与 Tensor 混合运算时由 Tensor 处理

    def __init__(self, data: Any, dtype: Any = None, requires_grad: builtins.bool = False) -> None:
        arr = _to_array(data, dtype)
        _check_requires_grad(arr, requires_grad)
        self.data: np.ndarray = arr
        self.grad: Tensor | None = None
        self._requires_grad = bool(requires_grad)
        self._ctx: autograd.Function | None = None
        self._retains_grad = False

    @classmethod
    def _wrap(cls, data: np.ndarray, requires_grad: builtins.bool = False) -> Tensor:
        """内部快速构造：不复制、不推断类型。"""
        t = object.__new__(Tensor)
        t.data = data
        t.grad = None
        t._requires_grad = requires_grad
        t._ctx = None
        t._retains_grad = False
        return t

    # ------------------------------------------------------------------ 属性
    @property
    def requires_grad(self) -> builtins.bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: builtins.bool) -> None:
        if self._ctx is not None and not value:
            raise RuntimeError("只能修改叶子张量的 requires_grad；非叶子张量请用 .detach()")
        _check_requires_grad(self.data, value)
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: builtins.bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> builtins.bool:
        return self._ctx is None

    @property
    def grad_fn(self) -> autograd.Function | None:
        return self._ctx

    def retain_grad(self) -> None:
        """让非叶子张量在反向后也保留 .grad（叶子张量本来就保留）。"""
        if not self._requires_grad:
            raise RuntimeError("不需要梯度的张量不能 retain_grad()")
        self._retains_grad = True

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def T(self) -> Tensor:  # noqa: N802
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:  # noqa: N802
        return self.transpose(-2, -1)

    @property
    def device(self) -> str:
        return "cpu"

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def numpy(self) -> np.ndarray:
        if self._requires_grad:
            raise RuntimeError("需要梯度的张量不能直接 .numpy()；请先 .detach().numpy()（与 torch 相同）")
        return self.data

    def item(self) -> builtins.float | int | bool:
        if self.data.size != 1:
            raise RuntimeError(f"item() 只适用于单元素张量，而形状为 {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def detach(self) -> Tensor:
        """返回共享数据、但脱离计算图的新张量。"""
        return Tensor._wrap(self.data, False)

    def clone(self) -> Tensor:
        return E.Add.apply(self, Tensor._wrap(np.zeros((), dtype=self.dtype)))

    def to(self, dtype: Any = None, device: Any = None) -> Tensor:
        """转换 dtype；device 只接受 CPU（'cpu'、'cpu:0'），其他设备抛出 RuntimeError。

        与 torch 相同，第一个参数也可以是设备名：``x.to("cpu")``。
        """
        dtype, device = split_device_arg(dtype, device)
        check_device(device)
        return self.type(dtype) if dtype is not None else self

    def type(self, dtype: Any) -> Tensor:
        d = np.dtype(dtype)
        if d == self.dtype:
            return self
        return _Cast.apply(self, dtype=d) if d.kind == "f" and self._requires_grad else Tensor._wrap(
            self.data.astype(d), False
        )

    def float(self) -> Tensor:
        return self.type(_dt.float32)

    def double(self) -> Tensor:
        return self.type(_dt.float64)

    def long(self) -> Tensor:
        return self.type(_dt.int64)

    def bool(self) -> Tensor:
        return self.type(_dt.bool_)

    def cpu(self) -> Tensor:
        return self

    def contiguous(self) -> Tensor:
        return self

    def backward(self, gradient: Any = None, retain_graph: builtins.bool = False) -> None:
        """从本张量开始反向传播。"""
        autograd.backward(self, gradient, retain_graph)

    def zero_(self) -> Tensor:
        """原地置零（如 .grad；需要梯度的张量只能在 no_grad 下，见 _check_inplace）。"""
        _check_inplace(self, "zero_")
        self.data[...] = 0
        return self

    def fill_(self, value: Any) -> Tensor:
        """原地填成 value（需要梯度的张量只能在 no_grad 下）。"""
        _check_inplace(self, "fill_")
        self.data[...] = value
        return self

    def copy_(self, src: Any) -> Tensor:
        """原地复制 src 的值（形状必须可广播；需要梯度的张量只能在 no_grad 下）。"""
        _check_inplace(self, "copy_")
        arr = src.data if isinstance(src, Tensor) else np.asarray(src)
        np.copyto(self.data, arr, casting="same_kind")
        return self

    # ------------------------------------------------------------------ 显示
    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.dtype not in (_dt.get_default_dtype(), _dt.int64, _dt.bool_):
            extras.append(f"dtype=tt.{self.dtype}")
        if self._ctx is not None:
            extras.append(f"grad_fn=<{self._ctx.name}Backward>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("0 维张量没有 len()")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    def __bool__(self) -> builtins.bool:
        if self.data.size != 1:
            raise RuntimeError(f"多于一个元素（形状 {self.shape}）的张量的真值是歧义的；请用 .any() 或 .all()")
        return bool(self.data.reshape(()))

    def __float__(self) -> builtins.float:
        return builtins.float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("只有单元素整数张量可以当作下标")
        return int(self.item())

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ 运算符
    def _lift(self, other: Any) -> Tensor:
        """把标量 / ndarray 变成常量张量；浮点张量与 Python 标量运算时保持张量的 dtype。"""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, np.ndarray):
            return Tensor._wrap(other, False)
        if self.dtype.kind == "f" or isinstance(other, (int, np.integer, bool)):
            dtype = self.dtype if not (self.dtype.kind == "b" and not isinstance(other, bool)) else None
            return Tensor._wrap(np.asarray(other, dtype=dtype), False)
        return Tensor._wrap(np.asarray(other, dtype=_dt.get_default_dtype()), False)

    def _binary(self, op: builtins.type[autograd.Function], other: Any, reverse: builtins.bool = False) -> Tensor:
        o = self._lift(other)
        a, b = (o, self) if reverse else (self, o)
        a, b = _promote(a, b, true_div=op is E.Div)
        try:
            return op.apply(a, b)
        except ValueError as e:
            if "broadcast" in str(e):
                raise RuntimeError(
                    f"{op.__name__.lower()}：形状 {tuple(a.shape)} 与 {tuple(b.shape)} 无法广播"
                ) from None
            raise

    def __add__(self, o: Any) -> Tensor:
        return self._binary(E.Add, o)

    def __radd__(self, o: Any) -> Tensor:
        return self._binary(E.Add, o, True)

    def __sub__(self, o: Any) -> Tensor:
        return self._binary(E.Sub, o)

    def __rsub__(self, o: Any) -> Tensor:
        return self._binary(E.Sub, o, True)

    def __mul__(self, o: Any) -> Tensor:
        return self._binary(E.Mul, o)

    def __rmul__(self, o: Any) -> Tensor:
        return self._binary(E.Mul, o, True)

    def __truediv__(self, o: Any) -> Tensor:
        return self._binary(E.Div, o)

    def __rtruediv__(self, o: Any) -> Tensor:
        return self._binary(E.Div, o, True)

    def __pow__(self, o: Any) -> Tensor:
        if isinstance(o, (int, builtins.float, np.integer, np.floating)) and not isinstance(o, bool):
            if self.dtype.kind != "f" and isinstance(o, (builtins.float, np.floating)):
                # 整数张量的浮点次幂得默认浮点类型（与 torch 相同）
                return E.PowScalar.apply(self.type(_dt.get_default_dtype()), exponent=o)
            return E.PowScalar.apply(self, exponent=o)
        return self._binary(E.Pow, o)

    def __rpow__(self, o: Any) -> Tensor:
        return self._binary(E.Pow, o, True)

    def __matmul__(self, o: Any) -> Tensor:
        return MM.MatMul.apply(self, self._lift(o))

    def __rmatmul__(self, o: Any) -> Tensor:
        return MM.MatMul.apply(self._lift(o), self)

    def __neg__(self) -> Tensor:
        return E.Neg.apply(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return E.Abs.apply(self)

    # 比较运算：结果是布尔张量，不参与求导
    def _compare(self, o: Any, fn: Any) -> Tensor:
        other = o.data if isinstance(o, Tensor) else o
        return Tensor._wrap(np.asarray(fn(self.data, other)), False)

    def __eq__(self, o: Any) -> Tensor:  # type: ignore[override]
        return self._compare(o, np.equal)

    def __ne__(self, o: Any) -> Tensor:  # type: ignore[override]
        return self._compare(o, np.not_equal)

    def __lt__(self, o: Any) -> Tensor:
        return self._compare(o, np.less)

    def __le__(self, o: Any) -> Tensor:
        return self._compare(o, np.less_equal)

    def __gt__(self, o: Any) -> Tensor:
        return self._compare(o, np.greater)

    def __ge__(self, o: Any) -> Tensor:
        return self._compare(o, np.greater_equal)

    def __invert__(self) -> Tensor:
        return Tensor._wrap(~self.data, False)

    def __and__(self, o: Any) -> Tensor:
        return self._compare(o, np.logical_and if self.dtype.kind == "b" else np.bitwise_and)

    def __or__(self, o: Any) -> Tensor:
        return self._compare(o, np.logical_or if self.dtype.kind == "b" else np.bitwise_or)

    def eq(self, o: Any) -> Tensor:
        return self == o

    def ne(self, o: Any) -> Tensor:
        return self != o

    def equal(self, o: Tensor) -> builtins.bool:
        return self.shape == o.shape and bool(np.array_equal(self.data, o.data))

    def any(self) -> Tensor:
        return Tensor._wrap(np.asarray(self.data.any()), False)

    def all(self) -> Tensor:
        return Tensor._wrap(np.asarray(self.data.all()), False)

    def isnan(self) -> Tensor:
        return Tensor._wrap(np.isnan(self.data), False)

    def isfinite(self) -> Tensor:
        return Tensor._wrap(np.isfinite(self.data), False)

    # ------------------------------------------------------------------ 逐元素
    def add(self, o: Any) -> Tensor:
        return self + o

    def sub(self, o: Any) -> Tensor:
        return self - o

    def mul(self, o: Any) -> Tensor:
        return self * o

    def div(self, o: Any) -> Tensor:
        return self / o

    def pow(self, o: Any) -> Tensor:
        return self**o

    def neg(self) -> Tensor:
        return -self

    def exp(self) -> Tensor:
        return E.Exp.apply(self)

    def log(self) -> Tensor:
        return E.Log.apply(self)

    def sqrt(self) -> Tensor:
        return E.Sqrt.apply(self)

    def rsqrt(self) -> Tensor:
        return self.sqrt().reciprocal()

    def reciprocal(self) -> Tensor:
        return 1.0 / self

    def tanh(self) -> Tensor:
        return E.Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return E.Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return E.Relu.apply(self)

    def abs(self) -> Tensor:
        return E.Abs.apply(self)

    def square(self) -> Tensor:
        return self * self

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        if min is None and max is None:
            raise ValueError("clamp 至少需要 min 或 max 之一")
        return E.Clamp.apply(self, min=min, max=max)

    clip = clamp

    def masked_fill(self, mask: Any, value: Any) -> Tensor:
        m = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
        if m.dtype != np.bool_:
            raise TypeError(f"masked_fill 的 mask 必须是布尔张量，收到 dtype {m.dtype}")
        try:
            np.broadcast_shapes(m.shape, self.shape)
        except ValueError:
            raise RuntimeError(f"masked_fill：mask 形状 {m.shape} 无法广播到张量形状 {self.shape}") from None
        v = value.item() if isinstance(value, Tensor) else value
        return E.MaskedFill.apply(self, mask=m, value=v)

    def tril(self, diagonal: int = 0) -> Tensor:
        return E.Tril.apply(self, diagonal=diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return E.Triu.apply(self, diagonal=diagonal)

    # ------------------------------------------------------------------ 归约
    def sum(self, dim: Any = None, keepdim: builtins.bool = False, dtype: Any = None) -> Tensor:
        t = self if dtype is None else self.type(dtype)
        return R.Sum.apply(t, dim=R.normalize_dims(dim, self.ndim), keepdim=keepdim)

    def mean(self, dim: Any = None, keepdim: builtins.bool = False) -> Tensor:
        if self.dtype.kind != "f":
            raise RuntimeError(f"mean 需要浮点张量，收到 dtype {self.dtype}")
        return R.Mean.apply(self, dim=R.normalize_dims(dim, self.ndim), keepdim=keepdim)

    def var(
        self, dim: Any = None, keepdim: builtins.bool = False, *, correction: int = 1, unbiased: Any = None
    ) -> Tensor:
        if unbiased is not None:
            correction = 1 if unbiased else 0
        return R.Var.apply(self, dim=R.normalize_dims(dim, self.ndim), keepdim=keepdim, correction=correction)

    def std(
        self, dim: Any = None, keepdim: builtins.bool = False, *, correction: int = 1, unbiased: Any = None
    ) -> Tensor:
        return self.var(dim, keepdim, correction=correction, unbiased=unbiased).sqrt()

    def _maxmin(self, dim: Any, keepdim: builtins.bool, largest: builtins.bool) -> Tensor | ValuesIndices:
        if dim is None:
            return R.MaxAll.apply(self, largest=largest)
        d = _dim(dim, self.ndim)
        if self.shape[d] == 0 if self.ndim else False:
            raise RuntimeError(f"不能在长度为 0 的第 {d} 维上取 {'max' if largest else 'min'}")
        arr = self.data if self.ndim else self.data.reshape(1)
        idx = np.argmax(arr, axis=d) if largest else np.argmin(arr, axis=d)
        idx_k = np.expand_dims(idx, d)
        values = MV.Gather.apply(self if self.ndim else self.reshape(1), dim=d, index=idx_k)
        if not keepdim:
            values = values.squeeze(d)
        indices = idx_k if keepdim else idx
        return ValuesIndices(values, Tensor._wrap(np.asarray(indices, dtype=np.int64), False))

    def max(self, dim: Any = None, keepdim: builtins.bool = False) -> Any:
        """无 dim：返回最大值；有 dim：返回 (values, indices)，与 torch 相同。"""
        return self._maxmin(dim, keepdim, True)

    def min(self, dim: Any = None, keepdim: builtins.bool = False) -> Any:
        return self._maxmin(dim, keepdim, False)

    def argmax(self, dim: int | None = None, keepdim: builtins.bool = False) -> Tensor:
        if dim is None:
            return Tensor._wrap(np.asarray(np.argmax(self.data), dtype=np.int64), False)
        return Tensor._wrap(np.argmax(self.data, axis=dim, keepdims=keepdim).astype(np.int64), False)

    def argmin(self, dim: int | None = None, keepdim: builtins.bool = False) -> Tensor:
        if dim is None:
            return Tensor._wrap(np.asarray(np.argmin(self.data), dtype=np.int64), False)
        return Tensor._wrap(np.argmin(self.data, axis=dim, keepdims=keepdim).astype(np.int64), False)

    def topk(self, k: int, dim: int = -1, largest: builtins.bool = True, sorted: builtins.bool = True) -> ValuesIndices:  # noqa: A002
        """前 k 大（或小）的值与下标（不求导，值是新张量）。"""
        n = self.shape[dim]
        if not 0 <= k <= n:
            raise RuntimeError(f"topk：k={k} 超出第 {dim} 维的长度 {n}")
        key = -self.data if largest else self.data
        idx = np.argsort(key, axis=dim, kind="stable")
        idx = np.take(idx, np.arange(k), axis=dim)
        vals = np.take_along_axis(self.data, idx, axis=dim)
        return ValuesIndices(Tensor._wrap(vals, False), Tensor._wrap(idx.astype(np.int64), False))

    def softmax(self, dim: int = -1) -> Tensor:
        return SM.Softmax.apply(self, dim=dim)

    def log_softmax(self, dim: int = -1) -> Tensor:
        return SM.LogSoftmax.apply(self, dim=dim)

    # ------------------------------------------------------------------ 形状
    def reshape(self, *shape: Any) -> Tensor:
        shp = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shp = tuple(int(s) for s in shp)
        if shp == self.shape:
            return self
        return MV.Reshape.apply(self, shape=shp)

    view = reshape

    def view_as(self, other: Tensor) -> Tensor:
        return self.reshape(other.shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s = _dim(start_dim, self.ndim)
        e = _dim(end_dim, self.ndim)
        shape = self.shape[:s] + (int(np.prod(self.shape[s : e + 1], dtype=np.int64)),) + self.shape[e + 1 :]
        return self.reshape(shape)

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        d = _dim(dim, self.ndim)
        return self.reshape(self.shape[:d] + tuple(sizes) + self.shape[d + 1 :])

    def permute(self, *dims: Any) -> Tensor:
        ds = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        ok = len(ds) == self.ndim and all(-self.ndim <= int(d) < self.ndim for d in ds)
        if not ok or sorted(int(d) % self.ndim for d in ds) != list(range(self.ndim)):
            raise RuntimeError(f"permute：{ds} 不是 {self.ndim} 个维度的一个排列")
        ds = tuple(int(d) % self.ndim for d in ds)
        return MV.Permute.apply(self, dims=ds)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        a, b = _dim(dim0, self.ndim), _dim(dim1, self.ndim)  # 0、1 维张量只接受 0 与 -1（与 torch 相同）
        if self.ndim < 2:
            return self
        dims = list(range(self.ndim))
        dims[a], dims[b] = dims[b], dims[a]
        return MV.Permute.apply(self, dims=tuple(dims))

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise RuntimeError(f"t() 只适用于不超过 2 维的张量，而该张量有 {self.ndim} 维")
        return self.transpose(0, 1)

    def unsqueeze(self, dim: int) -> Tensor:
        d = _dim(dim, self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim: Any = None) -> Tensor:
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        dims = R.normalize_dims(dim, self.ndim) or ()
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1)))

    def expand(self, *shape: Any) -> Tensor:
        shp = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        lead = len(shp) - self.ndim
        if lead < 0:
            raise RuntimeError(f"expand：目标形状 {shp} 的维数少于张量形状 {self.shape}")
        full = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(shp))
        if full == self.shape:
            return self
        return MV.Expand.apply(self, shape=full)

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def repeat(self, *sizes: Any) -> Tensor:
        reps = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        t = self.reshape((1,) * (len(reps) - self.ndim) + self.shape)
        inter = []
        for s, r in zip(t.shape, reps):
            inter += [r, s]
        return t.reshape(tuple(x for s in t.shape for x in (1, s))).expand(tuple(inter)).reshape(
            tuple(s * r for s, r in zip(t.shape, reps))
        )

    def split(self, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
        d = _dim(dim, self.ndim)
        n = self.shape[d]
        if isinstance(split_size, int):
            if split_size <= 0:
                raise ValueError(f"split_size 必须为正，收到 {split_size}")
            sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else [])
        else:
            sizes = list(split_size)
            if sum(sizes) != n:
                raise RuntimeError(f"split：各段长度之和 {sum(sizes)} 不等于第 {dim} 维的长度 {n}")
        out, start = [], 0
        for s in sizes:
            key = (slice(None),) * d + (slice(start, start + s),)
            out.append(MV.Index.apply(self, key=key))
            start += s
        return tuple(out)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        n = self.shape[dim]
        size = -(-n // chunks)
        return self.split(size, dim)

    def gather(self, dim: int, index: Any) -> Tensor:
        idx = np.asarray(index.data if isinstance(index, Tensor) else index)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"gather 的 index 必须是整数张量，收到 dtype {idx.dtype}")
        return MV.Gather.apply(self, dim=_dim(dim, self.ndim), index=idx.astype(np.int64, copy=False))

    def __getitem__(self, key: Any) -> Tensor:
        return MV.Index.apply(self, key=_convert_key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        _check_inplace(self, "索引赋值")
        self.data[_convert_key(key)] = value.data if isinstance(value, Tensor) else value

    # ------------------------------------------------------------------ 其它
    def matmul(self, o: Any) -> Tensor:
        return self @ o

    def apply_(self, fn: Any) -> Tensor:  # pragma: no cover - 与 torch 同名的便利函数
        self.data[...] = fn(self.data)
        return self


def _convert_key(key: Any) -> Any:
    """把索引里的 Tensor / 列表换成 ndarray。"""
    if isinstance(key, tuple):
        return tuple(_convert_key(k) for k in key)
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, list):
        return np.asarray(key)
    return key


class _Cast(autograd.Function):
    """y = a 转成另一种浮点类型；梯度转回原类型。"""

    @staticmethod
    def forward(ctx, a, *, dtype):
        ctx.src = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.src)


__all__ = ["Tensor", "ValuesIndices"]
