"""LoRA 微调步 vs 全参数微调步（以及原书的“只训最后一块”），两条轨道，同一次运行。

    python -m bench.bench_lora                       # small 结构，批 16 × 128 词元
    python -m bench.bench_lora --config tiny --steps 10 --rounds 2

一步 = 分类前向（最后一个词元）+ 交叉熵 + 反向 + 梯度裁剪 + AdamW。每条轨道在独立子进程里跑，
交替 --rounds 轮，取每步耗时的中位数；同时报告可训练参数个数。不作为测试运行。
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("full", "last-block", "lora")


def worker(track: str, config: str, batch: int, seq: int, steps: int, rank: int) -> dict:
    import numpy as np

    from llmcore.config import GPTConfig

    if track == "gpt_numpy":
        from gpt_numpy import classifier as cls
    else:
        from gpt_torch import classifier as cls
    cfg = GPTConfig.preset(config, vocab_size=8000)
    seq = min(seq, cfg.context_length)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, seq))
    lengths = rng.integers(seq // 2, seq + 1, batch)
    labels = rng.integers(0, 2, batch)
    out = {}
    for mode in MODES:
        kw = {"device": "cpu"} if track == "gpt_torch" else {}
        model = cls.build_classifier(cfg, None, 2, mode, seed=1, lora_rank=rank, lora_alpha=2 * rank, **kw)
        backend = cls.ClassifierBackend(model, 1e-4, 0.1, 1.0, mode)
        backend.train_step(ids, lengths, labels, 1e-4)  # 预热（numba 编译、内存分配）
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            backend.train_step(ids, lengths, labels, 1e-4)
            times.append(time.perf_counter() - t0)
        out[mode] = {"ms": 1000 * statistics.median(times), "trainable": backend.num_parameters()[0],
                     "total": backend.num_parameters()[1]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small", choices=("tiny", "small", "gpt2-small"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.config, a.batch, a.seq, a.steps, a.rank)))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results: dict[str, list[dict]] = {"gpt_numpy": [], "gpt_torch": []}
    for _ in range(a.rounds):
        for track in results:
            cmd = [sys.executable, "-m", "bench.bench_lora", f"--worker={track}", f"--config={a.config}",
                   f"--batch={a.batch}", f"--seq={a.seq}", f"--steps={a.steps}", f"--rank={a.rank}"]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
            results[track].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"配置 {a.config}（V 8000），批 {a.batch} × {a.seq} 词元，LoRA r={a.rank}，"
          f"每格为 {a.rounds} 轮 × {a.steps} 步的中位数")
    print("| 方式 | 可训练参数 | NumPy 毫秒/步 | torch 毫秒/步 | NumPy 相对全参 | torch 相对全参 |")
    print("|---|---|---|---|---|---|")
    med = {t: {m: statistics.median(r[m]["ms"] for r in rs) for m in MODES} for t, rs in results.items()}
    n, t = med["gpt_numpy"], med["gpt_torch"]
    for m in MODES:
        tr = results["gpt_numpy"][0][m]["trainable"]
        print(f"| {m} | {tr:,} | {n[m]:.1f} | {t[m]:.1f} | {n[m] / n['full']:.2f} | {t[m] / t['full']:.2f} |")


if __name__ == "__main__":
    main()
