"""与 torch 逐算子对照的工具（只被标了 torch 的测试导入）。

做法：同一份 float64 数值分别转成目标 dtype，按“内存布局”建成 tinytensor 与 torch 的叶子，
跑同一个函数，比较前向输出（值、形状、dtype），再用同一个随机上游梯度反向，比较叶子的梯度。

内存布局（两边一致）：
- contig：普通连续张量；
- T：叶子存成最后两维交换后的形状，输入是 ``leaf.transpose(-1, -2)``（非连续）；
- step：叶子第 0 维长一倍，输入是 ``leaf[::2]``；没被选中的元素填 NaN，漏算进结果会被发现；
- npview：叶子自己的 .data 就是非连续的 NumPy 视图（转置或带步幅）。
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import tinytensor as tt

LAYOUTS = ("contig", "T", "step", "npview")

TOL64 = {"rtol": 1e-10, "atol": 1e-12}


def tdtype(dtype: Any) -> torch.dtype:
    return {np.float32: torch.float32, np.float64: torch.float64}[np.dtype(dtype).type]


def same_dtype(t_tt: tt.Tensor, t_torch: torch.Tensor) -> bool:
    return str(t_torch.dtype).removeprefix("torch.") == str(t_tt.dtype)


def make_leaves(
    arr: np.ndarray, dtype: Any, layout: str, requires_grad: bool = True
) -> tuple[tt.Tensor, tt.Tensor, torch.Tensor, torch.Tensor]:
    """返回 (tt 叶子, tt 输入, torch 叶子, torch 输入)，两边输入的值都等于 arr。"""
    a = np.asarray(arr, dtype=dtype)
    nd = a.ndim
    if layout == "T" and nd >= 2:
        store = np.ascontiguousarray(a.swapaxes(-1, -2))
        tl, ql = tt.tensor(store, requires_grad=requires_grad), torch.tensor(store, requires_grad=requires_grad)
        return tl, tl.transpose(-1, -2), ql, ql.transpose(-1, -2)
    if layout == "step" and nd >= 1:
        store = np.full((2 * a.shape[0],) + a.shape[1:], np.nan, dtype=dtype)
        store[::2] = a
        tl, ql = tt.tensor(store, requires_grad=requires_grad), torch.tensor(store, requires_grad=requires_grad)
        return tl, tl[::2], ql, ql[::2]
    if layout == "npview" and nd >= 1:
        view = np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2) if nd >= 2 else a
        if view.flags.c_contiguous:  # 转置后仍连续（有长度为 1 的维）：改用最后一维带步幅的视图
            base = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, dtype=dtype)
            base[..., ::2] = a
            view = base[..., ::2]
        assert a.size <= 1 or not view.flags.c_contiguous
        tl = tt.from_numpy(view).requires_grad_(requires_grad)
        ql = torch.from_numpy(view).requires_grad_(requires_grad)
        return tl, tl, ql, ql
    tl, ql = tt.tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)
    return tl, tl, ql, ql


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float, what: str) -> None:
    assert got.shape == want.shape, f"{what}: 形状 {got.shape} ≠ torch {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def compare(
    fn_tt: Callable[..., Any],
    fn_torch: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    dtype: Any,
    layout: str = "contig",
    *,
    rtol: float | None = None,
    atol: float | None = None,
    requires_grad: Sequence[bool] | None = None,
    seed: int = 1,
) -> tuple[tt.Tensor, torch.Tensor]:
    """fn_tt(*tt 输入) 与 fn_torch(*torch 输入) 的前向、反向都一致（值与 dtype）。"""
    if rtol is None:
        rtol = TOL64["rtol"] if np.dtype(dtype) == np.float64 else 1e-4
    if atol is None:
        atol = TOL64["atol"] if np.dtype(dtype) == np.float64 else 1e-5
    rg = list(requires_grad) if requires_grad is not None else [True] * len(arrays)
    leaves = [make_leaves(a, dtype, layout, r) for a, r in zip(arrays, rg)]
    out_tt = fn_tt(*[x[1] for x in leaves])
    out_q = fn_torch(*[x[3] for x in leaves])
    assert same_dtype(out_tt, out_q), f"输出 dtype {out_tt.dtype} ≠ torch {out_q.dtype}"
    assert_close(out_tt.data, out_q.detach().numpy(), rtol, atol, "前向")
    assert out_tt.requires_grad == out_q.requires_grad
    if not out_q.requires_grad:
        return out_tt, out_q
    g = np.random.default_rng(seed).standard_normal(out_tt.shape).astype(out_tt.dtype)
    out_tt.backward(g)
    out_q.backward(torch.from_numpy(g.copy()))
    for i, (tl, _, ql, _) in enumerate(leaves):
        if not rg[i]:
            continue
        if ql.grad is None:
            assert tl.grad is None or not np.any(tl.grad.data), f"输入 {i}: torch 无梯度，tinytensor 却有非零梯度"
            continue
        assert tl.grad is not None, f"输入 {i}: tinytensor 没有梯度"
        assert same_dtype(tl.grad, ql.grad), f"输入 {i}: 梯度 dtype {tl.grad.dtype} ≠ torch {ql.grad.dtype}"
        assert_close(tl.grad.data, ql.grad.numpy(), rtol, atol, f"输入 {i} 的梯度")
    return out_tt, out_q
