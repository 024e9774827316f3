"""内核包装层共用的输入检查（中文报错）。

这些检查在每次调用时都要跑（生成时每个词元调用几十次），所以先走快路径：输入已是 ndarray、dtype 是
float32/float64 的标准描述符（``is`` 比较）时只花几十纳秒；快路径不成立时再做完整检查并给出中文报错。
"""

from __future__ import annotations

import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
FLOAT_DTYPES = (F32, F64)


def float_array(x: object, name: str, op: str) -> np.ndarray:
    """转成 ndarray 并要求 dtype 为 float32/float64。"""
    a = x if type(x) is np.ndarray else np.asarray(x)
    dt = a.dtype
    if dt is not F32 and dt is not F64 and dt not in FLOAT_DTYPES:
        raise TypeError(f"{op}：{name} 的 dtype 必须是 float32 或 float64，收到 {dt}")
    return a


def same_dtype(a: np.ndarray, name: str, dtype: np.dtype, op: str) -> np.ndarray:
    """要求与主输入 dtype 一致（不做隐式转换，免得精度悄悄改变）。"""
    if a.dtype is not dtype and a.dtype != dtype:
        raise TypeError(f"{op}：{name} 的 dtype 为 {a.dtype}，应与输入一致（{dtype}）")
    return a


def float_like(x: object, name: str, dtype: np.dtype, op: str) -> np.ndarray:
    """float_array + same_dtype：转成 ndarray，dtype 必须与主输入相同。"""
    a = x if type(x) is np.ndarray else np.asarray(x)
    if a.dtype is not dtype:
        same_dtype(float_array(a, name, op), name, dtype, op)
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
