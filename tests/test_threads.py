"""tinytensor.kernels.threads：切段并行、BLAS 单线程的进程级设置、按行/列切分的矩阵乘。

切分只在 claim_blas() 之后发生（tt.tuning.enable() 调用它）；这里的大多数测试用 ``claimed`` 夹具打开、测完恢复。
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tinytensor.kernels import backend, threads

needs_blas_control = pytest.mark.skipif(not threads.available(), reason="threadpoolctl 找不到可设置的 BLAS")


def _numpy_blas_threads() -> list[int]:
    return [lib.num_threads for lib in threads._blas_libs()]


@pytest.fixture
def claimed():
    """BLAS 设成单线程、由我们切分；测完恢复原来的线程数。"""
    assert not threads.claimed()
    threads.claim_blas()
    yield
    threads.release_blas()


@needs_blas_control
@pytest.mark.parametrize(("n", "nt"), [(1, 4), (5, 1), (5, 2), (7, 3), (3, 8)])
def test_run_parts_covers_range_once(claimed, n: int, nt: int) -> None:
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def part(lo: int, hi: int) -> None:
        with lock:
            seen.append((lo, hi, threading.current_thread().name))

    threads.run_parts(part, n, nt)
    covered = sorted(i for lo, hi, _ in seen for i in range(lo, hi))
    assert covered == list(range(n))
    assert len(seen) == min(n, nt)
    assert all(lo < hi for lo, hi, _ in seen)
    main = threading.current_thread().name  # 第 0 段在调用者线程，其余在线程池
    assert [name == main for lo, _, name in sorted(seen)] == [True] + [False] * (len(seen) - 1)


@needs_blas_control
@pytest.mark.parametrize("bad", [0, 1])
def test_exception_in_any_part_propagates(claimed, bad: int) -> None:
    done = []

    def part(lo: int, hi: int) -> None:
        if lo == bad * 3:
            raise KeyError(f"段 {lo}")
        done.append(lo)

    with pytest.raises(KeyError, match=f"段 {bad * 3}"):
        threads.run_parts(part, 6, 2)
    assert done == [3 - bad * 3]  # 另一段照常跑完


@needs_blas_control
def test_claim_sets_numpy_blas_to_one_thread_and_release_restores() -> None:
    before = _numpy_blas_threads()
    threads.run_parts(lambda lo, hi: None, 4, 2)  # 没有 claim：不切分，也不碰 BLAS
    threads.matmul(np.ones((512, 512), np.float32), np.ones((512, 512), np.float32))
    assert _numpy_blas_threads() == before and not threads.claimed()
    try:
        assert threads.claim_blas()
        assert _numpy_blas_threads() == [1] * len(before)
        assert threads.claim_blas()  # 重复调用无副作用
    finally:
        threads.release_blas()
    assert _numpy_blas_threads() == before and not threads.claimed()


@needs_blas_control
def test_blas_threads_for_matvec_lends_threads_back_only_inside() -> None:
    """生成时暂时把线程交还给 BLAS：块内恢复 claim 之前的线程数，出块后回到 1；没有 claim 时什么也不改。"""
    before = _numpy_blas_threads()
    with threads.blas_threads_for_matvec():
        assert _numpy_blas_threads() == before
    try:
        assert threads.claim_blas()
        with threads.blas_threads_for_matvec():
            assert _numpy_blas_threads() == before
        assert _numpy_blas_threads() == [1] * len(before)
        with pytest.raises(RuntimeError), threads.blas_threads_for_matvec():
            raise RuntimeError("生成中出错")
        assert _numpy_blas_threads() == [1] * len(before) and threads.claimed()
    finally:
        threads.release_blas()
    assert _numpy_blas_threads() == before


def test_no_split_before_claim() -> None:
    """没有调优时 run_parts 整段在调用者线程里跑（import tinytensor 不改变 BLAS）。"""
    seen = []
    threads.run_parts(lambda lo, hi: seen.append((lo, hi, threading.current_thread() is threading.main_thread())), 6, 3)
    assert seen == [(0, 6, True)]


@needs_blas_control
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("m", "k", "n", "layout"),
    [(300, 200, 400, "nn"), (301, 257, 129, "tn"), (512, 96, 300, "nt"), (3, 700, 2000, "nt"), (1, 1500, 3001, "nn"),
     (8, 8, 8, "nn")],  # fmt: skip
)
def test_split_matmul_matches_numpy(claimed, monkeypatch: pytest.MonkeyPatch, dtype, m, k, n, layout) -> None:
    """按行（m 大）或按列（m 小，如生成时的矩阵-向量乘）切分，a/b 为转置视图时也与 np.matmul 一致。

    不要求逐位相同：OpenBLAS 对不同的行数选用不同的尾部内核，它自己 1 线程与 2 线程的结果也差在末位。
    """
    monkeypatch.setattr(threads, "MATMUL_MIN_WORK", 0)
    monkeypatch.setattr(backend, "get_num_threads", lambda: 3)
    rng = np.random.default_rng(m * n)
    a = rng.standard_normal((k, m)).astype(dtype).T if layout[0] == "t" else rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype).T if layout[1] == "t" else rng.standard_normal((k, n)).astype(dtype)
    want = np.matmul(a, b)
    tol = dict(rtol=1e-5, atol=1e-5 * np.sqrt(k)) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12 * np.sqrt(k))
    np.testing.assert_allclose(threads.matmul(a, b), want, **tol)
    out = np.empty((m, n), dtype=dtype)
    assert threads.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, want, **tol)
    bias = rng.standard_normal(n).astype(dtype)
    np.testing.assert_allclose(threads.matmul(a, b, bias=bias), want + bias, **tol)


def test_no_split_without_blas_control(monkeypatch: pytest.MonkeyPatch) -> None:
    """设不了 BLAS 线程数时 claim_blas 做不到，run_parts 整段在调用者线程里跑。"""
    monkeypatch.setattr(threads, "_blas", [])
    assert not threads.claim_blas() and not threads.claimed()
    seen = []
    threads.run_parts(lambda lo, hi: seen.append((lo, hi, threading.current_thread() is threading.main_thread())), 6, 3)
    assert seen == [(0, 6, True)]


@needs_blas_control
def test_parallel_kernels_fall_back_to_serial_off_the_main_thread(claimed, monkeypatch: pytest.MonkeyPatch) -> None:
    """numba 的 workqueue 线程层只能从主线程启动并行内核：在线程池里调用时 run_split 走串行内核。"""
    calls = []
    serial = lambda *a: calls.append(("serial", threading.current_thread() is threading.main_thread()))  # noqa: E731
    parallel = lambda *a: calls.append(("parallel", threading.current_thread() is threading.main_thread()))  # noqa: E731
    threads.run_parts(lambda lo, hi: backend.run_split(serial, parallel, 10, work=100, min_work=0), 2, 2)
    assert sorted(calls) == [("parallel", True), ("serial", False)]
