"""Module：神经网络层的基类，与 torch.nn.Module 用法相同。

给 Module 的属性赋值时，Parameter 登记进 ``_parameters``，子模块登记进 ``_modules``，
``register_buffer`` 的张量登记进 ``_buffers``（随 state_dict 保存但不训练）。
名字按属性的定义顺序排列，与 torch 相同，所以两条轨道的 state_dict 键一一对应。
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor, check_device, split_device_arg
from .parameter import Parameter


class IncompatibleKeys(NamedTuple):
    """load_state_dict 的返回值（与 torch 的 _IncompatibleKeys 相同，可解包为两个列表）。"""

    missing_keys: list[str]
    unexpected_keys: list[str]


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
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def _check_name(self, kind: str, name: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ 必须先调用 super().__init__()，再登记{kind} {name!r}")
        if not isinstance(name, str):
            raise TypeError(f"{kind}名必须是字符串，收到 {type(name).__name__}")
        if "." in name or not name:
            raise KeyError(f"{kind}名 {name!r} 不合法（不能为空，也不能含 '.'）")

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """登记一个缓冲区（如因果掩码）：随 .to() 转换，persistent=True 时进入 state_dict。"""
        self._check_name("缓冲区", name)
        if name not in self._buffers and hasattr(self, name):
            raise KeyError(f"属性 {name!r} 已存在，不能再登记为缓冲区")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"缓冲区 {name!r} 只能是 Tensor 或 None，收到 {type(tensor).__name__}")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._check_name("参数", name)
        if name not in self._parameters and hasattr(self, name):
            raise KeyError(f"属性 {name!r} 已存在，不能再登记为参数")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"参数 {name!r} 只能是 Parameter 或 None，收到 {type(param).__name__}")
        self._parameters[name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        self._check_name("子模块", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"子模块 {name!r} 必须是 Module 或 None，收到 {type(module).__name__}")
        if name not in self._modules and hasattr(self, name):
            raise KeyError(f"属性 {name!r} 已存在，不能再登记为子模块")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        """按点分路径取子模块，如 "blocks.0.attn"；空串返回自身。"""
        m: Module = self
        if not target:
            return m
        for part in target.split("."):
            sub = m._modules.get(part)
            if sub is None:
                raise AttributeError(f"{type(m).__name__} 没有名为 {part!r} 的子模块（路径 {target!r}）")
            m = sub
        return m

    # ------------------------------------------------------------ 遍历
    def named_modules(
        self, memo: set[int] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """(路径, 模块)，先父后子，自身的路径为 prefix；同一个模块默认只出现一次（参数顺序同 torch）。"""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

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

    def _named_members(
        self, kind: str, prefix: str, recurse: bool, remove_duplicate: bool
    ) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mname, m in mods:
            for name, t in getattr(m, kind).items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                yield (f"{mname}.{name}" if mname else name), t

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(名字, 参数)；同一个参数（如权重共享）只出现一次，与 torch 相同。"""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)  # type: ignore[misc]

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        """(名字, 缓冲区)，含非持久缓冲区；同一个张量默认只出现一次。"""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # ------------------------------------------------------------ 状态
    def state_dict(
        self, destination: dict[str, Tensor] | None = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict[str, Tensor]:
        """参数与持久缓冲区，按定义顺序；共享的参数在每个名字下都出现（与 torch 相同）。

        值与模型共享内存（detach 过）；keep_vars=True 时直接给出参数对象本身。
        """
        out: OrderedDict[str, Tensor] = OrderedDict() if destination is None else destination  # type: ignore[assignment]
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent:
                out[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=out, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """按名字把数值复制进参数与缓冲区（形状必须一致，dtype 转成模型的）。

        strict=True 时，缺少或多余的键都会报错；形状不符无论 strict 与否都报错并写明键与两个形状。
        先检查完全部键再写入：出错时模型保持原样。返回 (missing_keys, unexpected_keys)。
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append(f"缺少的键：{missing}")
        if strict and unexpected:
            errors.append(f"多余的键：{unexpected}")
        todo = []
        for k, v in state_dict.items():
            if k not in own:
                continue
            arr = np.asarray(v.data if isinstance(v, Tensor) else v)
            dst = own[k]  # detach() 与模型共享同一块内存，写进去就是写进模型
            if arr.shape != dst.shape:
                errors.append(f"键 {k!r} 的形状不匹配：检查点中为 {tuple(arr.shape)}，模型中为 {tuple(dst.shape)}")
            else:
                todo.append((dst, arr))
        if errors:
            raise RuntimeError(f"load_state_dict 失败（{type(self).__name__}）：" + "；".join(errors))
        with no_grad():
            for dst, arr in todo:
                dst.data[...] = arr.astype(dst.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ 模式与工具
    def train(self, mode: bool = True) -> Module:
        """设置训练/推理模式，并递归调用每个子模块的 train()（子类可覆盖 train）。"""
        if not isinstance(mode, bool):
            raise ValueError(f"train() 的 mode 必须是 bool，收到 {mode!r}")
        object.__setattr__(self, "training", mode)
        for m in self.children():
            m.train(mode)
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
        dtype, device = split_device_arg(dtype, device)
        check_device(device)
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
        """与 torch 相同的格式：只有一行 extra_repr 时写在括号内，否则每项缩进一行。"""
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = []
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            children.append(f"({name}): {sub}")
        head = type(self).__name__ + "("
        if len(lines) == 1 and not children:
            return head + lines[0] + ")"
        if not lines and not children:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines + children) + "\n)"
