"""切段并行：调优开启时 BLAS 只用单线程，大矩阵乘与注意力由我们切成几段交给几个 Python 线程。

为什么
------
多线程 OpenBLAS 在训练步里有两个问题：

1. **小矩阵**：注意力是一大批小矩阵乘（每个头一个，例如 128×32 乘 32×128）。``np.matmul`` 对批维逐个调用
   BLAS，多线程 OpenBLAS 又把*每一个*小矩阵切给所有线程，每次都要唤醒、同步，算得还没等得久。
2. **忙等**：OpenBLAS 的工作线程做完一次矩阵乘后会空转等待下一次（默认约 2^28 个时钟周期，≈0.1 s），
   训练步里矩阵乘每隔几毫秒就来一次，它就一直占着一个核，紧随其后的 numba 内核或我们自己的线程只好和它抢核。

所以调优开启时（``tinytensor.tuning.enable()`` 调用 ``claim_blas``）BLAS 设成单线程，由我们自己切分：

- ``matmul(a, b)``：二维矩阵乘，按输出的行（行太少时按列）切成几段，每段一个线程、单线程 BLAS；
- ``run_parts(fn, n, nt)``：通用的“切段并行”，注意力按批维切、融合输出层按行块切都用它；
- ``blas_threads_for_matvec()``：生成（逐个词元解码）时暂时把线程交还给 BLAS，矩阵-向量乘由它自己多线程。

torch 的 CPU 后端也是这样：算子自己按 (批, 头) 或行块切给线程池，BLAS 调用本身不再开线程。
实测的差别见 docs/performance.md。

契约
----
- **只有 ``claim_blas()`` 之后才切分**（``splitting()`` 为 True：BLAS 已设成单线程、当前是 numba 后端）。
  没有调优时（默认，也是 ``TINYTENSOR_BACKEND=numpy`` 时）``matmul`` 就是 ``np.matmul``，``run_parts`` 在调用者
  线程里一次做完，numpy 的 BLAS 保持它自己的线程数：``import tinytensor`` 不改变进程里任何东西。
- ``run_parts(fn, n, nt)``：切分时把 ``range(n)`` 分成 ``k = min(nt, n)`` 个连续段，调用 ``fn(lo, hi)``；第 0 段
  在调用者线程里跑，其余交给线程池，全部结束才返回；任何一段的异常原样抛给调用者（其他段照常跑完）。
- 每段只写自己的输出切片，所以结果与段数无关（逐位相同，测试检查）。
- 段里调用的 numba 内核必须是 ``nogil=True`` 的*串行*内核：workqueue 线程层不支持多个 Python 线程同时启动
  并行内核（``backend.run_split`` 在非主线程里自动改走串行内核）；``np.matmul`` 本身会释放 GIL。
- ``claim_blas()``：把 numpy 所用 BLAS 的线程数设为 1（进程级设置），返回是否做到；``release_blas()`` 恢复
  之前的线程数并停止切分。找不到可设置的 BLAS（没有 threadpoolctl，或 numpy 用的 BLAS 它不认识）时
  ``available()`` 为 False，``claim_blas()`` 什么也不做（否则每段都开多线程 BLAS，核被超额订阅）。
- 只应从一个线程调用 tinytensor（与 numba 的 workqueue 线程层相同的限制）。
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from . import backend

# 工作量（乘加次数 m·k·n）低于它的矩阵乘不切分：线程交接约 20–50 µs，比算得还久
MATMUL_MIN_WORK = 1 << 21

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas: list[Any] | None = None  # numpy 所用 BLAS 的 threadpoolctl 库控制器；空列表表示不可用
_claimed: list[tuple[Any, int]] | None = None  # claim_blas() 之前各库的线程数（release_blas 用）


def _blas_libs() -> list[Any]:
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController().select(user_api="blas").lib_controllers
            # 只管 numpy 自带的 BLAS（pip 版在 numpy.libs/ 下）；认不出来时才管全部
            mine = [lib for lib in libs if "numpy" in str(getattr(lib, "filepath", ""))]
            _blas = mine or list(libs)
        except Exception:  # 没装 threadpoolctl 或探测失败：不切分
            _blas = []
    return _blas


def available() -> bool:
    """能把 BLAS 设成单线程时才值得由我们切分。"""
    return bool(_blas_libs())


def num_threads() -> int:
    """切分用的线程数：numba 的线程数（NUMBA_NUM_THREADS，默认为核数）。"""
    return backend.get_num_threads()


def claim_blas() -> bool:
    """把 BLAS 设成单线程，此后由我们切分（见模块说明）；做到了返回 True，重复调用无副作用。"""
    global _claimed
    if _claimed is None and available():
        _claimed = [(lib, lib.num_threads) for lib in _blas_libs()]
        for lib, _ in _claimed:
            lib.set_num_threads(1)
    return _claimed is not None


def claimed() -> bool:
    """BLAS 是否已被 claim_blas() 设成单线程。"""
    return _claimed is not None


def splitting() -> bool:
    """是否由我们切分：BLAS 已设成单线程，且当前是 numba 后端（NumPy 后端是读者的路径，不切分）。"""
    return _claimed is not None and backend.use_numba()


def release_blas() -> None:
    """恢复 claim_blas() 之前的 BLAS 线程数，停止切分。"""
    global _claimed
    if _claimed is not None:
        for lib, n in _claimed:
            lib.set_num_threads(n)
        _claimed = None


@contextlib.contextmanager
def blas_threads_for_matvec() -> Iterator[None]:
    """在这段代码里让 BLAS 恢复 claim_blas() 之前的线程数（没有 claim 时什么也不做）。

    生成时每个词元只有几次矩阵-向量乘，耗时几乎全在读权重：OpenBLAS 自己的多线程 gemv 最快，
    按列切给 Python 线程反而更慢（线程池的调度开销与 gemv 本身同一量级）。训练不用它。"""
    claimed = _claimed
    if claimed is None:
        yield
        return
    for lib, n in claimed:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        if _claimed is claimed:  # 中途没有被 release_blas() 撤销
            for lib, _ in claimed:
                lib.set_num_threads(1)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size < workers:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinytensor")
        _pool_size = workers
    return _pool


def run_parts(fn: Callable[[int, int], None], n: int, nt: int) -> None:
    """把 range(n) 切成 min(nt, n) 个连续段并行执行 fn(lo, hi)（见模块说明）。

    不切分时（``splitting()`` 为 False，例如没有开调优）整段在调用者线程里跑。
    """
    k = max(1, min(nt, n)) if splitting() else 1
    if k == 1:
        fn(0, n)
        return
    bounds = [(i * n // k, (i + 1) * n // k) for i in range(k)]
    futures: list[Future[None]] = [_executor(k - 1).submit(fn, lo, hi) for lo, hi in bounds[1:]]
    try:
        fn(*bounds[0])
    finally:
        for f in futures:  # 先等全部结束，再抛出第一个异常
            f.exception()
    for f in futures:
        f.result()


def matmul(
    a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, bias: np.ndarray | None = None
) -> np.ndarray:
    """二维矩阵乘 a @ b（+ bias）；切分时（见 ``splitting``）工作量够大的按输出的行（行数少于线程数的 8 倍时
    按列）切给多个线程，否则就是 ``np.matmul``。

    a、b 可以是转置视图（BLAS 直接处理，不拷贝）；给出 out 时写进它；bias（形状 (n,)）由各线程加到自己的
    那段上。与 ``np.matmul`` 相比只在末位上可能不同：OpenBLAS 对不同的行数/列数选用不同的尾部内核
    （它自己 1 线程与 2 线程的结果也不逐位相同）。
    """
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), dtype=np.result_type(a, b))
    nt = num_threads() if m * k * n >= MATMUL_MIN_WORK and splitting() else 1
    if nt < 2:
        np.matmul(a, b, out=out)
        if bias is not None:
            out += bias
        return out

    def rows(lo: int, hi: int) -> None:
        np.matmul(a[lo:hi], b, out=out[lo:hi])
        if bias is not None:
            out[lo:hi] += bias

    def cols(lo: int, hi: int) -> None:  # 生成时的矩阵-向量乘：按列切（每个线程只读 b 的一部分）
        np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])
        if bias is not None:
            out[:, lo:hi] += bias[lo:hi]

    if m >= 8 * nt:
        run_parts(rows, m, nt)
    else:
        run_parts(cols, n, nt)
    return out
