"""数据类型与默认浮点类型。

tinytensor 的 dtype 就是 NumPy 的 ``np.dtype``，名字与 torch 相同：``tt.float32`` 等。
默认浮点类型是 float32（与 torch 一致），可用 ``set_default_dtype`` 改成 float64（做梯度检查时常用）。
"""

from __future__ import annotations

from typing import Any

import numpy as np

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
float16 = np.dtype(np.float16)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)

float = float32  # noqa: A001  与 torch.float 同义
double = float64
long = int64

_default_float: np.dtype = float32


def get_default_dtype() -> np.dtype:
    """当前默认浮点类型。"""
    return _default_float


def set_default_dtype(dtype: Any) -> None:
    """设置默认浮点类型（只接受 float32 或 float64）。"""
    global _default_float
    d = np.dtype(dtype)
    if d not in (float32, float64):
        raise TypeError(f"默认浮点类型只能是 float32 或 float64，收到 {d}")
    _default_float = d


def is_floating(dtype: np.dtype) -> bool:
    return dtype.kind == "f"
