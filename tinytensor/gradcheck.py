"""用中心差分检查解析梯度：(f(x+h) - f(x-h)) / 2h ≈ df/dx。

必须在 float64 下做：float32 的舍入误差 (~1e-7) 除以 h 会淹没差分本身。
对每个输入的每个元素都扰动一次，所以只适合小张量。
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


def numerical_grad(fn: Callable[..., Tensor], inputs: Sequence[Tensor], eps: float = 1e-6) -> list[np.ndarray]:
    """对 sum(fn(*inputs) · w) 求数值梯度，w 是固定的随机权重（让每个输出元素都被检查到）。"""
    with no_grad():
        out = fn(*inputs)
    w = np.random.default_rng(0).standard_normal(out.shape)
    grads = []
    for x in inputs:
        g = np.zeros(x.shape, dtype=np.float64)
        if not x.requires_grad:
            grads.append(g)
            continue
        flat = x.data.reshape(-1)  # 与 x.data 共享内存（要求连续）
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            with no_grad():
                plus = float(np.sum(fn(*inputs).data * w))
            flat[i] = orig - eps
            with no_grad():
                minus = float(np.sum(fn(*inputs).data * w))
            flat[i] = orig
            g.reshape(-1)[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """比较 fn 的解析梯度与中心差分梯度；输入必须是 float64 张量。

    不一致时报出是哪个输入、最大误差在哪里。与 torch.autograd.gradcheck 用法相似。
    """
    ins = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            if x.dtype != np.float64:
                raise TypeError(f"gradcheck 需要 float64 输入，第 {i} 个输入是 {x.dtype}")
            x.data = np.require(x.data, requirements=["C", "W"])  # 差分需要原地改写连续的数组
            if not x.is_leaf:
                x.retain_grad()  # 非叶子输入反向后默认不保留 .grad
        ins.append(x)
    out = fn(*ins)
    w = np.random.default_rng(0).standard_normal(out.shape)
    for x in ins:
        if isinstance(x, Tensor):
            x.grad = None
    out.backward(w.astype(out.dtype))
    numeric = numerical_grad(fn, ins, eps)
    for i, (x, num) in enumerate(zip(ins, numeric)):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        ana = np.zeros(x.shape) if x.grad is None else x.grad.data
        if not np.allclose(ana, num, atol=atol, rtol=rtol):
            err = np.abs(ana - num)
            j = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
            msg = (
                f"gradcheck 失败：第 {i} 个输入（形状 {x.shape}）在位置 {j} 处，解析梯度（backward 算出）为 "
                f"{ana[j]:.6g}，数值梯度（中心差分）为 {num[j]:.6g}，最大误差 {err.max():.3g}"
                f"（允许 atol={atol:g}, rtol={rtol:g}）；请检查该算子的 backward 公式"
            )
            if raise_exception:
                raise AssertionError(msg)
            return False
    return True
