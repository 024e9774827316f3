"""学习率调度器：``LambdaLR`` 按 torch.optim.lr_scheduler 的方式修改 group["lr"]。

调度公式本身（如预热 + 余弦）是与框架无关的纯函数，放在 llmcore.schedule；
用法与 torch 相同：``LambdaLR(opt, lambda step: 系数)``。
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .optimizer import Optimizer


class LambdaLR:
    """lr = base_lr · fn(epoch)；每次 step() 后 epoch 加一（与 torch 的 LambdaLR 相同）。

    lr_lambda 可以是一个函数（所有参数组共用），也可以是每组一个函数的列表。
    构造时已调用一次 step()，所以第 0 步的学习率是 base_lr · fn(0)。
    """

    def __init__(
        self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"lr_lambda 列表有 {len(lr_lambda)} 个函数，而优化器有 {n} 个参数组")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            for i, g in enumerate(optimizer.param_groups):
                if "initial_lr" not in g:
                    raise KeyError(
                        f"param_groups[{i}] 中没有 'initial_lr'：从 last_epoch={last_epoch} 恢复调度器前，"
                        "请先恢复优化器的 state_dict"
                    )
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> list[float]:
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]

    def step(self) -> None:
        self.last_epoch += 1
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """最近一次 step() 设置的学习率（每个参数组一个）。"""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """只保存数值（last_epoch、base_lrs），不保存函数本身；恢复时需用同样的函数构造调度器。"""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"调度器状态有 {len(state['base_lrs'])} 个参数组，而优化器有 {len(self.optimizer.param_groups)} 个"
            )
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = list(state["base_lrs"])
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]
