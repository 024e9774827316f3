"""tt.nn.utils：梯度裁剪等工具（与 torch.nn.utils 同名同义）。"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor


def _params(parameters: Iterable[Tensor] | Tensor) -> list[Tensor]:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def clip_grad_norm_(
    parameters: Iterable[Tensor] | Tensor,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: Any = None,
) -> Tensor:
    """把所有参数梯度拼成一个向量，若其范数超过 max_norm，就整体按比例缩小（原地）。

    与 torch 相同：缩放系数为 max_norm / (total_norm + 1e-6)，截断到 1；返回裁剪前的总范数
    （dtype 与梯度相同）。总范数为 nan/inf 时梯度随之变为 nan/0（除非 error_if_nonfinite=True）。
    foreach 只为与 torch 签名一致，被忽略。
    """
    grads = [p.grad.data for p in _params(parameters) if p.grad is not None]
    if not grads:
        return Tensor._wrap(np.asarray(0.0, dtype=np.float32), False)
    dtype = grads[0].dtype
    norm_type = float(norm_type)
    if norm_type == float("inf"):
        total = max(float(np.abs(g).max(initial=0.0)) for g in grads)
    else:
        total = float(sum(float(np.sum(np.abs(g.astype(np.float64, copy=False)) ** norm_type)) for g in grads))
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"梯度的总 {norm_type} 范数为 {total}（非有限值），无法裁剪；如要忽略，请设 error_if_nonfinite=False"
        )
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # coef 为 nan 时也进入（与 torch 一样把梯度乘成 nan）
        for g in grads:
            g *= np.asarray(coef, dtype=g.dtype)
    return Tensor._wrap(np.asarray(total, dtype=dtype), False)


def clip_grad_value_(parameters: Iterable[Tensor] | Tensor, clip_value: float, foreach: Any = None) -> None:
    """把每个梯度元素截断到 [-clip_value, clip_value]（原地）。"""
    for p in _params(parameters):
        if p.grad is not None:
            np.clip(p.grad.data, -clip_value, clip_value, out=p.grad.data)
