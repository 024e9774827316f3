"""内核后端开关：numba（默认）或纯 NumPy；numba 按需加载。

契约
----
- 环境变量 ``TINYTENSOR_BACKEND`` 在导入时决定初始后端，取值 ``numba``（默认）或 ``numpy``，
  大小写不敏感；其他取值在导入时抛出 ValueError（拼写错误不应被悄悄忽略）。
- ``set_backend(name)`` 在运行时切换；各公开内核函数在 *调用时* 读取当前后端（``use_numba()``），
  所以测试可以随时切换。
- **导入本包不导入 numba。** 第一次需要 numba 内核时（``use_numba()`` 在 numba 后端下第一次被调用）才导入它，
  并把各内核模块里用 ``njit`` 装饰的函数换成真正的 numba 函数。所以 ``TINYTENSOR_BACKEND=numpy`` 时
  numba 从不被导入（测试检查）。
- numba 导入失败时回退到 NumPy 并发出 RuntimeWarning（在第一次需要它时）；之后保持 NumPy。
- 本模块导出 ``njit``、``prange``、``overload``：内核模块用它们声明内核。numba 加载之前它们只登记，
  不编译：``njit`` 返回一个占位对象（被调用时先加载 numba），``prange`` 就是 ``range``，``overload`` 的
  注册推迟到加载时。加载时占位对象在各模块的全局变量里换成 numba 函数，``prange`` 换成 ``numba.prange``，
  于是内核之间互相调用时 numba 看到的是真正的 numba 函数。
- **磁盘缓存按整个包的源码作键。** numba 的 ``cache=True`` 只看函数 *自己* 所在文件是否变了：改了
  ``_vmath.py``，用到它的内核仍会加载旧的机器码。所以加载时对本目录所有 ``*.py`` 求一个 SHA-256，
  写进每个内核缓存索引的“源码戳”里：源码（任何一个文件）变了，旧索引的戳对不上，numba 当它不存在，
  重新编译并覆盖。导入与加载都不删除任何文件；缓存目录的位置仍由 numba 决定（``__pycache__``、
  用户缓存目录或 NUMBA_CACHE_DIR）。
- 导入与加载都不改 numba 的线程层：那是进程级设置，只有 ``tinytensor.tuning.enable()`` 才会在 numba
  的线程层初始化之前把它设成 ``workqueue``（见 ``prefer_workqueue``）。
- 串行/并行双路径：每启动一次 ``parallel=True`` 内核要几十微秒（唤醒线程、分派、等待），与数据量无关；
  生成时每个新词元要调几十次 1 行的小内核。所以每个并行内核都拆成一个串行的 ``@njit`` 工作函数
  （处理第 [lo, hi) 行或元素）和一个 ``parallel=True`` 驱动（把行分成与线程数相同的连续段，``prange``
  逐段调用工作函数，每段只写自己的输出）；包装层按工作量分派：低于该内核的阈值（``_PAR_MIN*``）直接调用
  串行工作函数。两条路径逐行/逐元素做完全相同的运算，结果逐位相同（tests/test_kernels.py 检查）。两者是
  不同的 Python 函数：numba 的磁盘缓存按模块、限定名和行号建索引而不看编译选项，同一个函数编译成串行、
  并行两份会互相覆盖缓存。分派与分段数都由 ``run_split`` 在 Python 里完成（``get_num_threads()``）：
  在 ``@njit`` 里调用它会让函数无法缓存。

本包只依赖 numpy、numba 与标准库，不导入 tinytensor 的其他部分。
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_MAIN_THREAD = threading.main_thread().ident
_HERE = Path(__file__).resolve().parent

ALLOWED_BACKENDS: tuple[str, ...] = ("numba", "numpy")
ENV_VAR = "TINYTENSOR_BACKEND"

prange = range  # 内核模块里 prange 的占位；加载 numba 时在各模块里换成 numba.prange

_numba: Any = None  # 加载成功后的 numba 模块
_load_error: str | None = None  # 加载失败的原因（之后不再尝试）
_lazy: list[_LazyKernel] = []  # 登记的内核（按声明顺序）
_overloads: list[tuple[Callable[..., Any], Callable[..., Any]]] = []  # 推迟的 overload 注册
_globals: list[dict[str, Any]] = []  # 声明过内核的模块的全局变量表
_want_workqueue = False  # tuning.enable() 要求的线程层（numba 尚未导入时推迟到加载时设置）
_layer_before: object = None  # prefer_workqueue() 之前 numba.config.THREADING_LAYER 的值
_load_lock = threading.Lock()  # 第一次调用内核可能发生在 threads.run_parts 的几个线程里


class _LazyKernel:
    """``njit`` 在 numba 加载之前返回的占位对象：第一次被调用时加载 numba，再转给真正的内核。"""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.py_func = fn
        self.options = options
        self.dispatcher: Any = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any) -> Any:
        if not _load():
            raise RuntimeError(f"numba 不可用（{_load_error}），无法调用内核 {self.__name__}")
        return self.dispatcher(*args)

    def __getattr__(self, name: str) -> Any:
        if name == "dispatcher":
            raise AttributeError(name)
        if self.dispatcher is None and not _load():
            raise AttributeError(name)
        return getattr(self.dispatcher, name)


def njit(*args: Any, **options: Any) -> Any:
    """声明一个 numba 内核（用法同 ``numba.njit``）；numba 加载后才真正编译（见模块说明）。"""

    def wrap(fn: Callable[..., Any]) -> Any:
        if _numba is not None:
            if fn.__globals__.get("prange") is range:
                fn.__globals__["prange"] = _numba.prange
            return _make_dispatcher(fn, options)
        k = _LazyKernel(fn, options)
        _lazy.append(k)
        if not any(g is fn.__globals__ for g in _globals):
            _globals.append(fn.__globals__)
        return k

    if len(args) == 1 and callable(args[0]) and not options:
        return wrap(args[0])
    return wrap


def overload(target: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``numba.extending.overload`` 的推迟版：numba 加载时才注册。"""

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        if _numba is not None:
            from numba.extending import overload as nb_overload

            nb_overload(target)(impl)
        else:
            _overloads.append((target, impl))
        return impl

    return register


