"""创建张量的函数（与 torch 同名）以及几个模块级的运算函数。"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dtypes as _dt
from . import random as _random
from .ops import elementwise as E
from .ops import movement as MV
from .tensor import Tensor, _dim, _promote


def _shape(size: Sequence[Any]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


def _float(dtype: Any) -> np.dtype:
    return _dt.get_default_dtype() if dtype is None else np.dtype(dtype)


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """从 Python 数据或 ndarray 创建张量（复制数据）。Python 浮点数默认 float32，整数 int64。"""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


def from_numpy(arr: np.ndarray) -> Tensor:
    """与 ndarray 共享内存的张量。"""
    return Tensor._wrap(arr, False)


def as_tensor(data: Any, dtype: Any = None) -> Tensor:
    if isinstance(data, Tensor) and (dtype is None or data.dtype == np.dtype(dtype)):
        return data
    if isinstance(data, np.ndarray) and (dtype is None or data.dtype == np.dtype(dtype)):
        return Tensor._wrap(data, False)
    return Tensor(data, dtype=dtype)


def zeros(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_shape(size), dtype=_float(dtype)), requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_shape(size), dtype=_float(dtype)), requires_grad=requires_grad)


def full(size: Sequence[int], fill_value: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    if dtype is None and isinstance(fill_value, bool):
        dtype = _dt.bool_
    elif dtype is None and isinstance(fill_value, int):
        dtype = _dt.int64
    return Tensor(np.full(tuple(size), fill_value, dtype=_float(dtype)), requires_grad=requires_grad)


def empty(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.empty(_shape(size), dtype=_float(dtype)), requires_grad=requires_grad)


def eye(n: int, m: int | None = None, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.eye(n, m, dtype=_float(dtype)), requires_grad=requires_grad)


def randn(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """标准正态分布随机数（来自全局发生器，受 manual_seed 控制）。"""
    d = _float(dtype)
    return Tensor(_random.default_generator().standard_normal(_shape(size), dtype=d), requires_grad=requires_grad)


def rand(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """[0, 1) 上的均匀分布随机数。"""
    d = _float(dtype)
    return Tensor(_random.default_generator().random(_shape(size), dtype=d), requires_grad=requires_grad)


def randint(low: int, high: int | None = None, size: Sequence[int] = (), dtype: Any = None) -> Tensor:
    if high is None:
        low, high = 0, low
    arr = _random.default_generator().integers(low, high, size=tuple(size), dtype=np.int64)
    return Tensor._wrap(arr if dtype is None else arr.astype(dtype), False)


def randperm(n: int) -> Tensor:
    return Tensor._wrap(_random.default_generator().permutation(n).astype(np.int64), False)


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = _dt.int64 if is_int else _dt.get_default_dtype()
    return Tensor._wrap(np.arange(start, end, step, dtype=dtype), False)


def linspace(start: float, end: float, steps: int, dtype: Any = None) -> Tensor:
    return Tensor._wrap(np.linspace(start, end, steps, dtype=_float(dtype)), False)


def zeros_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def full_like(t: Tensor, fill_value: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.full(t.shape, fill_value, dtype=dtype or t.dtype), requires_grad=requires_grad)


def empty_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.empty(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def randn_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def rand_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def _as_tensor_list(tensors: Sequence[Any], name: str) -> list[Tensor]:
    ts = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not ts:
        raise RuntimeError(f"{name}：至少需要一个张量")
    return ts


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """沿已有的维 dim 拼接。"""
    ts = _as_tensor_list(tensors, "cat")
    d = _dim(dim, ts[0].ndim)
    return MV.Cat.apply(*ts, dim=d)


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """在新维 dim 上堆叠。"""
    ts = _as_tensor_list(tensors, "stack")
    d = _dim(dim, ts[0].ndim + 1)
    return MV.Stack.apply(*ts, dim=d)


def where(condition: Any, input: Any, other: Any) -> Tensor:  # noqa: A002
    """cond 为真处取 input，否则取 other（condition 不求导）。"""
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where 的 condition 必须是布尔张量，收到 dtype {cond.dtype}")
    x = input if isinstance(input, Tensor) else None
    z = other if isinstance(other, Tensor) else None
    ref = x if x is not None else z
    if ref is None:
        return Tensor._wrap(np.where(cond, input, other), False)
    x = ref._lift(input)
    z = ref._lift(other)
    x, z = _promote(x, z)
    try:
        np.broadcast_shapes(cond.shape, x.shape, z.shape)
    except ValueError:
        raise RuntimeError(f"where：形状 {cond.shape}、{x.shape}、{z.shape} 无法广播") from None
    return E.Where.apply(x, z, cond=cond)


def _unary(name: str):
    def fn(t: Tensor, *args: Any, **kwargs: Any) -> Any:
        return getattr(t, name)(*args, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"与 Tensor.{name} 相同。"
    return fn


_TENSOR_FUNCTIONS = (
    "exp log sqrt rsqrt tanh sigmoid relu abs square clamp clip matmul tril triu softmax log_softmax "
    "sum mean var std max min argmax argmin topk reshape flatten transpose permute unsqueeze squeeze "
    "split chunk masked_fill gather numel isnan isfinite pow"
).split()
for _name in _TENSOR_FUNCTIONS:
    globals()[_name] = _unary(_name)

__all__ = [
    "arange", "as_tensor", "cat", "concat", "empty", "empty_like", "eye", "from_numpy", "full", "full_like",
    "linspace", "ones", "ones_like", "rand", "rand_like", "randint", "randn", "randn_like", "randperm", "stack",
    "tensor", "where", "zeros", "zeros_like", *_TENSOR_FUNCTIONS,
]
