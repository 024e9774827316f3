"""全局随机数发生器：manual_seed 与可保存/恢复的状态（断点续训需要它）。

所有随机操作（randn、dropout、multinomial……）都从这里取随机数，
所以 ``manual_seed(123)`` 之后的结果完全可复现。状态可以转成 JSON 保存。
"""

from __future__ import annotations

from typing import Any

import numpy as np

_rng: np.random.Generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """设置全局随机种子，返回新的发生器。"""
    global _rng
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"随机种子必须是整数，收到 {seed!r}")
    _rng = np.random.default_rng(int(seed))
    return _rng


seed = manual_seed


def default_generator() -> np.random.Generator:
    """当前的全局发生器。"""
    return _rng


def get_rng_state() -> dict[str, Any]:
    """全局发生器的状态（可 JSON 序列化的字典）。"""
    return dict(_rng.bit_generator.state)


def set_rng_state(state: dict[str, Any]) -> None:
    """恢复 ``get_rng_state`` 得到的状态。"""
    global _rng
    bg = getattr(np.random, state["bit_generator"])()
    bg.state = state
    _rng = np.random.Generator(bg)
