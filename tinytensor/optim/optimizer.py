"""优化器基类：参数组 (param_groups)、每个参数的状态 (state)、保存与恢复。

结构与 torch.optim.Optimizer 相同：param_groups 是字典列表，每组有自己的超参数
（学习率调度器正是修改 group["lr"]）；state 以参数在所有组中的序号为键。
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..autograd import enable_grad
from ..tensor import Tensor


class Optimizer:
    """所有优化器的基类。子类实现 ``step()``。"""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError("params 应是张量或参数组字典的可迭代对象（如 model.parameters()），而不是单个张量")
        params = list(params)
        if not params:
            raise ValueError("优化器收到的参数列表为空")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """追加一个参数组（如微调时解冻新层）；未给出的超参数取 defaults。

        与 torch 相同：requires_grad=False 的参数可以放进来（其 .grad 一直为 None，step 时跳过）；
        非叶子张量、重复出现的参数会报错。新参数的序号接在已有参数之后，已有状态不受影响。
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"参数组必须是字典，收到 {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("参数组字典缺少 'params' 键")
        ps = param_group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in ps:
            if not isinstance(p, Tensor):
                raise TypeError(f"优化器只能优化 Tensor，收到 {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("优化器不能优化非叶子张量（它由别的张量算出）；请传入 Parameter 或叶子张量")
            if id(p) in seen:
                raise ValueError("同一个参数在优化器中出现了不止一次（同组重复，或出现在多个参数组里）")
            seen.add(id(p))
        self.param_groups.append({**self.defaults, **param_group, "params": ps})

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

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """做一步更新；closure（可选）重新计算并返回损失，与 torch 相同。"""
        raise NotImplementedError

    @staticmethod
    def _eval_closure(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():  # step 在 no_grad 下运行，closure 里要能反向
            return closure()

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
        """恢复 state_dict()；参数组数、每组参数个数与状态数组的形状必须一致。

        先全部检查再替换：出错时优化器保持原样。状态数组复制一份并转成参数的 dtype。
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"优化器状态有 {len(groups)} 个参数组，而当前优化器有 {len(self.param_groups)} 个")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(
                    f"第 {i} 个参数组的参数个数不一致：状态中 {len(saved['params'])} 个，当前 {len(own['params'])} 个"
                )
        # 保存时的序号 -> 当前参数（与 torch 相同，按组内位置对应）
        params = {
            int(si): p for saved, own in zip(groups, self.param_groups) for si, p in zip(saved["params"], own["params"])
        }
        new_state: dict[int, dict[str, Any]] = {}
        own_index = {id(p): idx for idx, _, p in self._indexed()}
        for k, s in state_dict["state"].items():
            if int(k) not in params:
                raise ValueError(f"优化器状态中的参数序号 {k} 不在任何参数组里")
            p = params[int(k)]
            entry = {}
            for name, v in s.items():
                if isinstance(v, (np.ndarray, Tensor)):
                    arr = np.array(v.data if isinstance(v, Tensor) else v, dtype=p.dtype)
                    if arr.shape != p.shape:
                        raise ValueError(
                            f"优化器状态 {k}.{name} 的形状 {arr.shape} 与参数形状 {p.shape} 不一致"
                        )
                    entry[name] = arr
                else:
                    entry[name] = copy.deepcopy(v)
            new_state[own_index[id(p)]] = entry
        self.state = new_state
        for saved, own in zip(groups, self.param_groups):
            own.update(copy.deepcopy({k: v for k, v in saved.items() if k != "params"}))
