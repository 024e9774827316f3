"""内核后端开关：numba（默认）或纯 NumPy。

契约
----
- 环境变量 ``TINYTENSOR_BACKEND`` 在导入时决定初始后端，取值 ``numba``（默认）或 ``numpy``，
  大小写不敏感；其他取值在导入时抛出 ValueError（拼写错误不应被悄悄忽略）。
- ``set_backend(name)`` 在运行时切换；各公开内核函数在 *调用时* 读取当前后端，
  所以测试可以随时切换。
- numba 导入失败时回退到 NumPy 并发出 RuntimeWarning；之后再请求 numba 会再次警告并保持 NumPy。
- 本模块同时导出 ``njit``、``prange``、``overload``、``get_num_threads``：numba 不可用时它们是
  “什么也不做”的替身，使内核模块仍能被导入（此时内核永远不会被调用）。
- numba 的 ``cache=True`` 只按 *调用者自己* 的源文件判断缓存是否过期：改了 ``_vmath.py``，用到它的
  各内核仍会加载旧的机器码。所以导入时对本包所有 ``*.py`` 求一个哈希，与 ``__pycache__`` 里记下的
  不同就删掉那里的 numba 缓存（``*.nbi``/``*.nbc``），下次调用时重新编译。
  设置了 NUMBA_CACHE_DIR 时不做这件事。
- numba 的并行线程层默认设为 ``workqueue``（numba 自带的简单线程池；用户设置了 NUMBA_THREADING_LAYER
  则不动）。原因（实测，2 核机器）：默认会选 OpenMP 层（libgomp），它的线程在并行区结束后忙等，
  正好和紧随其后的 OpenBLAS 矩阵乘抢核；torch 也自带 libgomp，两者同处一个进程时互相干扰更明显。
  tiny 配置的完整训练步在 OpenMP 层下约 3,700–3,900 词元/秒，workqueue 层下约 6,200–6,900 词元/秒。
  workqueue 层不支持从多个 Python 线程同时调用并行内核；本项目只在主线程里调用。
- 串行/并行双路径：workqueue 层每启动一次 ``parallel=True`` 内核要 ~60–110 µs（唤醒线程、分派、等待），
  与数据量无关；生成时每个新词元要调几十次 1 行的小内核，训练步里也有上百次。所以每个并行内核都拆成
  一个串行的 ``@njit`` 工作函数（处理第 [lo, hi) 行或元素）和一个 ``parallel=True`` 驱动（把行分成
  与线程数相同的连续段，``prange`` 逐段调用工作函数，每段只写自己的输出）；包装层按工作量分派：
  低于该内核的阈值（``_PAR_MIN*``，各模块里注明实测的分界）直接调用串行工作函数。两条路径逐行/逐元素
  做完全相同的运算，结果逐位相同（tests/test_kernels.py 检查）。两者是不同的 Python 函数：numba 的
  磁盘缓存按模块、限定名和行号建索引而不看编译选项，同一个函数编译成串行、并行两份会互相覆盖缓存。
  分派与分段数都由 ``run_split`` 在 Python 里完成（``get_num_threads()``）：在 ``@njit`` 里调用它会让函数无法缓存。

本包只依赖 numpy、numba 与标准库，不导入 tinytensor 的其他部分。
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_USER_THREADING_LAYER = "NUMBA_THREADING_LAYER" in os.environ
_MAIN_THREAD = threading.main_thread().ident

ALLOWED_BACKENDS: tuple[str, ...] = ("numba", "numpy")
ENV_VAR = "TINYTENSOR_BACKEND"

try:  # numba 是运行时依赖，但缺失或损坏时仍要能用 NumPy 跑通
    from numba import get_num_threads, njit, prange
    from numba.extending import overload

    NUMBA_AVAILABLE = True
    NUMBA_IMPORT_ERROR: str | None = None
    if not _USER_THREADING_LAYER:  # 见模块说明：默认用 workqueue 线程层
        import numba

        numba.config.THREADING_LAYER = "workqueue"
except Exception as exc:  # 任何导入失败都回退
    NUMBA_AVAILABLE = False
    NUMBA_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    prange = range

    def get_num_threads() -> int:
        """numba 缺失时的替身：单线程。"""
        return 1

    def njit(*args: Any, **kwargs: Any) -> Any:
        """numba 缺失时的替身：原样返回被装饰的 Python 函数。"""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda f: f

    def overload(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """numba 缺失时的替身：不注册任何实现。"""
        return lambda f: f


def _drop_stale_numba_cache(here: Path) -> None:
    """目录 here 中任一 .py 变了就删掉 here/__pycache__ 里的 numba 缓存（原因见模块说明）。"""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    h = hashlib.sha256()
    for f in sorted(here.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    digest = h.hexdigest()
    cache = here / "__pycache__"
    stamp = cache / "numba-source.sha256"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        cache.mkdir(exist_ok=True)
        for p in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            p.unlink(missing_ok=True)
        stamp.write_text(digest)
    except OSError:  # 只读的安装目录：numba 会自己改用用户缓存目录，重新安装时文件时间也会变
        pass


if NUMBA_AVAILABLE:
    _drop_stale_numba_cache(Path(__file__).resolve().parent)


def run_split(serial: Any, parallel: Any, n: int, *args: Any, work: int, min_work: int) -> None:
    """按工作量在串行与并行内核之间分派（见模块说明“串行/并行双路径”）。

    ``work < min_work`` 时调用 ``serial(*args, 0, n)``（处理第 [0, n) 行/元素/块），否则调用
    ``parallel(*args, get_num_threads())``。两个内核的前几个参数相同，只在这里写一次。
    """
    if work < min_work or threading.get_ident() != _MAIN_THREAD:  # 并行内核只能从主线程启动（见 threads.py）
        serial(*args, 0, n)
    else:
        parallel(*args, get_num_threads())


def _normalize(name: object) -> str:
    """把后端名规范成小写字符串；非法取值抛出中文 ValueError。"""
    norm = str(name).strip().lower() if isinstance(name, str) else None
    if norm not in ALLOWED_BACKENDS:
        allowed = "、".join(repr(b) for b in ALLOWED_BACKENDS)
        raise ValueError(f"未知的内核后端 {name!r}；可选值为 {allowed}")
    return norm


def _resolve(name: str) -> str:
    """numba 不可用时把 'numba' 降级为 'numpy'（并警告）。"""
    if name == "numba" and not NUMBA_AVAILABLE:
        warnings.warn(
            f"numba 导入失败（{NUMBA_IMPORT_ERROR}），内核改用 NumPy 后端（更慢，但结果一致）",
            RuntimeWarning,
            stacklevel=3,
        )
        return "numpy"
    return name


def _initial_backend() -> str:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return _resolve("numba")
    try:
        return _resolve(_normalize(raw))
    except ValueError as exc:
        raise ValueError(f"环境变量 {ENV_VAR}={raw!r} 无效：{exc}") from None


_backend: str = _initial_backend()


def get_backend() -> str:
    """返回当前生效的后端名：'numba' 或 'numpy'。"""
    return _backend


def set_backend(name: str) -> None:
    """切换后端（'numba' 或 'numpy'）；numba 不可用时请求 'numba' 会警告并保持 'numpy'。"""
    global _backend
    _backend = _resolve(_normalize(name))


def use_numba() -> bool:
    """当前是否走 numba 内核。"""
    return _backend == "numba"


@contextlib.contextmanager
def backend_scope(name: str) -> Iterator[None]:
    """临时切换后端的上下文管理器，退出时恢复原值：``with backend_scope("numpy"): ...``。"""
    old = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(old)
