"""CPU 速度调优：一次显式调用打开，一次调用撤销。``import tinytensor`` 本身不改变进程里的任何东西。

    import tinytensor as tt
    tt.tuning.enable()      # 训练/生成之前（命令行与 bench/ 都这样做）
    ...
    tt.tuning.disable()     # 撤销；或者 with tt.tuning.enabled(): ...

打开的三项（为什么与实测的差别见 docs/performance.md）：

1. **堆**（heap.py）：glibc 的 mmap/修剪阈值调到 1 GiB，释放的大数组留在堆里复用，省掉每步上万次缺页。
   ``TINYTENSOR_KEEP_HEAP=0`` 跳过这一项。
2. **BLAS 线程**（kernels/threads.py）：numpy 的 BLAS 设成单线程，大矩阵乘、注意力、融合输出层由 tinytensor
   切给自己的几个线程。这影响整个进程：不经 tinytensor 的 ``a @ b`` 也变成单线程。
   ``TINYTENSOR_BACKEND=numpy`` 时不切分（读者的路径保持普通 NumPy），但 BLAS 仍按这里的设置。
3. **numba 线程层**：numba 尚未启动过并行内核时改用 ``workqueue``（默认的 OpenMP 层在并行区结束后忙等，
   与 BLAS 抢核）。线程层一旦初始化就不能再换，所以这一项要在第一次训练步之前打开才生效；
   用户设置了 NUMBA_THREADING_LAYER 时不动。

契约
----
- ``enable()`` 返回各项是否生效的字典 ``{"heap": ..., "blas": ..., "threading_layer": ...}``；重复调用无副作用。
  环境变量 ``TINYTENSOR_TUNING=0`` 让它什么也不做（全部为 False），取值只能是 0 或 1。
- ``disable()`` 撤销能撤销的：BLAS 线程数恢复原值并停止切分；堆阈值回到 glibc 默认值（见 heap.py）；
  线程层若尚未初始化则恢复原设置（已初始化的线程层换不回来）。
- ``is_enabled()``：enable() 之后、disable() 之前为 True。
- 调优不改变任何数值结果的含义：切分后的矩阵乘与 ``np.matmul`` 只在末位上可能不同（见 threads.matmul）。
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from . import heap
from .kernels import backend, threads

ENV_VAR = "TINYTENSOR_TUNING"

_enabled = False


def _allowed_by_env() -> bool:
    raw = os.environ.get(ENV_VAR, "1").strip()
    if raw not in ("0", "1"):
        raise ValueError(f"环境变量 {ENV_VAR}={raw!r} 无效：只能是 0（不调优）或 1（允许调优，默认）")
    return raw == "1"


def enable() -> dict[str, bool]:
    """打开 CPU 调优（堆阈值、BLAS 线程、numba 线程层；见模块说明），返回各项是否生效。"""
    global _enabled
    if not _allowed_by_env():
        return {"heap": False, "blas": False, "threading_layer": False}
    keep_heap = heap.enabled_by_env()
    layer = backend.prefer_workqueue()
    done = {
        "heap": heap.keep_freed_memory() if keep_heap else False,
        "blas": threads.claim_blas(),
        "threading_layer": layer,
    }
    _enabled = True
    return done


def disable() -> None:
    """撤销 enable()（见模块说明中能撤销的范围）。"""
    global _enabled
    threads.release_blas()
    heap.restore_defaults()
    backend.restore_threading_layer()
    _enabled = False


def is_enabled() -> bool:
    """调优是否打开。"""
    return _enabled


@contextlib.contextmanager
def enabled() -> Iterator[dict[str, bool]]:
    """``with tuning.enabled(): ...``：进入时 enable()，退出时 disable()。"""
    done = enable()
    try:
        yield done
    finally:
        disable()
