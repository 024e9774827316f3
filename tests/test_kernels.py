"""tinytensor.kernels 的测试：每个 numba 内核等于它的 NumPy 参考实现，每个参考实现等于 torch 的算子。

- 内核 vs 参考：float32 与 float64，随机形状（含 N=1、C=1、奇数尺寸、不连续输入）。
- 参考 vs torch：F.layer_norm、F.cross_entropy（ignore_index、三种 reduction）、F.gelu(approximate="tanh")、
  嵌入反向、torch.optim.AdamW/Adam（float64 下 10 步 rtol 1e-10）。
- 数值：±1e4 的极端 logits、整行 −inf 不产生 NaN；vexp/vtanh 的误差界。
- NUMBA_NUM_THREADS=1 与默认线程数逐位相同（子进程，经 .npz 比较）。
不做任何计时断言（计时见 bench/bench_kernels.py）。
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytensor.kernels as K
from tinytensor.kernels import layer_norm
from tinytensor.kernels.backend import backend_scope, numba_available

ROOT = Path(__file__).resolve().parent.parent
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (1, 7), (6, 1), (37, 19), (130, 384)]
LAYOUTS = ["c", "strided", "transposed"]

NUMBA_AVAILABLE = numba_available()
needs_numba = pytest.mark.skipif(not NUMBA_AVAILABLE, reason="numba 不可用")


@pytest.fixture
def claimed_blas():
    """BLAS 设成单线程、由我们切分（tt.tuning.enable() 做的那一项）；测完恢复。"""
    from tinytensor.kernels import threads

    if not threads.available():
        pytest.skip("threadpoolctl 找不到可设置的 BLAS")
    threads.claim_blas()
    yield
    threads.release_blas()


def rng_for(*key: object) -> np.random.Generator:
    """由测试参数得到固定的随机数种子（不用 hash()：它在每个进程里随机化）。"""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: type, layout: str = "c",
    scale: float = 1.0, shift: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """按给定内存布局生成数组：c（连续）、strided（隔列切片）、transposed（转置视图）。"""
    base_shape = {"c": shape, "strided": (*shape[:-1], 2 * shape[-1]), "transposed": shape[::-1]}[layout]
    base = (rng.standard_normal(base_shape) * scale + shift).astype(dtype)
    a = {"c": base, "strided": base[..., ::2], "transposed": base.T}[layout]
    assert a.shape == tuple(shape)
    if layout != "c" and min(shape) > 1:
        assert not a.flags.c_contiguous
    return a


def close(got: np.ndarray, want: np.ndarray, dtype: type, *, k: float = 1.0) -> None:
    """按 dtype 选容差；atol 随数值量级放大。k 放宽倍数。"""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == np.dtype(dtype), (got.dtype, dtype)
    mag = float(np.max(np.abs(want[np.isfinite(want)]), initial=1.0))
    if dtype == np.float32:
        rtol, atol = 2e-5 * k, 2e-6 * k * mag
    else:
        rtol, atol = 1e-12 * k, 1e-13 * k * mag
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def torch_or_skip():
    return pytest.importorskip("torch")


# ---------------------------------------------------------------------------
# 编译（放在最前面：冷缓存时所有内核的 numba 编译约 1 分钟都算在这里，之后各测试都很快）
# ---------------------------------------------------------------------------


def call_every_kernel(dtype: type) -> None:
    """用很小的输入把每个公开函数调用一遍（触发 numba 编译或加载缓存）。"""
    x = np.linspace(-2, 2, 12).reshape(3, 4).astype(dtype)
    w = np.ones(4, dtype)
    y, m, r = K.layer_norm_fwd(x, w, w)
    K.layer_norm_bwd(x, x, w, m, r)
    K.layer_norm_bwd(x, x, None, m, r)
    t = np.array([0, 3, -100])
    loss, lse = K.cross_entropy_fwd(x, t)
    K.cross_entropy_bwd(x, t, lse, 1.0)
    sm = K.softmax_fwd(x)
    K.softmax_bwd(x, sm)
    K.log_softmax_bwd(x, K.log_softmax_fwd(x))
    gy, gt = K.gelu_fwd(x)
    K.gelu_bwd(x, x, gt)
    K.embedding_bwd(5, np.array([0, 4, 0]), x)
    p, a, b = x.copy(), np.zeros_like(x), np.zeros_like(x)
    K.adamw_step(p, x, a, b, lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=1)
    K.adam_step(p, x, a, b, lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=2)
    q = x.reshape(1, 3, 4)
    out, probs = K.attention_fwd(q, q, q, 0.5, True)
    K.attention_bwd(q, q, q, q, probs, 0.5, True)


@needs_numba
@pytest.mark.slow
def test_compile_all_kernels() -> None:
    with backend_scope("numba"):
        for dt in DTYPES:
            call_every_kernel(dt)


# ---------------------------------------------------------------------------
# 后端开关
# ---------------------------------------------------------------------------


def run_py(code: str, env_extra: dict[str, str] | None = None, unset: tuple[str, ...] = ()):
    env = dict(os.environ)
    for k in unset:
        env.pop(k, None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_set_backend_roundtrip_and_bad_value() -> None:
    old = K.get_backend()
    try:
        K.set_backend("NumPy")
        assert K.get_backend() == "numpy" and not K.use_numba()
        with backend_scope("numba"):
            assert K.get_backend() == ("numba" if NUMBA_AVAILABLE else "numpy")
        assert K.get_backend() == "numpy"
        with pytest.raises(ValueError, match=r"'cuda'.*'numba'.*'numpy'"):
            K.set_backend("cuda")
        with pytest.raises(ValueError, match="未知的内核后端"):
            K.set_backend(3)  # type: ignore[arg-type]
        assert K.get_backend() == "numpy"
    finally:
        K.set_backend(old)


def test_env_var_selects_backend() -> None:
    code = "import tinytensor.kernels as K; print(K.get_backend())"
    r = run_py(code, {"TINYTENSOR_BACKEND": "NumPy"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "numpy"
    r = run_py(code, unset=("TINYTENSOR_BACKEND",))
    assert r.stdout.strip() == ("numba" if NUMBA_AVAILABLE else "numpy"), r.stderr
    r = run_py(code, {"TINYTENSOR_BACKEND": "bogus"})
    assert r.returncode != 0
    assert "TINYTENSOR_BACKEND" in r.stderr and "bogus" in r.stderr and "'numpy'" in r.stderr


def test_threading_layer_changes_only_with_tuning() -> None:
    """导入与运行内核不改 numba 的线程层；tuning.enable() 才改成 workqueue；用户的 NUMBA_THREADING_LAYER 优先。"""
    if not NUMBA_AVAILABLE:
        pytest.skip("需要 numba")
    code = (  # 阈值设为 0：强制走并行内核，线程层才会初始化
        "import numpy as np, numba, tinytensor as tt, tinytensor.kernels as K; K.layer_norm._PAR_MIN_FWD = 0; "
        "{pre}K.layer_norm_fwd(np.ones((4, 8), np.float32), None, None, 1e-5); print(numba.threading_layer())"
    )
    plain = run_py("import numba; numba.config.THREADING_LAYER = 'workqueue'; " + code.format(pre=""),
                   unset=("NUMBA_THREADING_LAYER",))  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "workqueue"  # 用户自己的设置保留
    r = run_py(code.format(pre="print(numba.config.THREADING_LAYER); "), unset=("NUMBA_THREADING_LAYER",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "default"  # 导入 tinytensor 后线程层仍是 numba 的默认
    r = run_py(code.format(pre="tt.tuning.enable(); "), unset=("NUMBA_THREADING_LAYER",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "workqueue"
    r = run_py(code.format(pre="tt.tuning.enable(); "), {"NUMBA_THREADING_LAYER": "omp"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "omp"


def test_falls_back_to_numpy_when_numba_missing() -> None:
    code = """
        import sys, warnings
        import numpy as np
        sys.modules["numba"] = None  # 让 import numba 失败
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import tinytensor.kernels as K
            backend = K.get_backend()  # numba 在第一次需要时才导入，失败时在这里警告并回退
        assert backend == "numpy", backend
        msgs = [str(x.message) for x in w]
        assert any("numba" in m and "NumPy" in m for m in msgs), msgs
        x = np.arange(12.0).reshape(3, 4)
        y, m, r = K.layer_norm_fwd(x, None, None)
        loss, lse = K.cross_entropy_fwd(x, np.array([0, 1, 3]))
        K.set_backend("numpy")
        print("ok")
    """
    r = run_py(code, unset=("TINYTENSOR_BACKEND",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@needs_numba
def test_dispatch_happens_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """调用时按后端分派；numba 后端再按工作量在串行内核与并行内核之间选。"""
    x = np.ones((2, 3))
    with backend_scope("numba"):  # 先把两条路径都编译好：之后替换模块属性不会影响已编译的并行驱动
        K.layer_norm_fwd(x, None, None)
        monkeypatch.setattr(layer_norm, "_PAR_MIN_FWD", 0)
        K.layer_norm_fwd(x, None, None)
        monkeypatch.undo()
    calls: list[str] = []

    def spy(name: str):
        orig = getattr(layer_norm, name)

        def f(*args):
            calls.append(name)
            return orig(*args)

        monkeypatch.setattr(layer_norm, name, f)

    spy("_ln_fwd_rows")
    spy("_ln_fwd_par")
    with backend_scope("numpy"):
        K.layer_norm_fwd(x, None, None)
    assert calls == []
    with backend_scope("numba"):
        K.layer_norm_fwd(x, None, None)
        assert calls == ["_ln_fwd_rows"]  # 6 个元素，远低于默认阈值：串行
        monkeypatch.setattr(layer_norm, "_PAR_MIN_FWD", 6)
        K.layer_norm_fwd(x, None, None)  # 工作量 N·C = 6 ≥ 阈值：并行
        monkeypatch.setattr(layer_norm, "_PAR_MIN_FWD", 7)
        K.layer_norm_fwd(x, None, None)
    assert calls == ["_ln_fwd_rows", "_ln_fwd_par", "_ln_fwd_rows"]


# ---------------------------------------------------------------------------
# 可向量化的 exp / tanh
# ---------------------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_vexp_vtanh_accuracy(dtype: type) -> None:
    from numba import njit

    from tinytensor.kernels._vmath import vexp, vtanh

    @njit(error_model="numpy")
    def apply(out_e, out_t, x):
        for i in range(x.shape[0]):
            out_e[i] = vexp(x[i])
            out_t[i] = vtanh(x[i])

    rng = np.random.default_rng(0)
    lo, hi = (-87.0, 88.0) if dtype == np.float32 else (-708.0, 709.0)
    parts = [rng.uniform(lo, hi, 20000), rng.standard_normal(20000) * 3, rng.uniform(-1e-3, 1e-3, 999)]
    x = np.concatenate(parts).astype(dtype)
    e = np.empty_like(x)
    t = np.empty_like(x)
    apply(e, t, x)
    exact = np.exp(x.astype(np.longdouble))
    ulp = np.abs(e.astype(np.longdouble) - exact) / np.spacing(exact.astype(dtype)).astype(np.longdouble)
    assert float(ulp.max()) <= 2.0
    eps = np.finfo(dtype).eps
    assert np.max(np.abs(t - np.tanh(x))) <= 4 * eps

    big = 1000.0 if dtype == np.float64 else 100.0
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, big, -big, -2 * big, 1e-30], dtype=dtype)
    e = np.empty_like(special)
    t = np.empty_like(special)
    apply(e, t, special)
    with np.errstate(over="ignore"):
        want_e = np.exp(special)
    np.testing.assert_array_equal(e[[0, 1, 2, 3, 5, 7, 8]], want_e[[0, 1, 2, 3, 5, 7, 8]])
    assert np.isnan(e[4]) and np.isnan(t[4])
    np.testing.assert_array_equal(t[[0, 2, 3, 5, 6]], np.tanh(special[[0, 2, 3, 5, 6]]))


# ---------------------------------------------------------------------------
# LayerNorm
# ---------------------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("affine", ["wb", "w", "none"])
def test_layer_norm_kernel_matches_reference(dtype, shape, layout, affine) -> None:
    rng = rng_for("ln", dtype, shape, layout, affine)
    N, C = shape
    x = make(rng, shape, dtype, layout, scale=3.0, shift=5.0)
    g = make(rng, shape, dtype, layout)
    w = rng.standard_normal(C).astype(dtype) if affine in ("wb", "w") else None
    b = rng.standard_normal(C).astype(dtype) if affine == "wb" else None
    with backend_scope("numba"):
        y, mean, rstd = K.layer_norm_fwd(x, w, b, 1e-5)
        dx, dw, db = K.layer_norm_bwd(g, x, w, mean, rstd)
    y_r, mean_r, rstd_r = K.layer_norm_fwd_numpy(x, w, b, 1e-5)
    dx_r, dw_r, db_r = K.layer_norm_bwd_numpy(g, x, w, mean_r, rstd_r)
    for got, want in ((y, y_r), (mean, mean_r), (rstd, rstd_r), (dx, dx_r)):
        close(got, want, dtype, k=4)
    assert mean.shape == rstd.shape == (N,)
    if w is None:
        assert dw is None and db is None and dw_r is None
    else:
        close(dw, dw_r, dtype, k=4)
        close(db, db_r, dtype, k=4)


@needs_numba
def test_layer_norm_nd_input_and_errors() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    with backend_scope("numba"):
        y, mean, rstd = K.layer_norm_fwd(x, None, None)
    assert y.shape == x.shape and mean.shape == (2, 3)
    close(y, K.layer_norm_fwd_numpy(x, None, None)[0], np.float32)
    with pytest.raises(ValueError, match="weight.*形状"):
        K.layer_norm_fwd(x, np.ones(4, np.float32), None)
    with pytest.raises(TypeError, match="dtype"):
        K.layer_norm_fwd(x, np.ones(5, np.float64), None)
    with pytest.raises(TypeError, match="float32 或 float64"):
        K.layer_norm_fwd(np.ones((2, 3), np.int64), None, None)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["c", "transposed"])
def test_layer_norm_reference_matches_torch(dtype, layout) -> None:
    torch = torch_or_skip()
    rng = rng_for("ln-torch", dtype, layout)
    N, C = 23, 48
    x = make(rng, (N, C), dtype, layout, scale=2.0, shift=1.0)
    g = rng.standard_normal((N, C)).astype(dtype)
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    y, mean, rstd = K.layer_norm_fwd_numpy(x, w, b, 1e-5)
    dx, dw, db = K.layer_norm_bwd_numpy(g, x, w, mean, rstd)
    xt, wt, bt = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (x, w, b))
    yt, mt, rt = torch.ops.aten.native_layer_norm(xt, [C], wt, bt, 1e-5)
    yt.backward(torch.from_numpy(g))
    k = 5 if dtype == np.float32 else 10
    close(y, yt.detach().numpy(), dtype, k=k)
    close(mean, mt.detach().numpy().reshape(N), dtype, k=k)
    close(rstd, rt.detach().numpy().reshape(N), dtype, k=k)
    close(dx, xt.grad.numpy(), dtype, k=k)
    close(dw, wt.grad.numpy(), dtype, k=k)
    close(db, bt.grad.numpy(), dtype, k=k)


# ---------------------------------------------------------------------------
# 交叉熵、softmax、log_softmax
# ---------------------------------------------------------------------------


def ce_case(rng: np.random.Generator, N: int, V: int, dtype: type, layout: str = "c", scale: float = 4.0):
    logits = make(rng, (N, V), dtype, layout, scale=scale)
    targets = rng.integers(0, V, N)
    targets[rng.random(N) < 0.25] = -100
    return logits, targets


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (37, 53), (64, 1000)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cross_entropy_kernel_matches_reference(dtype, shape, layout) -> None:
    rng = rng_for("ce", dtype, shape, layout)
    N, V = shape
    logits, targets = ce_case(rng, N, V, dtype, layout)
    row_scale = rng.random(N).astype(dtype)
    with backend_scope("numba"):
        loss, lse = K.cross_entropy_fwd(logits, targets, -100)
        d = K.cross_entropy_bwd(logits, targets, lse, row_scale, -100)
        d_scalar = K.cross_entropy_bwd(logits, targets, lse, 0.5, -100)
        fused = K.cross_entropy_fwd_bwd(logits, targets, row_scale, -100)
    loss_r, lse_r = K.cross_entropy_fwd_numpy(logits, targets, -100)
    close(loss, loss_r, dtype, k=4)
    close(lse, lse_r, dtype, k=4)
    d_r = K.cross_entropy_bwd_numpy(logits, targets, lse_r, row_scale, -100)
    close(d, d_r, dtype, k=4)
    for got, want in zip(fused, (loss_r, lse_r, d_r)):  # 前向 + 反向一次做完（每个元素一次 exp）
        close(got, want, dtype, k=4)
    for got, want in zip(fused, K.cross_entropy_fwd_bwd_numpy(logits, targets, row_scale, -100)):
        close(got, want, dtype, k=4)
    half = np.full(N, 0.5, dtype)
    close(d_scalar, K.cross_entropy_bwd_numpy(logits, targets, lse_r, half, -100), dtype, k=4)
    ignored = targets == -100
    assert np.all(loss[ignored] == 0) and np.all(d[ignored] == 0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("shape", [(3, 5), (300, 400)])  # 小输入走串行内核，大输入走并行内核
def test_cross_entropy_bwd_in_place_equals_out_of_place(backend, shape) -> None:
    """out=logits 原地写梯度（融合输出层用它省一块 (N, V) 内存）与另开数组逐位相同。"""
    if backend == "numba" and not NUMBA_AVAILABLE:
        pytest.skip("numba 不可用")
    rng = rng_for("ce-inplace", backend, shape)
    N, V = shape
    logits, targets = ce_case(rng, N, V, np.float32)
    logits = np.ascontiguousarray(logits)
    row_scale = rng.random(N).astype(np.float32)
    with backend_scope(backend):
        _, lse = K.cross_entropy_fwd(logits, targets, -100)
        want = K.cross_entropy_bwd(logits, targets, lse, row_scale, -100)
        buf = logits.copy()
        got = K.cross_entropy_bwd(buf, targets, lse, row_scale, -100, out=buf)
        assert got is buf
        np.testing.assert_array_equal(got, want)
        with pytest.raises(ValueError, match="out"):
            K.cross_entropy_bwd(logits, targets, lse, row_scale, -100, out=np.empty((N, V + 1), np.float32))
        fbuf = np.full((N, V), np.nan, np.float32)
        assert K.cross_entropy_fwd_bwd(logits, targets, row_scale, -100, out=fbuf)[2] is fbuf
        np.testing.assert_allclose(fbuf, want, rtol=1e-5, atol=1e-7)
        with pytest.raises(ValueError, match="out"):
            K.cross_entropy_fwd_bwd(logits, targets, row_scale, -100, out=np.empty((N, V), np.float64))


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 1), (1, 9), (2, 3, 17), (40, 257)])
@pytest.mark.parametrize("layout", ["c", "transposed"])
def test_softmax_kernels_match_reference(dtype, shape, layout) -> None:
    rng = rng_for("sm", dtype, shape, layout)
    x = make(rng, shape, dtype, layout, scale=5.0)
    g = make(rng, shape, dtype, layout)
    with backend_scope("numba"):
        y = K.softmax_fwd(x)
        ly = K.log_softmax_fwd(x)
        dy = K.softmax_bwd(g, y)
        dly = K.log_softmax_bwd(g, ly)
    close(y, K.softmax_fwd_numpy(x), dtype, k=4)
    close(ly, K.log_softmax_fwd_numpy(x), dtype, k=4)
    close(dy, K.softmax_bwd_numpy(g, y), dtype, k=4)
    close(dly, K.log_softmax_bwd_numpy(g, ly), dtype, k=4)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_cross_entropy_reference_matches_torch(dtype, reduction, ignore_index) -> None:
    torch = torch_or_skip()
    F = torch.nn.functional
    rng = rng_for("ce-torch", dtype, reduction, ignore_index)
    N, V = 29, 11
    logits = (rng.standard_normal((N, V)) * 3).astype(dtype)
    targets = rng.integers(0, V, N)
    targets[::4] = ignore_index
    lt = torch.tensor(logits, requires_grad=True)
    out = F.cross_entropy(lt, torch.from_numpy(targets), ignore_index=ignore_index, reduction=reduction)
    gout = rng.standard_normal(N).astype(dtype) if reduction == "none" else np.array(1.7, dtype)
    out.backward(torch.from_numpy(gout))
    valid = targets != ignore_index
    n_valid = int(valid.sum())
    for backend in ("numpy", "numba"):
        with backend_scope(backend):
            loss_rows, lse = K.cross_entropy_fwd(logits, targets, ignore_index)
            if reduction == "mean":
                loss = loss_rows.sum(dtype=np.float64) / n_valid
                row_scale = np.full(N, gout / n_valid, dtype)
            elif reduction == "sum":
                loss = loss_rows.sum(dtype=np.float64)
                row_scale = np.full(N, gout, dtype)
            else:
                loss = loss_rows
                row_scale = gout
            d = K.cross_entropy_bwd(logits, targets, lse, row_scale, ignore_index)
        k = 5 if dtype == np.float32 else 10
        close(np.asarray(loss, dtype), out.detach().numpy(), dtype, k=k)
        close(d, lt.grad.numpy(), dtype, k=k)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_reference_matches_torch(dtype) -> None:
    torch = torch_or_skip()
    rng = rng_for("sm-torch", dtype)
    x = (rng.standard_normal((3, 4, 9)) * 4).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    for ours_f, ours_b, tf in (
        (K.softmax_fwd_numpy, K.softmax_bwd_numpy, torch.softmax),
        (K.log_softmax_fwd_numpy, K.log_softmax_bwd_numpy, torch.log_softmax),
    ):
        xt = torch.tensor(x, requires_grad=True)
        yt = tf(xt, -1)
        yt.backward(torch.from_numpy(g))
        y = ours_f(x)
        close(y, yt.detach().numpy(), dtype, k=10)
        close(ours_b(g, y), xt.grad.numpy(), dtype, k=10)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_extreme_logits_no_nan(backend, dtype) -> None:
    rng = np.random.default_rng(5)
    N, V = 16, 40
    logits = rng.choice(np.array([-1e4, 1e4, 0.0, 3.0]), size=(N, V)).astype(dtype)
    targets = rng.integers(0, V, N)
    targets[3] = -100
    with backend_scope(backend):
        loss, lse = K.cross_entropy_fwd(logits, targets)
        d = K.cross_entropy_bwd(logits, targets, lse, 1.0 / N)
        y = K.softmax_fwd(logits)
        ly = K.log_softmax_fwd(logits)
        f_loss, _, f_d = K.cross_entropy_fwd_bwd(logits, targets, 1.0 / N)
    for a in (loss, lse, d, y, ly, f_loss, f_d):
        assert not np.isnan(a).any()
    close(f_loss, loss, dtype, k=4)
    close(f_d, d, dtype, k=4)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(d))
    try:
        import torch
    except ImportError:  # 没有 torch 时只检查无 NaN
        return
    lt = torch.tensor(logits.astype(np.float64), requires_grad=True)
    ref = torch.nn.functional.cross_entropy(lt, torch.from_numpy(targets), reduction="none")
    np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_rows_no_nan(backend, dtype) -> None:
    V = 6
    logits = np.array(
        [
            [-np.inf] * V,  # 整行屏蔽且被忽略
            [1.0, -np.inf, 2.0, -np.inf, 0.5, -np.inf],  # 部分屏蔽
            [-np.inf] * V,  # 整行屏蔽但未被忽略
            [0.0, 1.0, -np.inf, 3.0, 2.0, 1.0],  # 目标恰好被屏蔽
        ],
        dtype=dtype,
    )
    targets = np.array([-100, 2, 1, 2])
    with backend_scope(backend):
        loss, lse = K.cross_entropy_fwd(logits, targets)
        d = K.cross_entropy_bwd(logits, targets, lse, 0.25)
        y = K.softmax_fwd(logits)
        ly = K.log_softmax_fwd(logits)
        dly = K.log_softmax_bwd(np.ones_like(ly), ly)
        f_loss, f_lse, f_d = K.cross_entropy_fwd_bwd(logits, targets, 0.25)
    for a in (loss, d, y, ly, dly, f_loss, f_d):
        assert not np.isnan(a).any()
    np.testing.assert_array_equal(f_loss[[0, 2, 3]], loss[[0, 2, 3]])  # 0、+inf、+inf
    np.testing.assert_array_equal(f_lse[[0, 2]], lse[[0, 2]])
    np.testing.assert_array_equal(f_d[[0, 2]], d[[0, 2]])  # 被忽略的行全 0；整行屏蔽时为 −onehot·0.25
    np.testing.assert_allclose(f_d, d, rtol=1e-6, atol=1e-7)
    assert loss[0] == 0 and np.all(d[0] == 0)
    assert lse[0] == -np.inf and lse[2] == -np.inf
    assert loss[2] == np.inf and loss[3] == np.inf
    np.testing.assert_array_equal(d[2], np.where(np.arange(V) == 1, -0.25, 0.0).astype(dtype))
    np.testing.assert_array_equal(y[0], np.zeros(V, dtype))
    assert np.all(ly[0] == -np.inf)
    p = np.exp(np.array([1.0, 2.0, 0.5]) - np.log(np.exp([1.0, 2.0, 0.5]).sum()))
    np.testing.assert_allclose(y[1, [0, 2, 4]], p, rtol=1e-6)
    np.testing.assert_allclose(loss[1], -np.log(p[1]), rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_nan_logits_propagate(backend) -> None:
    """NaN（或 +inf）的 logits 应得到 NaN 的 loss，让训练发散可见，而不是被悄悄吞掉。"""
    logits = np.zeros((3, 8), np.float32)
    logits[0, 5] = np.nan
    logits[1, 2] = np.inf
    with backend_scope(backend):
        loss, lse = K.cross_entropy_fwd(logits, np.array([1, 1, 1]))
    assert np.isnan(loss[0]) and np.isnan(loss[1]) and np.isfinite(loss[2])


def test_cross_entropy_bad_target_raises_chinese_index_error() -> None:
    logits = np.zeros((3, 5), np.float32)
    for bad in (5, -1, 17):
        with pytest.raises(IndexError, match=rf"目标类别 {bad} 超出范围 \[0, 5\)"):
            K.cross_entropy_fwd(logits, np.array([0, bad, -100]))
    with pytest.raises(IndexError, match="V=5"):
        K.cross_entropy_bwd(logits, np.array([0, 5, 1]), np.zeros(3, np.float32), 1.0)
    K.cross_entropy_fwd(logits, np.array([0, 7, 4]), ignore_index=7)  # 等于 ignore_index 的越界值可以
    with pytest.raises(TypeError, match="整数"):
        K.cross_entropy_fwd(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="targets 的形状"):
        K.cross_entropy_fwd(logits, np.array([0, 1]))


# ---------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (1, 1), (7,), (4, 33), (3, 5, 129), (2048, 3)])
@pytest.mark.parametrize("layout", ["c", "strided"])
def test_gelu_kernel_matches_reference(dtype, shape, layout) -> None:
    rng = rng_for("gelu", dtype, shape, layout)
    x = make(rng, shape, dtype, layout, scale=3.0)
    g = make(rng, shape, dtype, layout)
    with backend_scope("numba"):
        y, t = K.gelu_fwd(x)
        dx = K.gelu_bwd(g, x, t)
    y_r, t_r = K.gelu_fwd_numpy(x)
    close(t, t_r, dtype, k=4)
    close(y, y_r, dtype, k=4)
    close(dx, K.gelu_bwd_numpy(g, x, t_r), dtype, k=4)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_reference_matches_torch(dtype) -> None:
    torch = torch_or_skip()
    rng = rng_for("gelu-torch", dtype)
    x = np.concatenate([rng.standard_normal(500) * 3, [-30.0, -8.0, 0.0, 8.0, 30.0]]).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.gelu(xt, approximate="tanh")
    yt.backward(torch.from_numpy(g))
    y, t = K.gelu_fwd_numpy(x)
    close(y, yt.detach().numpy(), dtype, k=10)
    close(K.gelu_bwd_numpy(g, x, t), xt.grad.numpy(), dtype, k=10)


# ---------------------------------------------------------------------------
# 嵌入反向
# ---------------------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("V", "N", "C"), [(1, 1, 1), (5, 40, 9), (3, 7, 1), (100, 517, 130)])
def test_embedding_kernel_matches_reference_bitwise(dtype, V, N, C) -> None:
    rng = rng_for("emb", dtype, V, N, C)
    idx = rng.integers(0, V, N)
    idx[: min(N, 5)] = 0  # 必有重复下标
    g = make(rng, (N, C), dtype, "strided" if C > 1 else "c")
    with backend_scope("numba"):
        dW = K.embedding_bwd(V, idx, g)
    dW_r = K.embedding_bwd_numpy(V, idx, g)
    assert dW.shape == (V, C) and dW.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dW, dW_r)  # 每个元素都按词元顺序累加，逐位相同


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_embedding_2d_indices_and_errors(backend) -> None:
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 6, (2, 5))
    g = rng.standard_normal((2, 5, 4))
    with backend_scope(backend):
        dW = K.embedding_bwd(6, idx, g)
        want = K.embedding_bwd_numpy(6, idx.reshape(-1), g.reshape(-1, 4))
        np.testing.assert_allclose(dW, want, rtol=1e-15)
        with pytest.raises(IndexError, match=r"下标 6 超出范围 \[0, 6\)"):
            K.embedding_bwd(6, np.array([0, 6]), np.ones((2, 4)))
        with pytest.raises(IndexError, match="下标 -1"):
            K.embedding_bwd(6, np.array([-1, 0]), np.ones((2, 4)))
        with pytest.raises(ValueError, match="idx.shape"):
            K.embedding_bwd(6, np.array([0, 1]), np.ones((3, 4)))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_reference_matches_torch(dtype) -> None:
    torch = torch_or_skip()
    rng = rng_for("emb-torch", dtype)
    V, C = 12, 7
    idx = rng.integers(0, V, (4, 9))
    g = rng.standard_normal((4, 9, C)).astype(dtype)
    W = torch.zeros((V, C), dtype=torch.float32 if dtype == np.float32 else torch.float64, requires_grad=True)
    torch.nn.functional.embedding(torch.from_numpy(idx), W).backward(torch.from_numpy(g))
    close(K.embedding_bwd_numpy(V, idx, g), W.grad.numpy(), dtype, k=10)


# ---------------------------------------------------------------------------
# Adam / AdamW
# ---------------------------------------------------------------------------

ADAM_CASES = [
    dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1),
    dict(lr=4e-4, beta1=0.9, beta2=0.95, eps=1e-6, weight_decay=0.0),
    dict(lr=3e-3, beta1=0.3, beta2=0.8, eps=1e-8, weight_decay=0.5),  # 1−β1 ≥ 0.5：lerp 的另一分支
]


def run_ours(fn, p0: np.ndarray, grads: list[np.ndarray], hp: dict, layout: str = "c") -> np.ndarray:
    if layout == "c":
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    else:  # 不连续的原地数组（转置视图）
        p, m, v = (np.ascontiguousarray(a.T).T for a in (p0, np.zeros_like(p0), np.zeros_like(p0)))
        assert not p.flags.c_contiguous
    for step, gr in enumerate(grads, start=1):
        fn(p, gr, m, v, step=step, **hp)
    return np.stack([p, m, v])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hp", ADAM_CASES)
@pytest.mark.parametrize("layout", ["c", "transposed"])
@pytest.mark.parametrize("which", ["adamw", "adam"])
def test_adam_kernel_matches_reference(dtype, hp, layout, which) -> None:
    rng = rng_for("adam", dtype, str(hp), layout, which)
    p0 = rng.standard_normal((13, 7)).astype(dtype)
    grads = [rng.standard_normal(p0.shape).astype(dtype) for _ in range(10)]
    fn, ref = (K.adamw_step, K.adamw_step_numpy) if which == "adamw" else (K.adam_step, K.adam_step_numpy)
    with backend_scope("numba"):
        got = run_ours(fn, p0, grads, hp, layout)
    want = run_ours(ref, p0, grads, hp)
    np.testing.assert_array_equal(got, want)  # 相同运算顺序、无 FMA：逐位相同


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hp", ADAM_CASES)
@pytest.mark.parametrize("which", ["adamw", "adam"])
@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_adam_matches_torch_optim(dtype, hp, which, backend) -> None:
    torch = torch_or_skip()
    rng = rng_for("adam-torch", dtype, str(hp), which)
    p0 = rng.standard_normal((31, 5)).astype(dtype)
    grads = [rng.standard_normal(p0.shape).astype(dtype) for _ in range(10)]
    fn = K.adamw_step if which == "adamw" else K.adam_step
    with backend_scope(backend):
        ours = run_ours(fn, p0, grads, hp)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    cls = torch.optim.AdamW if which == "adamw" else torch.optim.Adam
    opt = cls([tp], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
              weight_decay=hp["weight_decay"], foreach=False)  # fmt: skip
    for gr in grads:
        tp.grad = torch.from_numpy(gr.copy())
        opt.step()
    st_ = opt.state[tp]
    want = np.stack([tp.detach().numpy(), st_["exp_avg"].numpy(), st_["exp_avg_sq"].numpy()])
    if dtype == np.float64:
        np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-14)
    else:
        np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6)


def test_adam_bad_input() -> None:
    p = np.zeros(3)
    with pytest.raises(ValueError, match="形状"):
        K.adamw_step(p, np.zeros(4), np.zeros(3), np.zeros(3), lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8,
                     weight_decay=0.0, step=1)  # fmt: skip
    with pytest.raises(TypeError, match="dtype"):
        K.adamw_step(p, np.zeros(3, np.float32), np.zeros(3), np.zeros(3), lr=1e-3, beta1=0.9, beta2=0.99,
                     eps=1e-8, weight_decay=0.0, step=1)  # fmt: skip
    with pytest.raises(ValueError, match="step"):
        K.adamw_step(p, np.zeros(3), np.zeros(3), np.zeros(3), lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8,
                     weight_decay=0.0, step=0)  # fmt: skip


# ---------------------------------------------------------------------------
# 注意力
# ---------------------------------------------------------------------------


def qkv(rng: np.random.Generator, lead: tuple[int, ...], T: int, Tk: int, hs: int, dtype: type, strided: bool):  # noqa: E501
    """q (..., T, hs)，k/v (..., Tk, hs)；strided 时模拟 (B, T, nh, hs) → (B, nh, T, hs) 的转置视图。"""

    def one(n: int) -> np.ndarray:
        if strided and len(lead) == 2:
            return rng.standard_normal((lead[0], n, lead[1], hs)).astype(dtype).transpose(0, 2, 1, 3)
        return rng.standard_normal((*lead, n, hs)).astype(dtype)

    return one(T), one(Tk), one(Tk)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("lead", "T", "Tk", "hs"), [((1,), 1, 1, 1), ((2, 3), 17, 17, 8), ((2, 2), 5, 9, 4),
                                                     ((1, 2), 9, 5, 3), ((3,), 64, 64, 16)])  # fmt: skip
@pytest.mark.parametrize("causal", [True, False])
def test_attention_kernel_matches_reference(dtype, lead, T, Tk, hs, causal) -> None:
    rng = rng_for("att", dtype, lead, T, Tk, hs, causal)
    q, k, v = qkv(rng, lead, T, Tk, hs, dtype, strided=True)
    g = rng.standard_normal((*lead, T, hs)).astype(dtype)
    scale = 1.0 / np.sqrt(hs)
    with backend_scope("numba"):
        out, probs = K.attention_fwd(q, k, v, scale, causal)
        dq, dk, dv = K.attention_bwd(g, q, k, v, probs, scale, causal)
    out_r, probs_r = K.attention_fwd_numpy(q, k, v, scale, causal)
    close(out, out_r, dtype, k=4)
    close(probs, probs_r, dtype, k=4)
    for got, want in zip((dq, dk, dv), K.attention_bwd_numpy(g, q, k, v, probs_r, scale)):
        close(got, want, dtype, k=4)
    if causal:
        assert np.all(probs[..., np.triu(np.ones((T, Tk), dtype=bool), k=1)] == 0)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_attention_matches_torch_sdpa(dtype, causal, backend) -> None:
    torch = torch_or_skip()
    rng = rng_for("att-torch", dtype, causal)
    q, k, v = qkv(rng, (2, 3), 13, 13, 8, dtype, strided=True)
    g = rng.standard_normal((2, 3, 13, 8)).astype(dtype)
    scale = 0.3
    with backend_scope(backend):
        out, probs = K.attention_fwd(q, k, v, scale, causal)
        grads = K.attention_bwd(g, q, k, v, probs, scale, causal)
    qt, kt, vt = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (q, k, v))
    ot = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, scale=scale)
    ot.backward(torch.from_numpy(g))
    close(out, ot.detach().numpy(), dtype, k=5)
    for got, t in zip(grads, (qt, kt, vt)):
        close(got, t.grad.numpy(), dtype, k=5)


def test_attention_bad_shapes() -> None:
    q = np.zeros((2, 4, 8))
    with pytest.raises(ValueError, match="hs"):
        K.attention_fwd(q, np.zeros((2, 4, 7)), np.zeros((2, 4, 8)), 1.0)
    with pytest.raises(ValueError, match="前导维"):
        K.attention_fwd(q, np.zeros((3, 4, 8)), np.zeros((3, 4, 8)), 1.0)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("T", "Tk"), [(23, 23), (9, 23), (23, 9), (4, 19), (16, 16)])
@pytest.mark.parametrize("block", [1, 4, 7, 64])
def test_attention_causal_blocks_match_reference(monkeypatch: pytest.MonkeyPatch, dtype, T, Tk, block) -> None:
    """因果分块（只算下三角的块，行块/列块）在各种块大小、T 与 Tk 不等、块跨过序列末尾时都等于参考实现。"""
    from tinytensor.kernels import attention

    monkeypatch.setattr(attention, "_BLOCK", block)
    rng = rng_for("att-blocks", dtype, T, Tk, block)
    q, k, v = qkv(rng, (3, 2), T, Tk, 5, dtype, strided=True)
    g = rng.standard_normal((3, 2, T, 5)).astype(dtype)
    with backend_scope("numba"):
        out, probs = K.attention_fwd(q, k, v, 0.4, True)
        grads = K.attention_bwd(g, q, k, v, probs, 0.4, True)
    out_r, probs_r = K.attention_fwd_numpy(q, k, v, 0.4, True)
    close(out, out_r, dtype, k=4)
    assert np.array_equal(probs == 0, probs_r == 0)  # 被跳过的块确实写成了 0
    for got, want in zip(grads, K.attention_bwd_numpy(g, q, k, v, probs_r, 0.4)):
        close(got, want, dtype, k=4)


@needs_numba
@pytest.mark.parametrize("nt", [2, 3, 5])
def test_attention_threaded_split_is_bitwise_identical(claimed_blas, monkeypatch: pytest.MonkeyPatch, nt: int) -> None:
    """按批维切给 nt 个线程（BLAS 单线程）与在调用者线程里一次做完，结果逐位相同；确实走了线程切分。"""
    import tinytensor.kernels as kpkg
    from tinytensor.kernels import attention, threads

    if not threads.available():
        pytest.skip("threadpoolctl 找不到可限制的 BLAS")
    rng = rng_for("att-threads", nt)
    q, k, v = qkv(rng, (4, 3), 70, 70, 16, np.float32, strided=True)
    g = rng.standard_normal((4, 3, 70, 16)).astype(np.float32)
    with backend_scope("numba"):
        monkeypatch.setattr(attention, "_PAR_MIN_FWD", sys.maxsize)
        monkeypatch.setattr(attention, "_PAR_MIN_BWD", sys.maxsize)
        one = K.attention_fwd(q, k, v, 0.25, True)
        one_g = K.attention_bwd(g, q, k, v, one[1], 0.25, True)
        monkeypatch.setattr(attention, "_PAR_MIN_FWD", 0)
        monkeypatch.setattr(attention, "_PAR_MIN_BWD", 0)
        monkeypatch.setattr(kpkg.backend, "get_num_threads", lambda: nt)
        calls = []
        run_parts = threads.run_parts
        monkeypatch.setattr(threads, "run_parts", lambda fn, n, k: calls.append((n, k)) or run_parts(fn, n, k))
        split = K.attention_fwd(q, k, v, 0.25, True)
        split_g = K.attention_bwd(g, q, k, v, split[1], 0.25, True)
    assert calls == [(4, nt), (4, nt)]
    for a, b in zip((*one, *one_g), (*split, *split_g)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("path", [pytest.param(p, marks=needs_numba) for p in ("blocks", "threads")] + ["numpy"])
def test_attention_dropout_mask(monkeypatch: pytest.MonkeyPatch, dtype, causal, path) -> None:
    """dmask（0 或 1/(1-p)，作用在 P 上）：内核（因果分块、切给线程）与参考一致，参考与 torch 自动求导一致。"""
    from tinytensor.kernels import attention

    rng = rng_for("att-dropout", dtype, causal, path)
    q, k, v = qkv(rng, (3, 2), 19, 19, 6, dtype, strided=True)
    g = rng.standard_normal((3, 2, 19, 6)).astype(dtype)
    dm = ((rng.random((3, 2, 19, 19)) >= 0.3) / 0.7).astype(dtype)
    if path == "blocks":
        monkeypatch.setattr(attention, "_BLOCK", 5)
    if path == "threads":
        for name in ("_PAR_MIN_FWD", "_PAR_MIN_BWD"):
            monkeypatch.setattr(attention, name, 0)
    with backend_scope("numpy" if path == "numpy" else "numba"):
        out, probs = K.attention_fwd(q, k, v, 0.4, causal, dmask=dm)
        grads = K.attention_bwd(g, q, k, v, probs, 0.4, causal, dmask=dm)
    out_r, probs_r = K.attention_fwd_numpy(q, k, v, 0.4, causal, dm)
    close(out, out_r, dtype, k=4)
    close(probs, probs_r, dtype, k=4)  # probs 是 dropout 之前的 P
    for got, want in zip(grads, K.attention_bwd_numpy(g, q, k, v, probs_r, 0.4, dm)):
        close(got, want, dtype, k=4)
    torch = pytest.importorskip("torch")
    qt, kt, vt = (torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True) for a in (q, k, v))
    st = qt @ kt.transpose(-1, -2) * 0.4
    if causal:
        st = st.masked_fill(torch.ones(19, 19, dtype=torch.bool).triu(1), float("-inf"))
    ot = (torch.softmax(st, -1) * torch.tensor(dm, dtype=torch.float64)) @ vt
    ot.backward(torch.tensor(g, dtype=torch.float64))
    close(out_r, ot.detach().numpy().astype(dtype), dtype, k=4)
    for got, t in zip(grads, (qt, kt, vt)):
        close(got, t.grad.numpy().astype(dtype), dtype, k=4)
    with pytest.raises(ValueError, match="dmask"):
        K.attention_fwd(q, k, v, 0.4, causal, dmask=dm[:, :1])


@needs_numba
def test_attention_batch_one_splits_over_heads(claimed_blas, monkeypatch: pytest.MonkeyPatch) -> None:
    """批大小 1（如不用缓存的生成）时去掉这一维、改按头切给线程，结果与不切分逐位相同。"""
    import tinytensor.kernels as kpkg
    from tinytensor.kernels import attention, threads

    if not threads.available():
        pytest.skip("threadpoolctl 找不到可设置的 BLAS")
    rng = rng_for("att-b1")
    q, k, v = qkv(rng, (1, 5), 40, 40, 8, np.float32, strided=True)
    g = rng.standard_normal((1, 5, 40, 8)).astype(np.float32)
    with backend_scope("numba"):
        want = K.attention_fwd(q, k, v, 0.3, True)
        want_g = K.attention_bwd(g, q, k, v, want[1], 0.3, True)
        for name in ("_PAR_MIN_FWD", "_PAR_MIN_BWD"):
            monkeypatch.setattr(attention, name, 0)
        monkeypatch.setattr(kpkg.backend, "get_num_threads", lambda: 2)
        calls = []
        run_parts = threads.run_parts
        monkeypatch.setattr(threads, "run_parts", lambda fn, n, k: calls.append((n, k)) or run_parts(fn, n, k))
        got = K.attention_fwd(q, k, v, 0.3, True)
        got_g = K.attention_bwd(g, q, k, v, got[1], 0.3, True)
    assert calls == [(5, 2), (5, 2)]  # 按 5 个头切
    assert got[0].shape == (1, 5, 40, 8) and got[1].shape == (1, 5, 40, 40)
    for a, b in zip((*want, *want_g), (*got, *got_g)):
        assert np.array_equal(a, b)


@needs_numba
def test_attention_writes_into_out_views() -> None:
    """out= 可以是不连续的视图（模型里直接写成 (B, T, nh·hs) 与拼接的 dqkv 布局），结果与不给 out 时相同。"""
    rng = rng_for("att-out")
    q, k, v = qkv(rng, (2, 3), 11, 11, 4, np.float64, strided=True)
    g = rng.standard_normal((2, 3, 11, 4))
    for backend in ("numba", "numpy"):
        with backend_scope(backend):
            want, probs = K.attention_fwd(q, k, v, 0.5, True)
            y = np.full((2, 11, 3, 4), np.nan)
            got, _ = K.attention_fwd(q, k, v, 0.5, True, out=y.transpose(0, 2, 1, 3))
            assert np.shares_memory(got, y) and np.array_equal(got, want)
            grads = K.attention_bwd(g, q, k, v, probs, 0.5, True)
            buf = np.full((2, 11, 3, 3, 4), np.nan)
            outs = tuple(buf[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
            got_g = K.attention_bwd(g, q, k, v, probs, 0.5, True, out=outs)
            for a, b, o in zip(got_g, grads, outs):
                assert a is o and np.array_equal(a, b)
    with pytest.raises(ValueError, match="out"):
        K.attention_fwd(q, k, v, 0.5, True, out=np.zeros((2, 3, 11, 5)))
    with pytest.raises(ValueError, match="dk"):
        K.attention_bwd(g, q, k, v, probs, 0.5, True, out=(np.zeros_like(g), np.zeros((1,)), np.zeros_like(g)))


# ---------------------------------------------------------------------------
# Hypothesis 形状模糊测试（内核 vs 参考）
# ---------------------------------------------------------------------------


@needs_numba
@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 40),
    C=st.integers(1, 70),
    dtype=st.sampled_from(DTYPES),
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
)
def test_fuzz_kernels_match_reference(N, C, dtype, layout, seed) -> None:
    rng = np.random.default_rng(seed)
    x = make(rng, (N, C), dtype, layout, scale=3.0)
    g = make(rng, (N, C), dtype, layout)
    w = rng.standard_normal(C).astype(dtype)
    targets = rng.integers(-1, C, N)
    rows = np.maximum(targets, 0)  # 嵌入下标
    with backend_scope("numba"):
        y, mean, rstd = K.layer_norm_fwd(x, w, w, 1e-5)
        dx, dw, _ = K.layer_norm_bwd(g, x, w, mean, rstd)
        loss, lse = K.cross_entropy_fwd(x, targets, -1)
        dl = K.cross_entropy_bwd(x, targets, lse, 0.3, -1)
        gy, gt = K.gelu_fwd(x)
        dW = K.embedding_bwd(C, rows, g)
    y_r, mean_r, rstd_r = K.layer_norm_fwd_numpy(x, w, w, 1e-5)
    close(y, y_r, dtype, k=4)
    dx_r, dw_r, _ = K.layer_norm_bwd_numpy(g, x, w, mean_r, rstd_r)
    close(dx, dx_r, dtype, k=4)
    close(dw, dw_r, dtype, k=4)
    loss_r, lse_r = K.cross_entropy_fwd_numpy(x, targets, -1)
    close(loss, loss_r, dtype, k=4)
    close(dl, K.cross_entropy_bwd_numpy(x, targets, lse_r, np.full(N, 0.3, dtype), -1), dtype, k=4)
    close(gy, K.gelu_fwd_numpy(x)[0], dtype, k=4)
    np.testing.assert_array_equal(dW, K.embedding_bwd_numpy(C, rows, g))


# ---------------------------------------------------------------------------
# 串行路径与并行路径逐位相同；NUMBA_NUM_THREADS=1 与默认线程数逐位相同
# ---------------------------------------------------------------------------


def all_kernel_outputs() -> dict[str, np.ndarray]:
    """把每个公开内核在两种 dtype 下各跑一遍，返回全部输出。

    行数、列数取奇数，使并行路径的分段（按线程数）与 layer_norm 反向的 32 行块都不整齐。
    本函数的源码也被下面的子进程脚本原样使用，所以只用函数内导入的名字。
    """
    import numpy as np

    import tinytensor.kernels as K

    out = {}
    for dt in (np.float32, np.float64):
        rng = np.random.default_rng(0)
        N, C, V = 301, 199, 701
        x = rng.standard_normal((N, C)).astype(dt)
        g = rng.standard_normal((N, C)).astype(dt)
        w = rng.standard_normal(C).astype(dt)
        y, m, r = K.layer_norm_fwd(x, w, w, 1e-5)
        dx, dw, db = K.layer_norm_bwd(g, x, w, m, r)
        y0, m0, r0 = K.layer_norm_fwd(x[:, ::2], None, None, 1e-5)
        dx0 = K.layer_norm_bwd(g[:, ::2], x[:, ::2], None, m0, r0)[0]
        logits = (rng.standard_normal((N, V)) * 3).astype(dt)
        t = rng.integers(0, V, N)
        t[::7] = -100
        loss, lse = K.cross_entropy_fwd(logits, t)
        dl = K.cross_entropy_bwd(logits, t, lse, 1.0 / N)
        fl, flse, fdl = K.cross_entropy_fwd_bwd(logits, t, 1.0 / N)
        sm = K.softmax_fwd(logits)
        lsm = K.log_softmax_fwd(logits)
        dsm = K.softmax_bwd(logits, sm)
        dlsm = K.log_softmax_bwd(logits, lsm)
        gy, gt = K.gelu_fwd(x)
        gdx = K.gelu_bwd(g, x, gt)
        idx = rng.integers(0, 50, N)
        dW = K.embedding_bwd(50, idx, g)
        qa = (rng.standard_normal((2, 67, 3, 16))).astype(dt).transpose(0, 2, 1, 3)
        ao, ap = K.attention_fwd(qa, qa, qa, 0.25, True)
        adq, adk, adv = K.attention_bwd(qa, qa, qa, qa, ap, 0.25, True)
        qn = qa[:, :, :5]  # 非因果、T ≠ Tk
        no, npr = K.attention_fwd(qn, qa, qa, 0.25, False)
        ndq, ndk, ndv = K.attention_bwd(qn, qn, qa, qa, npr, 0.25, False)
        p, mm, vv = x.copy(), np.zeros_like(x), np.zeros_like(x)
        pa, ma, va = x.copy(), np.zeros_like(x), np.zeros_like(x)
        for s in range(1, 4):
            K.adamw_step(p, g, mm, vv, lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, step=s)
            K.adam_step(pa, g, ma, va, lr=1e-3, beta1=0.3, beta2=0.8, eps=1e-8, weight_decay=0.5, step=s)
        # 同一进程内重复调用也必须逐位相同
        assert np.array_equal(K.layer_norm_bwd(g, x, w, m, r)[1], dw)
        assert np.array_equal(K.cross_entropy_fwd(logits, t)[0], loss)
        for k, v in dict(y=y, m=m, r=r, dx=dx, dw=dw, db=db, y0=y0, m0=m0, r0=r0, dx0=dx0, loss=loss, lse=lse,
                         dl=dl, fl=fl, flse=flse, fdl=fdl, sm=sm, lsm=lsm, dsm=dsm, dlsm=dlsm, gy=gy, gt=gt, gdx=gdx,
                         dW=dW, p=p, mm=mm,
                         vv=vv, pa=pa, ma=ma, va=va, ao=ao, ap=ap, adq=adq, adk=adk, adv=adv, no=no, npr=npr,
                         ndq=ndq, ndk=ndk, ndv=ndv).items():  # fmt: skip
            out[f"{k}_{np.dtype(dt).name}"] = v
    return out


def force_path(path: str, setattr_=setattr) -> list[str]:
    """把各内核模块的并行阈值（``_PAR_MIN*``）设成 0（总走并行）或极大（总走串行），返回改过的名字。"""
    from tinytensor.kernels import adamw, attention, cross_entropy, gelu, softmax
    from tinytensor.kernels import layer_norm as ln

    value = {"serial": sys.maxsize, "parallel": 0}[path]
    names = []
    for mod in (adamw, attention, cross_entropy, gelu, ln, softmax):
        for name in dir(mod):
            if name.startswith("_PAR_MIN"):
                setattr_(mod, name, value)
                names.append(f"{mod.__name__}.{name}")
    return names


def assert_same_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), f"{k}：{what}"


@needs_numba
@pytest.mark.parametrize("nt", [None, 1, 3, 7])
def test_serial_and_parallel_paths_bitwise_identical(monkeypatch: pytest.MonkeyPatch, nt: int | None) -> None:
    """强制走串行内核与强制走并行内核（并行时分成 nt 段；None 为 numba 的线程数）结果逐位相同。"""
    import tinytensor.kernels as kpkg

    with backend_scope("numba"):
        names = force_path("serial", monkeypatch.setattr)
        assert len(names) == 12, names  # softmax 与 log_softmax 共用阈值，其余每个并行内核一个
        serial = all_kernel_outputs()
        force_path("parallel", monkeypatch.setattr)
        if nt is not None:  # run_split 把 get_num_threads() 作为分段数传给并行驱动；段数多于线程数也可以
            monkeypatch.setattr(kpkg.backend, "get_num_threads", lambda: nt)
        parallel = all_kernel_outputs()
    assert_same_outputs(serial, parallel, f"串行与并行（{nt} 段）不同")


DETERMINISM_SCRIPT = (
    "import sys\nimport numpy as np\n"
    + textwrap.dedent(inspect.getsource(all_kernel_outputs))
    + textwrap.dedent(inspect.getsource(force_path))
    + """
