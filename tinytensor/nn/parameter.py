"""Parameter：需要训练的张量。放进 Module 的属性时会被自动登记。"""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor, _to_array


class Parameter(Tensor):
    """默认 requires_grad=True 的张量；Module 把它收进 parameters()。"""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(_to_array(data), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
