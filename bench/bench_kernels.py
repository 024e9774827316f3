"""tinytensor.kernels 微基准：numba 内核 vs NumPy 参考实现 vs torch（CPU），打印中位数与比值。

用法::

    python bench/bench_kernels.py            # 默认：GPT 常见形状，float32
    python bench/bench_kernels.py --quick    # 少量重复，几秒钟跑完
    python bench/bench_kernels.py --dtype float64 --repeat 30
    python bench/bench_kernels.py --launch       # 生成时的小输入：公开函数每次调用的微秒数
    python bench/bench_kernels.py --crossover    # 串行内核 vs 并行内核随工作量的耗时（用来定各内核的阈值）

形状（可用参数改）：N = 2048 行（B·T），C = 384 / 768，V = 6000，GELU 作用在 (N, 4C) 上，
softmax 作用在 (B·nh·T, T) = (8·6·256, 256) 上，因果注意力为 B 8、nh 6、T 256、hs 64（small 配置），
AdamW 作用在 1300 万个参数（small 配置的量级）上。
torch 一列：layer_norm/gelu/softmax/embedding 的反向直接调用 aten 的反向算子，
交叉熵与注意力的反向用 autograd（retain_graph），注意力前向为 F.scaled_dot_product_attention。
比值 = 对方耗时 / numba 耗时（> 1 表示 numba 更快）。机器噪声大：各实现交替运行、取中位数，
同一次运行里的比值才可比。这里只打印，不做任何断言。
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# --threads 要在导入 numpy/numba/torch 之前设好环境变量（BLAS 与 numba 的线程数在导入时确定）
if "--threads" in sys.argv[:-1]:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = _n

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinytensor as tt  # noqa: E402
import tinytensor.kernels as K  # noqa: E402
from tinytensor.kernels import backend_scope  # noqa: E402
from tinytensor.kernels.backend import njit, numba_available, prange  # noqa: E402

tt.tuning.enable()  # 与训练时相同的设置：BLAS 单线程由我们切分、workqueue 线程层（见 tinytensor/tuning.py）
NUMBA_AVAILABLE = numba_available()
if NUMBA_AVAILABLE:
    import numba

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # 没有 torch 时只比较 numba 与 NumPy
    torch = None
    F = None


# ---------------------------------------------------------------------------
# 计时
# ---------------------------------------------------------------------------


def time_all(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """各实现先各跑一次（预热/编译），再交替重复运行，返回每个实现的中位数耗时（毫秒）。"""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def numba_call(f: Callable[..., object], *args: object, **kw: object) -> Callable[[], object]:
    def run() -> object:
        with backend_scope("numba"):
            return f(*args, **kw)

    return run


def numpy_call(f: Callable[..., object], *args: object, **kw: object) -> Callable[[], object]:
    return lambda: f(*args, **kw)


# ---------------------------------------------------------------------------
# 对照：GELU 的“三段式”（numba 算 u → np.tanh 原地 → numba 合成），用来说明为什么选融合版
# ---------------------------------------------------------------------------


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_inner(u, x):
    c = x.dtype.type(0.7978845608028654)
    k = x.dtype.type(0.044715)
    for i in prange(x.shape[0]):
        xi = x[i]
        u[i] = c * (xi + k * (xi * xi * xi))


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_combine(y, x, t):
    half = x.dtype.type(0.5)
    one = x.dtype.type(1.0)
    for i in prange(x.shape[0]):
        y[i] = half * x[i] * (one + t[i])


def gelu_fwd_three_stage(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xf = x.reshape(-1)
    t = np.empty_like(xf)
    _gelu_inner(t, xf)
    np.tanh(t, out=t)
    y = np.empty_like(xf)
    _gelu_combine(y, xf, t)
    return y.reshape(x.shape), t.reshape(x.shape)


# ---------------------------------------------------------------------------
# 各个内核的用例
# ---------------------------------------------------------------------------


def cases(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Callable[[], object]]]]:
    dt = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    N, V = args.rows, args.vocab
    out: list[tuple[str, str, dict[str, Callable[[], object]]]] = []
    aten = torch.ops.aten if torch is not None else None

    def T(a: np.ndarray):  # noqa: ANN202 - numpy → torch（共享内存）
        return torch.from_numpy(a)

    for C in args.channels:
        x = rng.standard_normal((N, C)).astype(dt)
        g = rng.standard_normal((N, C)).astype(dt)
        w = rng.standard_normal(C).astype(dt)
        b = rng.standard_normal(C).astype(dt)
        y, mean, rstd = K.layer_norm_fwd_numpy(x, w, b)
        fns = {
            "numba": numba_call(K.layer_norm_fwd, x, w, b),
            "numpy": numpy_call(K.layer_norm_fwd_numpy, x, w, b),
        }
        if torch is not None:
            fns["torch"] = lambda x=x, w=w, b=b, C=C: F.layer_norm(T(x), (C,), T(w), T(b), 1e-5)
        out.append(("layer_norm fwd", f"({N}, {C})", fns))
        fns = {
            "numba": numba_call(K.layer_norm_bwd, g, x, w, mean, rstd),
            "numpy": numpy_call(K.layer_norm_bwd_numpy, g, x, w, mean, rstd),
        }
        if torch is not None:
            tm, tr = T(mean).reshape(N, 1), T(rstd).reshape(N, 1)
            fns["torch"] = lambda g=g, x=x, w=w, b=b, C=C, tm=tm, tr=tr: aten.native_layer_norm_backward(
                T(g), T(x), [C], tm, tr, T(w), T(b), [True, True, True]
            )
        out.append(("layer_norm bwd", f"({N}, {C})", fns))

    logits = (rng.standard_normal((N, V)) * 2).astype(dt)
    targets = rng.integers(0, V, N)
    targets[::10] = -100
    n_valid = int((targets != -100).sum())
    loss, lse = K.cross_entropy_fwd_numpy(logits, targets)
    scale = np.full(N, 1.0 / n_valid, dt)
    fns = {
        "numba": numba_call(K.cross_entropy_fwd, logits, targets),
        "numpy": numpy_call(K.cross_entropy_fwd_numpy, logits, targets),
    }
    if torch is not None:
        tt = T(targets)
        fns["torch"] = lambda: F.cross_entropy(T(logits), tt, reduction="none")
    out.append(("cross_entropy fwd", f"({N}, {V})", fns))
    fns = {
        "numba": numba_call(K.cross_entropy_bwd, logits, targets, lse, scale),
        "numpy": numpy_call(K.cross_entropy_bwd_numpy, logits, targets, lse, scale),
    }
    if torch is not None:
        lt = T(logits).clone().requires_grad_(True)
        tl = F.cross_entropy(lt, T(targets))

        def torch_ce_bwd() -> None:
            lt.grad = None
            tl.backward(retain_graph=True)

        fns["torch"] = torch_ce_bwd
    out.append(("cross_entropy bwd", f"({N}, {V})", fns))

    S = args.softmax_rows
    att = (rng.standard_normal((S, args.seq)) * 2).astype(dt)
    fns = {"numba": numba_call(K.softmax_fwd, att), "numpy": numpy_call(K.softmax_fwd_numpy, att)}
    if torch is not None:
        fns["torch"] = lambda: torch.softmax(T(att), -1)
    out.append(("softmax fwd", f"({S}, {args.seq})", fns))
    sy = K.softmax_fwd_numpy(att)
    sg = rng.standard_normal(att.shape).astype(dt)
    fns = {"numba": numba_call(K.softmax_bwd, sg, sy), "numpy": numpy_call(K.softmax_bwd_numpy, sg, sy)}
    if torch is not None:
        fns["torch"] = lambda: torch.ops.aten._softmax_backward_data(T(sg), T(sy), -1, T(sy).dtype)
    out.append(("softmax bwd", f"({S}, {args.seq})", fns))

    H = 4 * args.channels[0]
    xh = (rng.standard_normal((N, H)) * 2).astype(dt)
    gh = rng.standard_normal((N, H)).astype(dt)
    _, th = K.gelu_fwd_numpy(xh)
    fns = {
        "numba": numba_call(K.gelu_fwd, xh),
        "numpy": numpy_call(K.gelu_fwd_numpy, xh),
        "numba+np.tanh": numpy_call(gelu_fwd_three_stage, xh),
    }
    if torch is not None:
        fns["torch"] = lambda: F.gelu(T(xh), approximate="tanh")
    out.append(("gelu fwd", f"({N}, {H})", fns))
    fns = {"numba": numba_call(K.gelu_bwd, gh, xh, th), "numpy": numpy_call(K.gelu_bwd_numpy, gh, xh, th)}
    if torch is not None:
        fns["torch"] = lambda: torch.ops.aten.gelu_backward(T(gh), T(xh), approximate="tanh")
    out.append(("gelu bwd", f"({N}, {H})", fns))

    for C in args.channels:
        idx = rng.integers(0, V, N)
        ge = rng.standard_normal((N, C)).astype(dt)
        fns = {
            "numba": numba_call(K.embedding_bwd, V, idx, ge),
            "numpy": numpy_call(K.embedding_bwd_numpy, V, idx, ge),
        }
        if torch is not None:
            ti = T(idx)
            fns["torch"] = lambda ge=ge, ti=ti: aten.embedding_dense_backward(T(ge), ti, V, -1, False)
        out.append(("embedding bwd", f"V={V}, ({N}, {C})", fns))

    B, nh, Ta, hs = args.attn
    qkv = rng.standard_normal((B, Ta, 3, nh, hs)).astype(dt)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, nh, T, hs) 的转置视图
    ga = rng.standard_normal((B, nh, Ta, hs)).astype(dt)
    sc = 1.0 / np.sqrt(hs)
    _, probs = K.attention_fwd_numpy(q, k, v, sc, True)
    shape = f"B{B} nh{nh} T{Ta} hs{hs}"
    fns = {
        "numba": numba_call(K.attention_fwd, q, k, v, sc, True),
        "numpy": numpy_call(K.attention_fwd_numpy, q, k, v, sc, True),
    }
    if torch is not None:
        fns["torch"] = lambda: F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=True, scale=sc)
    out.append(("attention fwd", shape, fns))
    fns = {
        "numba": numba_call(K.attention_bwd, ga, q, k, v, probs, sc, True),
        "numpy": numpy_call(K.attention_bwd_numpy, ga, q, k, v, probs, sc),
    }
    if torch is not None:
        qt, kt, vt = (T(np.ascontiguousarray(a)).requires_grad_(True) for a in (q, k, v))
        ot = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=sc)
        gt = T(ga)

        def torch_att_bwd() -> None:
            qt.grad = kt.grad = vt.grad = None
            ot.backward(gt, retain_graph=True)

        fns["torch"] = torch_att_bwd
    out.append(("attention bwd", shape, fns))

    P = args.params
    p = rng.standard_normal(P).astype(dt) * 0.02
    gp = rng.standard_normal(P).astype(dt) * 1e-3
    state = {k: (p.copy(), np.zeros_like(p), np.zeros_like(p), [0]) for k in ("numba", "numpy")}
    hp = dict(lr=4e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)

    def ours(kind: str) -> Callable[[], object]:
        pp, m, v, step = state[kind]
        fn = K.adamw_step if kind == "numba" else K.adamw_step_numpy

        def run() -> None:
            step[0] += 1
            with backend_scope(kind):
                fn(pp, gp, m, v, step=step[0], **hp)

        return run

    fns = {"numba": ours("numba"), "numpy": ours("numpy")}
    if torch is not None:
        for name, kw in (("torch", {"foreach": False}), ("torch fused", {"fused": True})):
            tp = torch.tensor(p.copy(), requires_grad=True)
            tp.grad = torch.from_numpy(gp)
            opt = torch.optim.AdamW([tp], lr=4e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw)
            fns[name] = opt.step
    out.append(("adamw step", f"{P:,} 个参数", fns))
    return out


# ---------------------------------------------------------------------------
# 小输入的单次调用耗时（生成时每个词元都要调用几十次）与串行/并行分界
# ---------------------------------------------------------------------------


def per_call_us(fns: dict[str, Callable[[], object]], repeat: int, batch_s: float = 1e-3) -> dict[str, float]:
    """每个函数每批连续调用多次（一批约 batch_s 秒），各实现交替跑 repeat 批，返回每次调用耗时的中位数（微秒）。"""
    for f in fns.values():
        f()
        f()
    t0 = time.perf_counter()
    for f in fns.values():
        f()
    n = max(1, int(batch_s * len(fns) / max(time.perf_counter() - t0, 1e-7)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            times[k].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def launch(args: argparse.Namespace) -> None:
    """生成路径上的小输入（batch 1、每次一个新词元，small 配置 C 384、nh 6、hs 64、缓存 200 个词元）。"""
    dt = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    C = args.channels[0]
    x = rng.standard_normal((1, C)).astype(dt)
    w = rng.standard_normal(C).astype(dt)
    h = rng.standard_normal((1, 4 * C)).astype(dt)
    q = rng.standard_normal((1, 6, 1, 64)).astype(dt)
    k = rng.standard_normal((1, 6, 200, 64)).astype(dt)
    v = rng.standard_normal((1, 6, 200, 64)).astype(dt)
    fns = {
        f"layer_norm_fwd (1, {C})": numpy_call(K.layer_norm_fwd, x, w, w),
        f"gelu_fwd (1, {4 * C})": numpy_call(K.gelu_fwd, h),
        "attention_fwd q 1×6×1×64, kv 1×6×200×64": numpy_call(K.attention_fwd, k[:, :, :1], k, v, 0.125, False),
        "  ↳ 其中两次 np.matmul": lambda: np.matmul(np.matmul(q, k.swapaxes(-1, -2)), v),
        f"adamw_step ({C},)": numpy_call(
            K.adamw_step, w.copy(), w, np.zeros_like(w), np.zeros_like(w),
            lr=1e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, step=1,
        ),
    }  # fmt: skip
    with backend_scope("numba"):
        res = per_call_us(fns, args.repeat * 3)
    print(f"{'公开函数（numba 后端）':<44} {'µs/次':>8}")
    for name, us in res.items():
        print(f"{name:<44} {us:>8.1f}")


def crossover_cases(args: argparse.Namespace):  # noqa: ANN201 - 生成器：(内核, 阈值名, 形状, 工作量, 串行, 并行)
    """每个并行内核在一串尺寸上的 (串行调用, 并行调用)：直接调用私有的串行内核与并行驱动，不含包装层。"""
    from tinytensor.kernels import adamw, attention, gelu, layer_norm
    from tinytensor.kernels import cross_entropy as ce
    from tinytensor.kernels import softmax as sm

    P = functools.partial  # 立即绑定参数（循环变量不会被后来的迭代改掉）
    dt = np.dtype(args.dtype)
    f = dt.type
    rng = np.random.default_rng(0)
    nt = numba.get_num_threads()
    rows = [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096]
    for C in args.channels:
        for N in rows:
            x = rng.standard_normal((N, C)).astype(dt)
            w = rng.standard_normal(C).astype(dt)
            y, m, r = np.empty_like(x), np.empty(N, dt), np.empty(N, dt)
            yield ("layer_norm fwd", "layer_norm._PAR_MIN_FWD", f"({N}, {C})", N * C,
                   P(layer_norm._ln_fwd_rows, y, m, r, x, w, w, 1e-5, 0, N),
                   P(layer_norm._ln_fwd_par, y, m, r, x, w, w, 1e-5, nt))  # fmt: skip
            nb = (N + layer_norm.LN_BWD_ROWS - 1) // layer_norm.LN_BWD_ROWS
            dx, pw, pb = np.empty_like(x), np.zeros((nb, C), dt), np.zeros((nb, C), dt)
            yield ("layer_norm bwd", "layer_norm._PAR_MIN_BWD", f"({N}, {C})", N * C,
                   P(layer_norm._ln_bwd_blocks, dx, pw, pb, x, x, w, m, r, 32, True, 0, nb),
                   P(layer_norm._ln_bwd_par, dx, pw, pb, x, x, w, m, r, 32, True, nt))  # fmt: skip
    for e in range(8, 23, 2):
        n = 1 << e
        x = rng.standard_normal(n).astype(dt)
        y, t, d = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        yield ("gelu fwd", "gelu._PAR_MIN_FWD", f"{n}", n,
               P(gelu._gelu_fwd_range, y, t, x, 0, n), P(gelu._gelu_fwd_par, y, t, x, nt))  # fmt: skip
        yield ("gelu bwd", "gelu._PAR_MIN_BWD", f"{n}", n,
               P(gelu._gelu_bwd_range, d, x, x, t, 0, n), P(gelu._gelu_bwd_par, d, x, x, t, nt))  # fmt: skip
    V = args.vocab
    for N in rows[:-1]:
        x = rng.standard_normal((N, V)).astype(dt)
        tg = rng.integers(0, V, N)
        loss, lse, rs, out = np.empty(N, dt), np.empty(N, dt), np.full(N, 1.0 / N, dt), np.empty_like(x)
        ce._ce_fwd_rows(loss, lse, x, tg, -100, 0, N)
        yield ("cross_entropy fwd", "cross_entropy._PAR_MIN_CE_FWD", f"({N}, {V})", N * V,
               P(ce._ce_fwd_rows, loss, lse, x, tg, -100, 0, N),
               P(ce._ce_fwd_par, loss, lse, x, tg, -100, nt))  # fmt: skip
        yield ("cross_entropy bwd", "cross_entropy._PAR_MIN_CE_BWD", f"({N}, {V})", N * V,
               P(ce._ce_bwd_rows, out, x, tg, lse, rs, -100, 0, N),
               P(ce._ce_bwd_par, out, x, tg, lse, rs, -100, nt))  # fmt: skip
    for Vs in (args.seq, V):
        for N in rows[:-1]:
            x = rng.standard_normal((N, Vs)).astype(dt)
            y, d = np.empty_like(x), np.empty_like(x)
            sm._softmax_fwd_rows(y, x, 0, N)
            shape = f"({N}, {Vs})"
            yield ("softmax fwd", "softmax._PAR_MIN_SM_FWD", shape, N * Vs,
                   P(sm._softmax_fwd_rows, y, x, 0, N), P(sm._softmax_fwd_par, y, x, nt))  # fmt: skip
            yield ("log_softmax fwd", "softmax._PAR_MIN_SM_FWD", shape, N * Vs,
                   P(sm._log_softmax_fwd_rows, d, x, 0, N), P(sm._log_softmax_fwd_par, d, x, nt))  # fmt: skip
            yield ("softmax bwd", "softmax._PAR_MIN_SM_BWD", shape, N * Vs,
                   P(sm._softmax_bwd_rows, d, x, y, 0, N), P(sm._softmax_bwd_par, d, x, y, nt))  # fmt: skip
            yield ("log_softmax bwd", "softmax._PAR_MIN_SM_BWD", shape, N * Vs,
                   P(sm._log_softmax_bwd_rows, d, x, y, 0, N),
                   P(sm._log_softmax_bwd_par, d, x, y, nt))  # fmt: skip
    att = [(6, 1, 200, False), (48, 1, 256, False), (6, 16, 16, True), (6, 32, 32, True), (6, 64, 64, True),
           (12, 64, 64, True), (24, 64, 64, True), (6, 128, 128, True), (48, 64, 64, True), (12, 128, 128, True),
           (6, 256, 256, True), (48, 128, 128, True), (24, 256, 256, True), (48, 256, 256, True)]  # fmt: skip
    for BH, T, Tk, causal in att:
        R = BH * T
        s = rng.standard_normal((R, Tk)).astype(dt)
        p = s.copy()
        attention._smax_fwd_rows(p, f(0.125), T, causal, 0, R)
        shape = f"BH{BH} T{T} Tk{Tk}{' 因果' if causal else ''}"
        yield ("attention fwd (softmax)", "attention._PAR_MIN_FWD", shape, R * Tk,
               P(attention._smax_fwd_rows, s, f(0.125), T, causal, 0, R),
               P(attention._smax_fwd_par, s, f(0.125), T, causal, nt))  # fmt: skip
        yield ("attention bwd (softmax)", "attention._PAR_MIN_BWD", shape, R * Tk,
               P(attention._smax_bwd_rows, s, p, f(0.125), T, causal, 0, R),
               P(attention._smax_bwd_par, s, p, f(0.125), T, causal, nt))  # fmt: skip
    sc = (f(0.99996), f(0), f(0.1), f(0.9), True, f(0.95), f(0.05), f(-4e-4), f(0.3), f(1e-8))
    for n in (128, 1024, 8192, 32768, 65536, 131072, 262144, 1 << 20, 4 << 20, args.params):
        p = rng.standard_normal(n).astype(dt)
        g = p * f(1e-3)
        m, v = np.zeros_like(p), np.zeros_like(p)
        yield ("adamw step", "adamw._PAR_MIN", f"{n:,}", n,
               P(adamw._adam_range, p, m, v, g, *sc, 0, n),
               P(adamw._adam_par, p, m, v, g, *sc, nt))  # fmt: skip


def crossover(args: argparse.Namespace) -> None:
    """打印每个并行内核的串行/并行耗时随工作量的变化，以及并行开始更快的最小工作量（与当前阈值对照）。"""
    import importlib

    print(f"{'内核':<24} {'形状':<24} {'工作量':>10} {'串行 µs':>10} {'并行 µs':>10} {'并行/串行':>9}")
    by_kernel: dict[str, list[tuple[int, float]]] = {}
    thresholds: dict[str, str] = {}
    for name, thr, shape, work, ser, par in crossover_cases(args):
        if args.only not in name:
            continue
        res = per_call_us({"s": ser, "p": par}, args.repeat)
        ratio = res["p"] / res["s"]
        print(f"{name:<24} {shape:<24} {work:>10,} {res['s']:>10.1f} {res['p']:>10.1f} {ratio:>9.2f}", flush=True)
        by_kernel.setdefault(name, []).append((work, ratio))
        thresholds[name] = thr
    print()
    print(f"{'内核':<24} {'并行开始更快的工作量':>22} {'当前阈值':>12}")
    for name, pts in by_kernel.items():
        pts.sort()
        # 分界：此后所有尺寸上并行都不慢于串行的最小工作量
        cross = next((w for i, (w, _) in enumerate(pts) if all(r < 1.0 for _, r in pts[i:])), None)
        mod, attr = thresholds[name].split(".")
        current = getattr(importlib.import_module(f"tinytensor.kernels.{mod}"), attr)
        print(f"{name:<24} {('> ' + format(pts[-1][0], ',')) if cross is None else format(cross, ','):>22} "
              f"{current:>12,}")  # fmt: skip


# ---------------------------------------------------------------------------
# 主程序
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="少量重复、较小的 AdamW，几秒钟跑完")
    ap.add_argument("--repeat", type=int, default=21, help="每个实现的重复次数（取中位数）")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--rows", type=int, default=2048, help="N = B·T")
    ap.add_argument("--channels", type=int, nargs="+", default=[384, 768], help="C")
    ap.add_argument("--vocab", type=int, default=6000, help="V")
    ap.add_argument("--seq", type=int, default=256, help="注意力 softmax 的行长 T")
    ap.add_argument("--softmax-rows", type=int, default=8 * 6 * 256, help="B·nh·T")
    ap.add_argument("--params", type=int, default=13_000_000, help="AdamW 的参数个数")
    ap.add_argument("--only", default="", help="只跑名字里含这个子串的内核，如 attention")
    ap.add_argument("--threads", type=int, default=None, help="numba、BLAS 与 torch 的线程数（默认不改）")
    ap.add_argument("--attn", type=int, nargs=4, default=[8, 6, 256, 64], metavar=("B", "nh", "T", "hs"))
    ap.add_argument("--launch", action="store_true", help="只测生成时小输入的单次调用耗时（微秒）")
    ap.add_argument("--crossover", action="store_true", help="只测串行内核与并行内核随工作量的耗时")
    args = ap.parse_args(argv)
    if args.threads and torch is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeat = min(args.repeat, 5)
        args.params = min(args.params, 2_000_000)
    if not NUMBA_AVAILABLE:
        print("numba 不可用：'numba' 一列实际走的是 NumPy 参考实现")

    threads = "无 numba"
    if NUMBA_AVAILABLE:
        threads = f"numba {numba.get_num_threads()} 线程"
    if torch is not None:
        threads += f"，torch {torch.get_num_threads()} 线程（{torch.__version__}）"
    print(f"# tinytensor.kernels 微基准：{args.dtype}，每项 {args.repeat} 次取中位数，{threads}，"
          f"CPU 核数 {os.cpu_count()}")  # fmt: skip
    if args.launch:
        launch(args)
        return
    if args.crossover:
        if not NUMBA_AVAILABLE:
            print("numba 不可用，无从比较")
            return
        crossover(args)
        return
    t0 = time.perf_counter()
    all_cases = cases(args)
    header = (f"{'内核':<18} {'形状':<22} {'numba ms':>9} {'numpy ms':>9} {'torch ms':>9} "
              f"{'numpy/numba':>12} {'torch/numba':>12}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, shape, fns in all_cases:
        if args.only not in name:
            continue
        res = time_all(fns, args.repeat)
        nb = res["numba"]
        tor = res.get("torch", float("nan"))
        print(f"{name:<18} {shape:<22} {nb:>9.3f} {res['numpy']:>9.3f} {tor:>9.3f} "
              f"{res['numpy'] / nb:>11.2f}× {tor / nb:>11.2f}×")  # fmt: skip
        for extra in sorted(set(res) - {"numba", "numpy", "torch"}):
            print(f"{'  ↳ ' + extra:<41} {res[extra]:>9.3f} ms  （{res[extra] / nb:.2f}× numba）")
    print(f"# 总耗时 {time.perf_counter() - t0:.1f} s（含首次编译/加载缓存）")


if __name__ == "__main__":
    main()