import tinytensor.kernels as K
K.set_backend("numba")
force_path("parallel")  # 两次运行都走并行内核，比较的才是线程数的影响
out = all_kernel_outputs()
import numba
out["_threads"] = np.array(numba.get_num_threads())
np.savez(sys.argv[1], **out)
"""
)


@needs_numba
@pytest.mark.slow
def test_num_threads_one_is_bitwise_identical(tmp_path: Path) -> None:
    results = {}
    runs = (("one", {"NUMBA_NUM_THREADS": "1"}, ()), ("default", {}, ("NUMBA_NUM_THREADS",)))
    for name, env, unset in runs:
        path = tmp_path / f"{name}.npz"
        env = dict(env, TINYTENSOR_BACKEND="numba")
        r = subprocess.run(
            [sys.executable, "-c", DETERMINISM_SCRIPT, str(path)],
            capture_output=True, text=True, cwd=ROOT,
            env={**{k: v for k, v in os.environ.items() if k not in unset}, **env,
                 "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        results[name] = dict(np.load(path))
    one, default = results["one"], results["default"]
    assert int(one.pop("_threads")) == 1
    n_default = int(default.pop("_threads"))
    assert one.keys() == default.keys()
    for k in one:
        assert np.array_equal(one[k], default[k], equal_nan=True), f"{k} 在 1 线程与 {n_default} 线程下不同"