def source_digest(folder: Path = _HERE) -> str:
    """folder 中所有 ``*.py`` 的 SHA-256（文件名与内容），作为内核磁盘缓存的键（见模块说明）。"""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


_cache_class: Any = None


def _keyed_cache_class() -> Any:
    """numba 的 FunctionCache 子类：索引的源码戳 = (numba 自己的戳, 本包源码的哈希)。"""
    global _cache_class
    if _cache_class is None:
        from numba.core.caching import FunctionCache, IndexDataCacheFile  # type: ignore[attr-defined]

        digest = source_digest()

        class KeyedFunctionCache(FunctionCache):  # type: ignore[misc,valid-type]
            def __init__(self, py_func: Callable[..., Any]) -> None:
                super().__init__(py_func)
                stamp = (self._impl.locator.get_source_stamp(), digest)
                self._cache_file = IndexDataCacheFile(
                    cache_path=self._cache_path, filename_base=self._impl.filename_base, source_stamp=stamp
                )

        _cache_class = KeyedFunctionCache
    return _cache_class


def _make_dispatcher(fn: Callable[..., Any], options: dict[str, Any], numba: Any = None) -> Any:
    opts = dict(options)
    cache = opts.pop("cache", False)
    disp = (numba or _numba).njit(**opts)(fn)
    if cache and hasattr(disp, "_cache"):  # NUMBA_DISABLE_JIT=1 时 njit 原样返回 Python 函数
        try:
            disp._cache = _keyed_cache_class()(disp.py_func)
        except RuntimeError:  # 找不到可写的缓存目录：不缓存（与 numba 自己的行为相同，只是不报错）
            pass
    return disp


def _load() -> bool:
    """导入 numba，把登记的内核换成 numba 函数（见模块说明）；成功返回 True。只在第一次做事。"""
    if _numba is not None:
        return True
    with _load_lock:
        return _load_locked()


def _load_locked() -> bool:
    global _numba, _load_error
    if _numba is not None:
        return True
    if _load_error is not None:
        return False
    try:
        import numba
        from numba.extending import overload as nb_overload
    except Exception as exc:  # 缺失或损坏：回退 NumPy
        _load_error = f"{type(exc).__name__}: {exc}"
        return False
    if _want_workqueue:
        _set_workqueue()
    for k in _lazy:
        k.dispatcher = _make_dispatcher(k.py_func, k.options, numba)
    for g in _globals:  # 各模块里的占位换成真正的 numba 函数，numba 编译时才认得它们
        for name, value in list(g.items()):
            if isinstance(value, _LazyKernel):
                g[name] = value.dispatcher
            elif value is range and name == "prange":
                g[name] = numba.prange
    for target, impl in _overloads:
        nb_overload(target)(impl)
    _numba = numba  # 最后才公开：别的线程看到它时内核都已换好
    return True


