"""生成速度基准：两条轨道、用与不用 KV 缓存的 tokens/s（批大小 1，16 个词元的提示，贪心）。

    python bench/bench_generate.py            # 配置 "small"，200 个新词元，每项重复 3 次取中位数
    python bench/bench_generate.py --quick    # 30 个新词元、重复 1 次，几秒钟看个大概
    python bench/bench_generate.py --gpt2     # 另测 GPT-2 124M 结构（随机权重）
    python bench/bench_generate.py --threads 1   # NumPy(BLAS) 与 torch 都只用 1 个线程

机器有噪声：同一次运行里测两条轨道，看比值。机器被其他任务占用时，多线程的 BLAS/torch 会互相
等待，单个词元的小矩阵乘法可慢 10 倍以上，此时用 --threads 1 更能反映实现本身。不作为测试运行。
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from gpt_numpy.config import GPTConfig  # 只用标准库：NumPy 在设置线程数之后才导入

PROMPT_LEN = 16


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """运行 repeats 次，返回 (中位数秒数, 最后一次的结果)。"""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_config(name: str, cfg: GPTConfig, new_tokens: int, repeats: int, tracks: list[str]) -> dict[str, float]:
    """返回 {"numpy/cache": tokens/s, ...}。"""
    import numpy as np

    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, PROMPT_LEN))
    new_tokens = min(new_tokens, cfg.context_length - PROMPT_LEN)
    results: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for track in tracks:
        t0 = time.perf_counter()
        if track == "numpy":
            import tinytensor as tt
            from gpt_numpy.generate import generate
            from gpt_numpy.model import GPTModel

            tt.manual_seed(0)
            model = GPTModel(cfg).eval()
        else:
            import torch

            from gpt_torch.generate import generate
            from gpt_torch.model import GPTModel

            torch.manual_seed(0)
            model = GPTModel(cfg).eval()
        print(f"  [{name}] 建立 {track} 模型：{time.perf_counter() - t0:.1f} s")
        generate(model, prompt, 2)  # 预热
        for use_cache in (True, False):
            key = f"{track}/{'cache' if use_cache else 'no-cache'}"
            sec, out = _time(functools.partial(generate, model, prompt, new_tokens, use_cache=use_cache), repeats)
            results[key] = new_tokens / sec
            outputs[key] = np.asarray(out)
            print(f"  [{name}] {key:<16} {results[key]:8.1f} tokens/s  ({sec:.2f} s / {new_tokens} 个词元)")
        if not np.array_equal(outputs[f"{track}/cache"], outputs[f"{track}/no-cache"]):
            print(f"  [{name}] 警告：{track} 用与不用缓存生成的词元不同")
    return results


def report(name: str, r: dict[str, float], tracks: list[str]) -> None:
    print(f"\n== {name}：tokens/s（中位数）与比值 ==")
    print(f"{'':<10}{'有缓存':>12}{'无缓存':>12}{'缓存加速':>12}")
    for t in tracks:
        c, n = r[f"{t}/cache"], r[f"{t}/no-cache"]
        print(f"{t:<10}{c:>12.1f}{n:>12.1f}{c / n:>11.2f}×")
    if len(tracks) == 2:
        print(f"numpy/torch 速度比：有缓存 {r['numpy/cache'] / r['torch/cache']:.2f}，"
              f"无缓存 {r['numpy/no-cache'] / r['torch/no-cache']:.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="30 个新词元、重复 1 次")
    p.add_argument("--gpt2", action="store_true", help="另测 GPT-2 124M 结构")
    p.add_argument("--new-tokens", type=int, default=None, help="新词元数（默认 200，--quick 时 30）")
    p.add_argument("--repeats", type=int, default=None, help="每项重复次数（默认 3，--quick 时 1）")
    p.add_argument("--threads", type=int, default=None, help="BLAS 与 torch 的线程数（默认不改）")
    p.add_argument("--no-torch", action="store_true", help="只测 NumPy 轨道")
    a = p.parse_args(argv)
    if a.threads:  # 必须在导入 NumPy 之前设置
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(a.threads)
    new = a.new_tokens or (30 if a.quick else 200)
    repeats = a.repeats or (1 if a.quick else 3)
    tracks = ["numpy"]
    if not a.no_torch:
        try:
            import torch

            if a.threads:
                torch.set_num_threads(a.threads)
            tracks.append("torch")
        except ImportError:
            print("没有安装 torch，只测 NumPy 轨道")
    configs = [("small", GPTConfig.preset("small"))]
    if a.gpt2:
        configs.append(("gpt2-small", GPTConfig.preset("gpt2-small", qkv_bias=True, tie_weights=True, drop_rate=0.0)))
    threads = a.threads or "默认"
    print(f"批大小 1，提示 {PROMPT_LEN} 个词元，生成 {new} 个（贪心），重复 {repeats} 次取中位数，线程数 {threads}")
    for name, cfg in configs:
        report(name, bench_config(name, cfg, new, repeats, tracks), tracks)


if __name__ == "__main__":
    main()
