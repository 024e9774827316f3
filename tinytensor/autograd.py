"""自动求导的核心：计算图的节点 (Function)、梯度开关 (no_grad) 与反向传播引擎。

约定（整个 tinytensor 都遵守）：
- 每个算子是一个 Function 子类，``forward(ctx, *arrays, **config)`` 与
  ``backward(ctx, grad_out)`` 写在一起，只处理 NumPy 数组。
- 位置参数一律是张量（可求导的输入），关键字参数是配置（轴、形状、掩码……）。
- ``backward`` 按位置参数的顺序返回每个输入的梯度（不需要的可返回 None）。
  梯度可以是“广播后的形状”：把梯度归约回输入形状只在本文件的一处完成（``unbroadcast``）。
- 拓扑排序是迭代的（10,000 层的链也不会爆栈）；父节点存成元组，梯度求和的顺序确定。
- 反向传播后默认释放计算图（保存的数组被清空）；再次反向会报错并提示 ``retain_graph=True``。
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from .tensor import Tensor

_F = TypeVar("_F", bound=Callable[..., Any])

_grad_enabled: bool = True


def is_grad_enabled() -> bool:
    """当前是否记录计算图。"""
    return _grad_enabled


class _GradMode:
    """no_grad / enable_grad 的公共实现：既是上下文管理器，也是装饰器
    （``@tt.no_grad()`` 与不带括号的 ``@tt.no_grad`` 都可以，与 torch 相同）。"""

    mode: bool = True

    def __new__(cls, fn: Any = None) -> Any:
        if callable(fn):  # 不带括号当装饰器用：no_grad(fn)
            return cls()(fn)
        return super().__new__(cls)

    def __init__(self, fn: Any = None) -> None:
        pass

    def __enter__(self) -> None:
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._prev

    def __call__(self, fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class no_grad(_GradMode):  # noqa: N801  与 torch.no_grad 同名
    """在此范围内不构建计算图（推理、优化器更新时使用）。"""

    mode = False


class enable_grad(_GradMode):  # noqa: N801
    """在 no_grad 内部重新打开梯度记录。"""

    mode = True


class set_grad_enabled(_GradMode):  # noqa: N801
    """按参数打开或关闭梯度记录。与 torch 相同：直接调用 ``set_grad_enabled(False)`` 立即生效；
    当上下文管理器用时，退出后恢复调用前的状态。"""

    def __new__(cls, mode: bool = True) -> set_grad_enabled:
        return object.__new__(cls)

    def __init__(self, mode: bool = True) -> None:
        global _grad_enabled
        self.mode = bool(mode)
        self._prev = _grad_enabled
        _grad_enabled = self.mode

    def __enter__(self) -> None:
        pass  # 构造时已经生效

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._prev

    def __call__(self, fn: _F) -> _F:  # 与 torch 一致：作为装饰器时沿用同一模式
        global _grad_enabled
        mode = self.mode
        _grad_enabled = self._prev  # 装饰器只在函数调用期间生效，撤销构造时的设置

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """把广播后的梯度求和归约回 ``shape``。

    广播做了两件事：在左边补维度、把长度为 1 的维度复制多份。
    反向时对应地：把多出来的前导维度求和掉，再把原来长度为 1 的维度求和（keepdims）。
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise RuntimeError(f"梯度形状 {grad.shape} 的维数比输入形状 {shape} 还少，无法归约")
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if grad.shape != shape:
        raise RuntimeError(f"梯度形状 {grad.shape} 无法归约到输入形状 {shape}")
    return grad


