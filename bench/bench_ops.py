"""逐个算子对比 tinytensor 与 PyTorch（CPU）的速度：前向、前向+反向的中位数耗时与比值。

    python -m bench.bench_ops            # GPT 小模型量级的形状（B 8, T 256, C 384, nh 6, V 6000）
    python -m bench.bench_ops --quick    # 小形状、少重复，几秒钟跑完
    python -m bench.bench_ops --ops layer_norm gelu --repeat 20

比值 = tinytensor 耗时 / torch 耗时（>1 表示 tinytensor 更慢）。这里只打印，不设目标；
机器有噪声，所以两边总是在同一次运行里交替测量。多线程的 BLAS 在机器繁忙时会互相空等，
此时加 --threads 1（须在导入 numpy 之前设置，所以用参数而不是在代码里改）。不作为测试运行。
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy 在 main() 里设好线程数之后才导入
    import numpy as np


@dataclass
class Case:
    """一个基准：名字、形状说明，以及为两个框架各造一对 (前向, 前向+反向) 可调用对象的函数。"""

    name: str
    shape: str
    make: Callable[[np.random.Generator], tuple[Callable[[], Any], ...]]


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return dict(B=2, T=64, C=128, nh=4, V=1000)
    return dict(B=8, T=256, C=384, nh=6, V=6000)


def _cases(s: dict[str, int]) -> list[Case]:
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812

    import tinytensor as tt
    import tinytensor.nn.functional as TF  # noqa: N812

    tt.tuning.enable()  # 与训练时相同的 CPU 调优（见 tinytensor/tuning.py）

    rng0 = np.random.default_rng(0)
    B, T, C, nh, V = s["B"], s["T"], s["C"], s["nh"], s["V"]  # noqa: N806  形状字母
    hs = C // nh

    def pair(fwd_tt, fwd_th, inputs_np, grad_shape):
        """inputs_np: [(数组, 是否求导)]；返回 tt 前向、tt 前向+反向、torch 前向、torch 前向+反向。"""

        def build(rng):
            g_np = rng.standard_normal(grad_shape).astype(np.float32) if grad_shape is not None else None
            xs_tt = [tt.tensor(a, requires_grad=r) if a.dtype.kind == "f" else tt.tensor(a) for a, r in inputs_np]
            xs_th = [torch.tensor(a, requires_grad=r) if a.dtype.kind == "f" else torch.tensor(a) for a, r in inputs_np]
            g_tt = None if g_np is None else tt.tensor(g_np)
            g_th = None if g_np is None else torch.tensor(g_np)

            def tt_f():
                with tt.no_grad():
                    return fwd_tt(*xs_tt)

            def tt_fb():
                for x in xs_tt:
                    x.grad = None
                fwd_tt(*xs_tt).backward(g_tt)

            def th_f():
                with torch.no_grad():
                    return fwd_th(*xs_th)

            def th_fb():
                for x in xs_th:
                    x.grad = None
                fwd_th(*xs_th).backward(g_th)

            return tt_f, tt_fb, th_f, th_fb

        return build

    def rnd(*shape):
        return rng0.standard_normal(shape).astype(np.float32)

    x = rnd(B, T, C)
    h = rnd(B, T, 4 * C)
    w = rnd(4 * C, C) * C**-0.5
    b = rnd(4 * C)
    ln_w, ln_b = 1 + 0.1 * rnd(C), 0.1 * rnd(C)
    scores = rnd(B, nh, T, T)
    logits = rnd(B * T, V)
    targets = rng0.integers(0, V, size=B * T)
    idx = rng0.integers(0, V, size=(B, T))
    emb = rnd(V, C)
    q, k, v = rnd(B, nh, T, hs), rnd(B, nh, T, hs), rnd(B, nh, T, hs)
    x2, w2 = x.reshape(B * T, C), np.ascontiguousarray(w.T)

    return [
        Case("matmul", f"({B * T}, {C}) @ ({C}, {4 * C})",
             pair(lambda a, m: a @ m, lambda a, m: a @ m, [(x2, True), (w2, True)], (B * T, 4 * C))),
        Case("linear", f"x ({B}, {T}, {C}), W ({4 * C}, {C})",
             pair(TF.linear, F.linear, [(x, True), (w, True), (b, True)], (B, T, 4 * C))),
        Case("layer_norm", f"({B}, {T}, {C})",
             pair(lambda a, g_, b_: TF.layer_norm(a, (C,), g_, b_), lambda a, g_, b_: F.layer_norm(a, (C,), g_, b_),
                  [(x, True), (ln_w, True), (ln_b, True)], (B, T, C))),
        Case("gelu", f"({B}, {T}, {4 * C})",
             pair(lambda a: TF.gelu(a), lambda a: F.gelu(a, approximate="tanh"), [(h, True)], (B, T, 4 * C))),
        Case("softmax", f"({B}, {nh}, {T}, {T})",
             pair(lambda a: a.softmax(-1), lambda a: a.softmax(-1), [(scores, True)], (B, nh, T, T))),
        Case("cross_entropy", f"({B * T}, {V})",
             pair(TF.cross_entropy, F.cross_entropy, [(logits, True), (targets, False)], None)),
        Case("embedding", f"idx ({B}, {T}), W ({V}, {C})",
             pair(lambda i, e: TF.embedding(i, e), lambda i, e: F.embedding(i, e), [(idx, False), (emb, True)],
                  (B, T, C))),
        Case("attention", f"q/k/v ({B}, {nh}, {T}, {hs}), causal",
             pair(lambda a, b_, c: TF.scaled_dot_product_attention(a, b_, c, is_causal=True),
                  lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c, is_causal=True),
                  [(q, True), (k, True), (v, True)], (B, nh, T, hs))),
    ]


def _median_ms(fns: list[Callable[[], Any]], repeat: int, warmup: int) -> list[float]:
    """交替运行几个函数（减少机器噪声对比值的影响），返回各自耗时的中位数（毫秒）。"""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.bench_ops", description="tinytensor 与 PyTorch 逐算子计时（CPU）"
    )
    ap.add_argument("--quick", action="store_true", help="小形状、少重复（冒烟用）")
    ap.add_argument("--repeat", type=int, default=None, help="每个算子的计时次数（默认 完整 15，快速 5）")
    ap.add_argument("--warmup", type=int, default=2, help="预热次数（含 numba 编译）")
    ap.add_argument("--ops", nargs="*", default=None, help="只测这些算子，如 --ops layer_norm gelu")
    ap.add_argument("--threads", type=int, default=None, help="两边都限制为 N 个线程（机器繁忙时用 1 更稳定）")
    args = ap.parse_args(argv)
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    import numpy as np

    try:
        import torch
    except ImportError:
        print("需要 PyTorch：pip install -e '.[torch]'", file=sys.stderr)
        return 1
    import tinytensor as tt

    if args.threads:
        torch.set_num_threads(args.threads)
    repeat = args.repeat or (5 if args.quick else 15)
    sizes = _sizes(args.quick)
    cases = _cases(sizes)
    if args.ops:
        unknown = set(args.ops) - {c.name for c in cases}
        if unknown:
            ap.error(f"未知算子 {sorted(unknown)}；可选：{[c.name for c in cases]}")
        cases = [c for c in cases if c.name in args.ops]

    backend = getattr(tt.kernels, "get_backend", lambda: os.environ.get("TINYTENSOR_BACKEND", "默认"))()
    print(f"形状：{sizes}  float32  重复 {repeat} 次取中位数")
    print(f"torch {torch.__version__}（{torch.get_num_threads()} 线程），numpy {np.__version__}，"
          f"tinytensor 内核后端：{backend}")
    head = f"{'算子':<14}{'形状':<38}{'tt 前向':>9}{'torch':>9}{'比值':>7}   {'tt 前+反':>9}{'torch':>9}{'比值':>7}"
    print(head)
    print("-" * (len(head) + 8))
    ratios = []
    for case in cases:
        tt_f, tt_fb, th_f, th_fb = case.make(np.random.default_rng(1))
        a, b, c, d = _median_ms([tt_f, th_f, tt_fb, th_fb], repeat, args.warmup)
        ratios.append(c / d)
        print(f"{case.name:<14}{case.shape:<38}{a:>8.2f}m{b:>8.2f}m{a / b:>7.2f}   {c:>8.2f}m{d:>8.2f}m{c / d:>7.2f}",
              flush=True)
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"前向+反向比值的几何平均：{geo:.2f}（单位 m = 毫秒；比值 = tinytensor / torch）")
    return 0


if __name__ == "__main__":
    sys.exit(main())
