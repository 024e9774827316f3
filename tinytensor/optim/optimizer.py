"""优化器基类：参数组 (param_groups)、每个参数的状态 (state)、保存与恢复。

结构与 torch.optim.Optimizer 相同：param_groups 是字典列表，每组有自己的超参数
（学习率调度器正是修改 group["lr"]）；state 以参数在所有组中的序号为键。
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor


class Optimizer:
    """所有优化器的基类。子类实现 ``step()``。"""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        params = list(params)
        if not params:
            raise ValueError("优化器收到的参数列表为空")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        seen: set[int] = set()
        for g in groups:
            group = {**defaults, **g, "params": list(g["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"优化器只能优化 Tensor，收到 {type(p).__name__}")
                if not p.requires_grad:
                    raise ValueError("优化器收到了 requires_grad=False 的张量")
                if id(p) in seen:
                    raise ValueError("同一个参数在优化器中出现了不止一次")
                seen.add(id(p))
            self.param_groups.append(group)

    def _indexed(self) -> Iterable[tuple[int, dict[str, Any], Tensor]]:
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, group, p
                i += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        """清空梯度；默认直接置为 None（与 torch 2.x 相同），省去一次清零。"""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data[...] = 0

    def step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """{"state": {序号: {名字: 数组或数}}, "param_groups": [超参数 + "params": 序号列表]}。"""
        groups, i = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": list(range(i, i + n))})
            i += n
        state = {
            k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in s.items()} for k, s in self.state.items()
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """恢复 state_dict()；参数组数与每组参数个数必须一致。"""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"优化器状态有 {len(groups)} 个参数组，而当前优化器有 {len(self.param_groups)} 个")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"第 {i} 个参数组的参数个数不一致：状态中 {len(saved['params'])} 个，当前 {len(own['params'])} 个"
                )
        params = {idx: p for idx, _, p in self._indexed()}
        self.state = {}
        for k, s in state_dict["state"].items():
            k = int(k)
            p = params[k]
            entry = {}
            for name, v in s.items():
                if isinstance(v, np.ndarray) or (isinstance(v, Tensor)):
                    arr = np.array(v.data if isinstance(v, Tensor) else v, dtype=p.dtype)
                    if arr.shape != p.shape:
                        raise ValueError(
                            f"优化器状态 {k}.{name} 的形状 {arr.shape} 与参数形状 {p.shape} 不一致"
                        )
                    entry[name] = arr
                else:
                    entry[name] = v
            self.state[k] = entry
        for saved, own in zip(groups, self.param_groups):
            own.update(copy.deepcopy({k: v for k, v in saved.items() if k != "params"}))