class Function:
    """计算图中的一个节点，也是保存反向所需数据的上下文 (ctx)。

    子类实现两个静态方法::

        @staticmethod
        def forward(ctx, a, b, **config) -> np.ndarray: ...
        @staticmethod
        def backward(ctx, grad_out) -> tuple[np.ndarray | None, ...]: ...

    ``ctx.save_for_backward(...)`` 保存反向需要的数组，``ctx.saved_tensors`` 取回；
    ``ctx.needs_input_grad[i]`` 表示第 i 个输入是否需要梯度，可借此跳过无用的计算。
    """

    parents: tuple[Tensor, ...] = ()
    needs_input_grad: tuple[bool, ...] = ()
    saved_tensors: tuple[Any, ...] = ()
    freed: bool = False

    def save_for_backward(self, *arrays: Any) -> None:
        self.saved_tensors = arrays

    @staticmethod
    def forward(ctx: Function, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Function, grad_out: np.ndarray) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *tensors: Tensor, **config: Any) -> Tensor:
        """运行前向；若需要梯度，把本节点挂到输出张量上。"""
        from .tensor import Tensor

        ctx = cls()
        requires_grad = _grad_enabled and any(t.requires_grad for t in tensors)
        if requires_grad:  # 前向里就可以据此跳过反向用不到的计算（不需要梯度时为空元组）
            ctx.needs_input_grad = tuple(t.requires_grad for t in tensors)
        out_data = cls.forward(ctx, *[t.data for t in tensors], **config)
        out = Tensor._wrap(out_data, requires_grad)
        if requires_grad:
            ctx.parents = tensors
            out._ctx = ctx
        return out

    @property
    def name(self) -> str:
        return type(self).__name__

    def release(self) -> None:
        """释放反向所需的数据（计算图用过一次后调用）。"""
        self.__dict__.clear()
        self.freed = True


def _toposort(root: Tensor) -> list[Tensor]:
    """迭代式深度优先后序遍历：返回需要梯度的张量，输入在前、root 在最后。"""
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        ctx = t._ctx
        if ctx is not None:
            for p in reversed(ctx.parents):
                if p.requires_grad and id(p) not in visited:
                    stack.append((p, False))
    return order


def backward(root: Tensor, gradient: Any = None, retain_graph: bool = False) -> None:
    """从 ``root`` 出发做反向传播，把梯度累加到叶子张量（及 retain_grad 的张量）的 ``.grad``。"""
    from .tensor import Tensor

    if not root.requires_grad:
        raise RuntimeError("该张量不需要梯度（requires_grad=False，且不由需要梯度的张量算出），无法调用 backward()")
    if gradient is None:
        if root.data.size != 1:
            raise RuntimeError(
                f"backward() 只能对标量隐式创建梯度，而该张量形状为 {tuple(root.shape)}；"
                "请传入与之同形状的 gradient 参数，或先 .sum()/.mean()"
            )
        g = np.ones_like(root.data)
    else:
        g = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient, dtype=root.data.dtype)
        if g.shape != root.data.shape:
            raise RuntimeError(f"gradient 形状 {g.shape} 与张量形状 {root.data.shape} 不一致")

    order = _toposort(root)
    grads: dict[int, np.ndarray] = {id(root): g}
    for t in reversed(order):
        if id(t) not in grads:
            continue
        g = grads.pop(id(t))
        ctx = t._ctx
        if ctx is None or t._retains_grad:
            _accumulate(t, g)
        if ctx is None:
            continue
        if ctx.freed:
            raise RuntimeError(
                f"试图第二次反向穿过已释放的计算图（节点 {ctx.name}）。"
                "如需多次反向，请在第一次调用时传入 backward(retain_graph=True)"
            )
        in_grads = ctx.backward(ctx, g)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if len(in_grads) != len(ctx.parents):
            raise RuntimeError(f"{ctx.name}.backward 返回了 {len(in_grads)} 个梯度，应为 {len(ctx.parents)} 个")
        for parent, gi, need in zip(ctx.parents, in_grads, ctx.needs_input_grad):
            if not need or gi is None:
                continue
            gi = unbroadcast(np.asarray(gi), parent.data.shape)  # 广播梯度只在这里归约
            if gi.dtype != parent.data.dtype:
                gi = gi.astype(parent.data.dtype)
            key = id(parent)
            prev = grads.get(key)
            grads[key] = gi if prev is None else prev + gi
        if not retain_graph:
            ctx.release()


def _accumulate(t: Tensor, g: np.ndarray) -> None:
    """把梯度累加进 ``t.grad``；第一次时复制一份，保证 .grad 独占自己的内存。"""
    from .tensor import Tensor

    if t.grad is None:
        t.grad = Tensor._wrap(np.array(g, dtype=t.data.dtype, copy=True), False)
    else:
        t.grad.data += g
