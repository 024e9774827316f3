"""常用层：Linear、Embedding、LayerNorm、Dropout、激活函数与容器。

初始化方式与 torch 相同（分布相同，随机数不同）：
Linear 的权重与偏置 ~ U(-1/√in, 1/√in)，Embedding ~ N(0, 1)，LayerNorm 为 1 和 0。
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .. import dtypes as _dt
from .. import random as _random
from ..tensor import Tensor
from . import functional as F
from .module import Module
from .parameter import Parameter


def _uniform(shape: tuple[int, ...], bound: float, dtype: Any) -> np.ndarray:
    d = _dt.get_default_dtype() if dtype is None else np.dtype(dtype)
    return _random.default_generator().uniform(-bound, bound, size=shape).astype(d)


class Linear(Module):
    """y = x Wᵀ + b；weight 形状 (out_features, in_features)，与 torch 相同。"""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        if bias:
            self.bias = Parameter(_uniform((out_features,), bound, dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """查表层：weight 形状 (num_embeddings, embedding_dim)，初始化 ~ N(0, 1)。"""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: Any = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        d = _dt.get_default_dtype() if dtype is None else np.dtype(dtype)
        w = _random.default_generator().standard_normal((num_embeddings, embedding_dim)).astype(d)
        self.weight = Parameter(w)

    def forward(self, idx: Any) -> Tensor:
        return F.embedding(idx, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """对最后一维做层归一化；weight 初始为 1，bias 初始为 0。"""

    def __init__(
        self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if len(ns) != 1:
            raise ValueError(f"LayerNorm 只支持对最后一维归一化，normalized_shape 应为整数或单元素元组，收到 {ns}")
        n = int(ns[0])
        self.normalized_shape = (n,)
        self.elementwise_affine = elementwise_affine
        self.eps = eps
        d = _dt.get_default_dtype() if dtype is None else np.dtype(dtype)
        if elementwise_affine:
            self.weight = Parameter(np.ones(n, dtype=d))
            if bias:
                self.bias = Parameter(np.zeros(n, dtype=d))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class Dropout(Module):
    """训练模式下随机置零；eval() 后什么都不做。"""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout 概率必须在 [0, 1] 内，收到 {p}")
        if inplace:
            raise ValueError("tinytensor 不支持原地 dropout（计算图中的张量不能原地修改），请用 inplace=False")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"


class GELU(Module):
    """GELU 激活（tanh 近似）。"""

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()
        if approximate != "tanh":
            raise ValueError(f"tinytensor 只实现 GELU 的 tanh 近似，请使用 approximate='tanh'（收到 {approximate!r}）")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()


class Softmax(Module):
    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.softmax(self.dim)


class Identity(Module):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)


def _index(i: int, n: int, kind: str) -> int:
    if not -n <= i < n:
        raise IndexError(f"{kind} 下标 {i} 超出范围（共 {n} 个子模块）")
    return i % n


class Sequential(Module):
    """按顺序调用子模块；子模块名为 "0"、"1"……（或传入 OrderedDict 指定）。"""

    def __init__(self, *modules: Any) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def append(self, m: Module) -> Sequential:
        self.add_module(str(len(self._modules)), m)
        return self

    def __getitem__(self, i: int | slice) -> Any:
        """整数下标取子模块；切片返回新的 Sequential（保留原名字，与 torch 相同）。"""
        items = list(self._modules.items())
        if isinstance(i, slice):
            return Sequential(OrderedDict(items[i]))
        return items[_index(i, len(items), "Sequential")][1]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class ModuleList(Module):
    """像列表一样存放子模块，并让它们的参数被登记（名字为 "0"、"1"……）。"""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        for m in modules or []:
            self.append(m)

    def append(self, m: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), m)
        return self

    def extend(self, ms: Iterable[Module]) -> ModuleList:
        for m in ms:
            self.append(m)
        return self

    def __getitem__(self, i: int | slice) -> Any:
        """整数下标取子模块；切片返回新的 ModuleList。"""
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return ModuleList(mods[i])
        return mods[_index(i, len(mods), "ModuleList")]

    def __setitem__(self, i: int, m: Module) -> None:
        self.add_module(str(_index(i, len(self._modules), "ModuleList")), m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
