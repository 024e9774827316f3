"""内核包装层共用的输入检查（中文报错）。"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(x: object, name: str, op: str) -> np.ndarray:
    """转成 ndarray 并要求 dtype 为 float32/float64。"""
    a = np.asarray(x)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}：{name} 的 dtype 必须是 float32 或 float64，收到 {a.dtype}")
    return a


def same_dtype(a: np.ndarray, name: str, dtype: np.dtype, op: str) -> np.ndarray:
    """要求与主输入 dtype 一致（不做隐式转换，免得精度悄悄改变）。"""
    if a.dtype != dtype:
        raise TypeError(f"{op}：{name} 的 dtype 为 {a.dtype}，应与输入一致（{dtype}）")
    return a


def int_array(x: object, name: str, op: str) -> np.ndarray:
    """转成 int64 ndarray；非整数 dtype 报错。"""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{op}：{name} 必须是整数数组，收到 dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def check_shape(a: np.ndarray, name: str, shape: tuple[int, ...], op: str) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{op}：{name} 的形状应为 {tuple(shape)}，收到 {a.shape}")


def check_ndim(a: np.ndarray, name: str, ndim: int, op: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{op}：{name} 应为 {ndim} 维数组，收到形状 {a.shape}")
