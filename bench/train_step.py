"""训练步基准：前向 + 交叉熵 + 反向 + AdamW，两条轨道（tinytensor vs PyTorch eager）同一次运行里测。

    python -m bench.train_step                 # tiny、small、gpt2-small，dropout 0
    python -m bench.train_step --quick         # 少量步数，几十秒看个大概
    python -m bench.train_step --configs small --dropout 0.1
    python -m bench.train_step --threads 1     # 两条轨道都只用 1 个线程
    TINYTENSOR_TUNING=0 python -m bench.train_step   # tinytensor 不开 CPU 调优（见 tinytensor/tuning.py）

每条轨道在**独立的子进程**里运行（互不干扰线程池），两条轨道交替跑 --rounds 轮，取中位数。
报告：词元/秒、比值、模型 FLOP/s 与占 NumPy 矩阵乘峰值的比例 (MFU)、第一步耗时（含 numba 编译），
以及训练步的峰值内存（进程峰值 RSS 减去建好模型后的 RSS）。

FLOP 计数（每步）：tokens × (6·N_mm + 12·L·T·C)，N_mm = 12·L·C² + C·V 为矩阵乘里的参数数
（嵌入查表不算乘法）；6 = 前向 2 + 反向 4；12·L·T·C 是注意力分数与加权求和（前向 4·T·C，反向 8·T·C）。
不作为测试运行。
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

CONFIGS = {
    # 名字: (预设, 覆盖, 批大小)
    "tiny": ("tiny", {"vocab_size": 6000}, 16),
    "small": ("small", {"vocab_size": 6000}, 8),
    "gpt2-small": ("gpt2-small", {"context_length": 256}, 2),
}


def flops_per_step(cfg: dict, batch: int) -> float:
    """每个训练步的模型 FLOP：tokens × (6·N_mm + 12·L·T·C)。"""
    c, l, t, v = cfg["emb_dim"], cfg["n_layers"], cfg["context_length"], cfg["vocab_size"]
    n_mm = 12 * l * c * c + c * v
    return batch * t * (6 * n_mm + 12 * l * t * c)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    """把 VmHWM 重置为当前 RSS（Linux：向 /proc/self/clear_refs 写 5）。"""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def worker(track: str, name: str, steps: int, dropout: float) -> dict:
    """子进程里：建模型，跑 1 步（计时，含编译）+ 2 步预热 + steps 步计时。"""
    import numpy as np

    from llmcore.config import GPTConfig

    preset, over, batch = CONFIGS[name]
    cfg = GPTConfig.preset(preset, **over, drop_rate=dropout)
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (batch, cfg.context_length))
    y = rng.integers(0, cfg.vocab_size, (batch, cfg.context_length))
    if track == "numpy":
        import tinytensor as tt
        from gpt_numpy.model import GPTModel

        tt.tuning.enable()  # 与命令行训练相同的 CPU 调优；TINYTENSOR_TUNING=0 时测不调优的速度
        tt.manual_seed(0)
        model = GPTModel(cfg)
        opt = tt.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

        def step() -> float:
            loss = model.loss(x, y)  # 训练时实际走的路径：输出层与交叉熵融合
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss.item()
    else:
        import torch
        import torch.nn.functional as F

        from gpt_torch.model import GPTModel

        torch.manual_seed(0)
        model = GPTModel(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
        xt, yt = torch.as_tensor(x), torch.as_tensor(y)

        def step() -> float:
            logits = model(xt)
            loss = F.cross_entropy(logits.flatten(0, 1), yt.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()

    base = _rss_mb()
    _reset_peak()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    step()
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "track": track, "config": name, "first_step_s": first, "step_s": times,
        "tokens": batch * cfg.context_length, "flops": flops_per_step(cfg.to_dict(), batch),
        "mem_mb": _peak_mb() - base,
    }


def matmul_peak(threads: int | None, seconds: float = 3.0) -> float:
    """NumPy (BLAS) float32 方阵乘的峰值 GFLOP/s（子进程里测，与训练时同样的线程设置）。"""
    code = (
        "import numpy as np, time\n"
        "best = 0.0\n"
        "for n in (1024, 2048):\n"
        "    a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)\n"
        "    a @ b\n"
        f"    t_end = time.perf_counter() + {seconds / 2}\n"
        "    while time.perf_counter() < t_end:\n"
        "        t0 = time.perf_counter(); a @ b; dt = time.perf_counter() - t0\n"
        "        best = max(best, 2 * n**3 / dt / 1e9)\n"
        "print(best)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(threads), capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[k] = str(threads)
    return env


def run_worker(track: str, name: str, steps: int, dropout: float, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "bench.train_step", "--worker", track, name, str(steps), str(dropout)]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{track}/{name} 失败：\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="训练步基准：tinytensor vs PyTorch eager（同一次运行，报比值）")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=None, help="每轮计时的步数（默认 tiny 20、small 8、gpt2 4）")
    ap.add_argument("--rounds", type=int, default=3, help="两条轨道交替的轮数（默认 3）")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=None, help="两条轨道的线程数（默认不改）")
    ap.add_argument("--quick", action="store_true", help="每轮少量步数、2 轮")
    ap.add_argument("--json", default=None, help="把原始结果写入这个 JSON 文件")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        track, name, steps, dropout = args.worker
        print(json.dumps(worker(track, name, int(steps), float(dropout))))
        return 0
    default_steps = {"tiny": 20, "small": 8, "gpt2-small": 4}
    rounds = 2 if args.quick else args.rounds
    peak = matmul_peak(args.threads)
    print(f"NumPy float32 矩阵乘峰值：{peak:.0f} GFLOP/s（线程数：{args.threads or '默认'}），dropout {args.dropout}")
    results = []
    for name in args.configs:
        steps = args.steps or (max(2, default_steps[name] // 4) if args.quick else default_steps[name])
        runs: dict[str, list[dict]] = {"numpy": [], "torch": []}
        for _ in range(rounds):
            for track in ("numpy", "torch"):
                runs[track].append(run_worker(track, name, steps, args.dropout, args.threads))
        row = {"config": name}
        for track, rs in runs.items():
            med = statistics.median(t for r in rs for t in r["step_s"])
            row[track] = {
                "tokens_per_s": rs[0]["tokens"] / med, "step_ms": med * 1e3,
                "gflops": rs[0]["flops"] / med / 1e9, "first_step_s": statistics.median(r["first_step_s"] for r in rs),
                "mem_mb": statistics.median(r["mem_mb"] for r in rs),
            }
        row["ratio"] = row["numpy"]["tokens_per_s"] / row["torch"]["tokens_per_s"]
        row["mem_ratio"] = row["numpy"]["mem_mb"] / max(row["torch"]["mem_mb"], 1e-9)
        results.append(row)
        n, t = row["numpy"], row["torch"]
        print(
            f"{name:11s} tinytensor {n['tokens_per_s']:8.0f} 词元/秒 ({n['gflops']:5.1f} GFLOP/s, "
            f"MFU {n['gflops'] / peak:5.1%}) | torch {t['tokens_per_s']:8.0f} 词元/秒 "
            f"({t['gflops']:5.1f} GFLOP/s, MFU {t['gflops'] / peak:5.1%}) | 比值 {row['ratio']:.2f}×"
        )
        print(
            f"{'':11s} 第一步 {n['first_step_s']:.2f} s / {t['first_step_s']:.2f} s；"
            f"训练步峰值内存 {n['mem_mb']:.0f} MB / {t['mem_mb']:.0f} MB（比值 {row['mem_ratio']:.2f}）"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "results": results}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
