"""Module：神经网络层的基类，与 torch.nn.Module 用法相同。

给 Module 的属性赋值时，Parameter 登记进 ``_parameters``，子模块登记进 ``_modules``，
``register_buffer`` 的张量登记进 ``_buffers``（随 state_dict 保存但不训练）。
名字按属性的定义顺序排列，与 torch 相同，所以两条轨道的 state_dict 键一一对应。
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor
from .parameter import Parameter


class Module:
    """所有层的基类。子类在 __init__ 中先调用 super().__init__()，再定义 forward。"""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------ 属性登记
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if "_parameters" not in d:
            raise RuntimeError(f"{type(self).__name__}.__init__ 必须先调用 super().__init__()，再给属性 {name!r} 赋值")
        params, bufs, mods = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, Parameter):
            bufs.pop(name, None)
            mods.pop(name, None)
            d.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            bufs.pop(name, None)
            d.pop(name, None)
            mods[name] = value
        elif name in bufs:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"缓冲区 {name!r} 只能赋值为 Tensor 或 None，收到 {type(value).__name__}")
            bufs[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"参数 {name!r} 只能赋值为 Parameter 或 None，收到 {type(value).__name__}")
            params[name] = None
        elif name in mods:
            if value is not None:
                raise TypeError(f"子模块 {name!r} 只能赋值为 Module 或 None，收到 {type(value).__name__}")
            mods[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if key in d and name in d[key]:
                return d[key][name]
        raise AttributeError(f"{type(self).__name__} 没有属性 {name!r}")

    def __delattr__(self, name: str) -> None:
        for key in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__[key]:
                del self.__dict__[key][name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """登记一个缓冲区（如因果掩码）：随 .to() 移动，persistent=True 时进入 state_dict。"""
        if "." in name or not name:
            raise KeyError(f"缓冲区名 {name!r} 不合法（不能为空，也不能含 '.'）")
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    # ------------------------------------------------------------ 遍历
    def named_modules(self, prefix: str = "", memo: set[int] | None = None) -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(名字, 参数)；同一个参数（如权重共享）只出现一次，与 torch 相同。"""
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for mname, m in self.named_modules(prefix):
            for bname, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self) -> Iterator[Tensor]:
        for _, b in self.named_buffers():
            yield b

    # ------------------------------------------------------------ 状态
    def state_dict(self, prefix: str = "") -> OrderedDict[str, Tensor]:
        """参数与持久缓冲区，按定义顺序；共享的参数在每个名字下都出现（与 torch 相同）。"""
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b.detach()
        for name, m in self._modules.items():
            if m is not None:
                out.update(m.state_dict(prefix=f"{prefix}{name}."))
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> tuple[list[str], list[str]]:
        """按名字把数值复制进参数与缓冲区（形状必须一致）。

        strict=True 时，缺少或多余的键都会报错；返回 (missing_keys, unexpected_keys)。
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"缺少的键：{missing}")
            if unexpected:
                parts.append(f"多余的键：{unexpected}")
            raise RuntimeError(f"load_state_dict 失败（{type(self).__name__}）：" + "；".join(parts))
        with no_grad():
            for k, v in state_dict.items():
                if k not in own:
                    continue
                arr = np.asarray(v.data if isinstance(v, Tensor) else v)
                dst = own[k]  # detach() 与模型共享同一块内存，写进去就是写进模型
                if arr.shape != dst.shape:
                    raise RuntimeError(
                        f"load_state_dict：键 {k!r} 的形状不匹配，检查点中为 {tuple(arr.shape)}，"
                        f"模型中为 {tuple(dst.shape)}"
                    )
                dst.data[...] = arr.astype(dst.dtype, copy=False)
        return missing, unexpected

    # ------------------------------------------------------------ 模式与工具
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """对每个子模块（先子后父）调用 fn，常用于初始化权重。"""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, dtype: Any = None, device: Any = None) -> Module:
        """把浮点参数与缓冲区转换为 dtype（tinytensor 只有 CPU，device 只接受 'cpu'）。"""
        if isinstance(dtype, str) and dtype == "cpu":
            dtype = None
        if device not in (None, "cpu"):
            raise RuntimeError(f"tinytensor 只支持 CPU，收到 device={device!r}")
        if dtype is None:
            return self
        d = np.dtype(dtype)
        for t in list(self.parameters()) + list(self.buffers()):
            if t.dtype.kind == "f":
                t.data = t.data.astype(d)
                if t.grad is not None:
                    t.grad.data = t.grad.data.astype(d)
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} 没有实现 forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"
