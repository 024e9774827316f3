"""生成速度基准：两条轨道、用与不用 KV 缓存的 tokens/s（批大小 1，16 个词元的提示，贪心）。

    python bench/bench_generate.py            # 配置 "small"，200 个新词元，每项重复 3 次取中位数
    python bench/bench_generate.py --quick    # 30 个新词元、重复 1 次，几秒钟看个大概
    python bench/bench_generate.py --gpt2     # 另测原版 GPT-2 small 结构（随机权重；qkv 带偏置、共享输出层，
                                              # 124,439,808 个参数）
    python bench/bench_generate.py --threads 1   # NumPy(BLAS) 与 torch 都只用 1 个线程

机器有噪声：同一次运行里测两条轨道，看比值。每条轨道在独立的子进程里运行（torch 的 OpenMP 线程池与
NumPy 的 OpenBLAS 同处一个进程时会互相干扰），两条轨道交替 --rounds 轮，取中位数。机器被其他任务占用时，
多线程的 BLAS/torch 会互相等待，单个词元的小矩阵乘法可慢 10 倍以上，此时用 --threads 1 更能反映实现本身。

内存带宽上限：批大小 1 时每生成一个词元，全部权重（float32）都要从内存读一遍，KV 缓存相比之下很小。
所以 tokens/s ≤ 内存读带宽 / (4 字节 × 矩阵乘里的参数个数)。基准先测 NumPy 顺序读大数组的带宽
（单线程对 512 MB 的 float32 数组求和，两个核同时读还能更高一些），
再打印这个上限以及两条轨道各达到了它的多少。不作为测试运行。
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from llmcore.config import GPTConfig  # 只用标准库：NumPy 在设置线程数之后才导入

PROMPT_LEN = 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS: dict[str, Callable[[], GPTConfig]] = {
    "small": lambda: GPTConfig.preset("small"),
    "gpt2-small": lambda: GPTConfig.preset("gpt2-small", qkv_bias=True, tie_weights=True, drop_rate=0.0),
}


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """运行 repeats 次，返回 (中位数秒数, 最后一次的结果)。"""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def matmul_params(cfg: GPTConfig) -> int:
    """生成一个词元时矩阵乘读到的参数个数：各层的权重加输出层（嵌入查表只读一行，不计）。"""
    return cfg.num_parameters(include_tied=True) - cfg.vocab_size * cfg.emb_dim - cfg.context_length * cfg.emb_dim


def read_bandwidth(seconds: float = 2.0) -> float:
    """NumPy 顺序读 512 MB float32 数组（求和）的带宽，GB/s，取最快的一次。"""
    import numpy as np

    a = np.ones(128 * 1024 * 1024, dtype=np.float32)
    a.sum()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def worker(track: str, name: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    """子进程里：建模型、预热，用与不用缓存各生成 repeats 次，返回 tokens/s 与生成的词元。"""
    import numpy as np

    cfg = CONFIGS[name]()
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, PROMPT_LEN))
    new_tokens = min(new_tokens, cfg.context_length - PROMPT_LEN)
    if track == "numpy":
        import tinytensor as tt
        from gpt_numpy.generate import generate
        from gpt_numpy.model import GPTModel

        tt.tuning.enable()  # 与命令行生成相同的 CPU 调优（见 tinytensor/tuning.py）
        tt.manual_seed(0)
        model = GPTModel(cfg).eval()
    else:
        import torch

        from gpt_torch.generate import generate
        from gpt_torch.model import GPTModel

        torch.manual_seed(0)
        model = GPTModel(cfg).eval()
    generate(model, prompt, 2)  # 预热（含 numba 编译）
    out: dict[str, Any] = {}
    for use_cache in (True, False):
        key = "cache" if use_cache else "no-cache"
        sec, ids = _time(functools.partial(generate, model, prompt, new_tokens, use_cache=use_cache), repeats)
        out[key] = new_tokens / sec
        out[key + "-ids"] = np.asarray(ids).tolist()
    out["new_tokens"] = new_tokens
    return out


def run_worker(track: str, name: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_generate", "--worker", track, name,
           "--new-tokens", str(new_tokens), "--repeats", str(repeats)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    if res.returncode != 0:
        raise RuntimeError(f"{track}/{name} 子进程失败：\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_config(name: str, new_tokens: int, repeats: int, rounds: int, tracks: list[str]) -> dict[str, float]:
    """两条轨道交替跑 rounds 轮（每轮一个子进程），返回 {"numpy/cache": tokens/s 中位数, ...}。"""
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tracks}
    for r in range(rounds):
        for track in tracks:
            res = run_worker(track, name, new_tokens, repeats)
            runs[track].append(res)
            print(f"  [{name}] 第 {r + 1} 轮 {track:<6} 有缓存 {res['cache']:7.1f}、"
                  f"无缓存 {res['no-cache']:7.1f} tokens/s")
    results: dict[str, float] = {}
    for track, rs in runs.items():
        for key in ("cache", "no-cache"):
            results[f"{track}/{key}"] = statistics.median(x[key] for x in rs)
        if rs[0]["cache-ids"] != rs[0]["no-cache-ids"]:
            print(f"  [{name}] 警告：{track} 用与不用缓存生成的词元不同")
    return results


def report(name: str, r: dict[str, float], tracks: list[str], bandwidth: float) -> None:
    print(f"\n== {name}：tokens/s（中位数）与比值 ==")
    print(f"{'':<10}{'有缓存':>12}{'无缓存':>12}{'缓存加速':>12}")
    for t in tracks:
        c, n = r[f"{t}/cache"], r[f"{t}/no-cache"]
        print(f"{t:<10}{c:>12.1f}{n:>12.1f}{c / n:>11.2f}×")
    if len(tracks) == 2:
        print(f"numpy/torch 速度比：有缓存 {r['numpy/cache'] / r['torch/cache']:.2f}，"
              f"无缓存 {r['numpy/no-cache'] / r['torch/no-cache']:.2f}")
    cfg = CONFIGS[name]()
    mb = 4 * matmul_params(cfg) / 1e6
    limit = bandwidth * 1e3 / mb
    print(f"内存带宽上限：每个词元读 {mb:,.0f} MB 权重，带宽 {bandwidth:.1f} GB/s → 最多 {limit:,.1f} tokens/s；"
          + "，".join(f"{t} 有缓存达到 {r[f'{t}/cache'] / limit:.0%}" for t in tracks))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="30 个新词元、重复 1 次、1 轮")
    p.add_argument("--gpt2", action="store_true", help="另测原版 GPT-2 small 结构（124,439,808 个参数）")
    p.add_argument("--new-tokens", type=int, default=None, help="新词元数（默认 200，--quick 时 30）")
    p.add_argument("--repeats", type=int, default=None, help="每个子进程里每项重复次数（默认 3，--quick 时 1）")
    p.add_argument("--rounds", type=int, default=None, help="两条轨道交替的轮数（默认 2，--quick 时 1）")
    p.add_argument("--threads", type=int, default=None, help="BLAS 与 torch 的线程数（默认不改）")
    p.add_argument("--no-torch", action="store_true", help="只测 NumPy 轨道")
    p.add_argument("--worker", nargs=2, metavar=("TRACK", "CONFIG"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads:  # 子进程继承；必须在导入 NumPy 之前设置
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(a.threads)
    new = a.new_tokens or (30 if a.quick else 200)
    repeats = a.repeats or (1 if a.quick else 3)
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], new, repeats)))
        return
    rounds = a.rounds or (1 if a.quick else 2)
    tracks = ["numpy"]
    if not a.no_torch:
        try:
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise ImportError
            tracks.append("torch")
        except ImportError:
            print("没有安装 torch，只测 NumPy 轨道")
    names = ["small"] + (["gpt2-small"] if a.gpt2 else [])
    bw = read_bandwidth()
    threads = a.threads or "默认"
    print(f"批大小 1，提示 {PROMPT_LEN} 个词元，生成 {new} 个（贪心），每个子进程重复 {repeats} 次、"
          f"{rounds} 轮取中位数，线程数 {threads}；NumPy 顺序读带宽 {bw:.1f} GB/s")
    for name in names:
        report(name, bench_config(name, new, repeats, rounds, tracks), tracks, bw)


if __name__ == "__main__":
    main()