def numba_available() -> bool:
    """numba 能否导入（需要时才导入；导入失败只判断一次）。"""
    if _numba is not None:
        return True
    if _load_error is not None or importlib.util.find_spec("numba") is None:
        return False
    return _load()


def numba_loaded() -> bool:
    """numba 内核是否已经加载（numba 已被本包导入）。"""
    return _numba is not None


def get_num_threads() -> int:
    """并行内核与切段并行用的线程数：numba 已加载时为 ``numba.get_num_threads()``，否则按 numba 的默认规则
    （环境变量 NUMBA_NUM_THREADS，没有时为本进程可用的核数）。"""
    if _numba is not None:
        return int(_numba.get_num_threads())
    raw = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # 非 Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# 线程层（只由 tinytensor.tuning 调用）
# ---------------------------------------------------------------------------


def _layer_initialized() -> bool:
    mod = sys.modules.get("numba.np.ufunc.parallel")
    return bool(getattr(mod, "_is_initialized", False))


def _set_workqueue() -> None:
    global _layer_before
    numba = sys.modules["numba"]
    if _layer_initialized():
        return
    if _layer_before is None:
        _layer_before = numba.config.THREADING_LAYER
    numba.config.THREADING_LAYER = "workqueue"


def prefer_workqueue() -> bool:
    """让 numba 用 workqueue 线程层（tuning.enable() 调用）；用户设置了 NUMBA_THREADING_LAYER 时不动。

    线程层在 numba 第一次启动并行内核时初始化，之后不能再换：已初始化时返回 False。numba 尚未导入时
    推迟到加载时设置。为什么要换见 docs/performance.md（OpenMP 层的线程在并行区结束后忙等，与 BLAS 抢核）。
    """
    global _want_workqueue
    if "NUMBA_THREADING_LAYER" in os.environ or _layer_initialized():
        return False
    _want_workqueue = True
    if "numba" in sys.modules and sys.modules["numba"] is not None:
        _set_workqueue()
    return True


def restore_threading_layer() -> bool:
    """撤销 prefer_workqueue()；线程层已经初始化时做不到，返回 False。"""
    global _want_workqueue, _layer_before
    _want_workqueue = False
    if _layer_before is None:
        return True
    if _layer_initialized():
        return False
    sys.modules["numba"].config.THREADING_LAYER = _layer_before
    _layer_before = None
    return True


# ---------------------------------------------------------------------------
# 串行/并行分派与后端开关
# ---------------------------------------------------------------------------


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
    norm = name.strip().lower() if isinstance(name, str) else None
    if norm not in ALLOWED_BACKENDS:
        allowed = "、".join(repr(b) for b in ALLOWED_BACKENDS)
        raise ValueError(f"未知的内核后端 {name!r}；可选值为 {allowed}")
    return norm


def _initial_backend() -> str:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return "numba"
    try:
        return _normalize(raw)
    except ValueError as exc:
        raise ValueError(f"环境变量 {ENV_VAR}={raw!r} 无效：{exc}") from None


_backend: str = _initial_backend()


def _fall_back() -> None:
    global _backend
    warnings.warn(
        f"numba 导入失败（{_load_error}），内核改用 NumPy 后端（更慢，但结果一致）", RuntimeWarning, stacklevel=3
    )
    _backend = "numpy"


def get_backend() -> str:
    """返回当前生效的后端名：'numba' 或 'numpy'（numba 无法导入时 'numba' 会在这里降级）。"""
    use_numba()
    return _backend


def set_backend(name: str) -> None:
    """切换后端（'numba' 或 'numpy'）；numba 不可用时请求 'numba' 会警告并保持 'numpy'。"""
    global _backend
    _backend = _normalize(name)
    use_numba()


def use_numba() -> bool:
    """当前是否走 numba 内核（numba 后端下第一次调用时加载 numba）。"""
    if _backend != "numba":
        return False
    if _numba is not None or _load():
        return True
    _fall_back()
    return False


@contextlib.contextmanager
def backend_scope(name: str) -> Iterator[None]:
    """临时切换后端的上下文管理器，退出时恢复原值：``with backend_scope("numpy"): ...``。"""
    old = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(old)
