"""训练测试的公共工具：写一份小语料、在子进程里跑 CLI、读 metrics.jsonl。"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# 很小的模型与数据：每步几毫秒，几十步就能看出损失是否下降
TINY = [
    "--preset=tiny", "--n_layers=2", "--emb_dim=32", "--n_heads=2", "--context_length=16", "--batch_size=4",
    "--eval_batches=2", "--log_interval=1", "--progress=false", "--sample_tokens=4", "--warmup_steps=2",
    "--lr=3e-3", "--min_lr=3e-4",
]


def write_corpus(path: Path, n_lines: int = 400) -> Path:
    """写一份有规律的中文小语料（字符级分词器可以很快学到其中的搭配）。"""
    subjects = ["新华社", "记者", "代表", "专家", "工人", "学生"]
    verbs = ["报道", "参观", "讨论", "学习", "建设", "访问"]
    objects = ["北京", "工厂", "学校", "农村", "经济", "文化"]
    lines = []
    for i in range(n_lines):
        s, v, o = subjects[i % 6], verbs[(i * 7) % 6], objects[(i * 5) % 6]
        lines.append(f"{s}{v}了{o}。今天{o}很好。\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    e["PYTHONUNBUFFERED"] = "1"
    e.update(extra)
    return e


def run_cli(track: str, args: list[str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """运行 python -m <track> <args>，返回结果（check=True 时要求退出码为 0）。"""
    proc = subprocess.run(
        [sys.executable, "-m", track, *args], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{track} {' '.join(args)} 退出码 {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_metrics(out_dir: Path) -> list[dict]:
    p = out_dir / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_losses(out_dir: Path) -> dict[int, float]:
    """步数 → 训练损失（log_interval=1 时每步一条）。"""
    return {r["step"]: r["loss"] for r in read_metrics(out_dir) if r["type"] == "train"}


def val_losses(out_dir: Path) -> dict[int, float]:
    return {r["step"]: r["val_loss"] for r in read_metrics(out_dir) if r["type"] == "eval"}
