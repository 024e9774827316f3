"""让释放的大块内存留在进程里复用，不再每一步都向操作系统要新页（Linux/glibc）；调优的一部分。

为什么
------
训练的每一步都分配、释放同样一批大数组（激活、注意力概率、logits、梯度……）。glibc 的默认策略是：
较大的块用 ``mmap`` 单独向系统申请，``free`` 时立刻 ``munmap`` 还回去；堆顶空出的内存也会被修剪掉。
于是下一步再分配时拿到的是全新的页，每一页第一次写入都要进内核缺页、清零（实测的缺页次数与耗时见
docs/performance.md）。

做法：用 ``mallopt`` 把“改用 mmap 的阈值”（M_MMAP_THRESHOLD）和“修剪堆顶的阈值”（M_TRIM_THRESHOLD）都调到
1 GiB：大数组也从堆里分配，释放后留在堆里，下一步直接复用已经映射好的页。代价是进程的常驻内存（RSS）
不会在峰值过后回落（最多多留 1 GiB 空闲堆）。这与 PyTorch 在 GPU 上用缓存分配器是同一个道理。

契约
----
- 导入时什么也不做。``keep_freed_memory()`` 由 ``tinytensor.tuning.enable()`` 调用；环境变量
  ``TINYTENSOR_KEEP_HEAP=0`` 让它跳过这一项，取值只能是 ``0`` 或 ``1``，其他值在 enable() 时抛出 ValueError。
- ``restore_defaults()`` 撤销：两个阈值回到 glibc 的默认值 128 KiB。glibc 原本会随程序释放的块动态调高
  mmap 阈值；一旦用 mallopt 设过，这种动态调整就关掉了，撤销后也不会再开（glibc 没有提供重新打开的办法）。
- 影响整个进程（glibc 的设置是全局的），对结果没有任何数值上的影响。
- 非 Linux 或不是 glibc（如 macOS、musl）时什么也不做，返回 False。
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

ENV_VAR = "TINYTENSOR_KEEP_HEAP"
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h> 中的参数编号
_M_MMAP_THRESHOLD = -3
_LIMIT = 1 << 30  # 1 GiB
_DEFAULT = 128 * 1024  # glibc 两个阈值的默认值

_applied = False


def enabled_by_env() -> bool:
    """读 TINYTENSOR_KEEP_HEAP：未设置或 1 为开启，0 为关闭，其他值报错。"""
    raw = os.environ.get(ENV_VAR, "1").strip()
    if raw not in ("0", "1"):
        raise ValueError(f"环境变量 {ENV_VAR}={raw!r} 无效：只能是 0（关闭）或 1（开启，默认）")
    return raw == "1"


def _mallopt() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl 等没有 libc.so.6 / mallopt
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def is_applied() -> bool:
    """keep_freed_memory() 是否生效中。"""
    return _applied


def keep_freed_memory() -> bool:
    """把 glibc 的 mmap 与修剪阈值调到 1 GiB（见模块说明）；成功返回 True，平台不支持返回 False。"""
    global _applied
    if _applied:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    # 旧版 glibc 对 mmap 阈值有 32 MiB 上限（超过返回 0），那时退而取上限
    ok = mallopt(_M_MMAP_THRESHOLD, _LIMIT) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    ok = mallopt(_M_TRIM_THRESHOLD, _LIMIT) and ok
    _applied = bool(ok)
    return _applied


def restore_defaults() -> bool:
    """撤销 keep_freed_memory()：两个阈值回到 128 KiB（见模块说明）；没有生效过时什么也不做。"""
    global _applied
    if not _applied:
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mallopt(_M_MMAP_THRESHOLD, _DEFAULT)
    mallopt(_M_TRIM_THRESHOLD, _DEFAULT)
    _applied = False
    return True
