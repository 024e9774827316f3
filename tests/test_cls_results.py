"""第 6 章结果表（llmcore.finetune.results）：并行跑的各行保持顺序，每行带上训练曲线；子进程与基线用替身。"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmcore.finetune import results

_real_run = results.subprocess.run


def _fake_run(cmd, *args, **kw):  # 代替微调子进程：按参数写出 result.json 与 metrics.jsonl
    if not any(str(a).startswith("--out_dir=") for a in cmd):
        return _real_run(cmd, *args, **kw)  # platform 等别的调用照常
    env = kw["env"]
    out = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("--out_dir=")))
    out.mkdir(parents=True, exist_ok=True)
    assert env["OMP_NUM_THREADS"] == "1"
    acc = 0.5 + 0.01 * len(out.name)
    res = {"test_acc": acc, "test_ci_low": acc - 0.01, "test_ci_high": acc + 0.01, "test_n": 100,
           "train_time_s": 1.0, "trainable_params": 10, "val_acc": acc, "train_acc": acc, "steps": 2, "epochs": 1}
    (out / "result.json").write_text(json.dumps(res), encoding="utf-8")
    lines = [{"type": "train", "step": 1, "loss": 0.7}, {"type": "train", "step": 2, "loss": 0.6},
             {"type": "eval", "step": 2, "val_loss": 0.65, "val_acc": acc}]
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines), encoding="utf-8")


def test_rows_in_order_with_curves(tmp_path, monkeypatch):
    monkeypatch.setattr(results.subprocess, "run", _fake_run)
    majority = results._row("majority", "多数类", "—", 50, 100, 0.0, 0)
    monkeypatch.setattr(results, "baseline_rows", lambda seed: [majority])
    out = tmp_path / "table"
    argv = [f"--out={out}", f"--work={tmp_path / 'work'}", "--jobs=2", "--both-tracks=last-block",
            "--note=（测试）", "--max_steps=2"]
    assert results.main(argv) == 0
    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    got = [(r["key"], r["track"]) for r in data["rows"]]
    assert got == [("majority", "—"), ("scratch", "NumPy"), ("last-block", "NumPy"), ("last-block", "PyTorch"),
                   ("full", "NumPy"), ("lora", "NumPy")]
    row = data["rows"][1]
    assert row["curve"] == {"train": [[1, 0.7], [2, 0.6]], "eval": [[2, 0.65, row["test_acc"]]]}
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "同时 2 个进程（测试）" in md and md.count("\n| ") == 7  # 表头 + 6 行


def test_bad_jobs(tmp_path):
    with pytest.raises(SystemExit):
        results.main([f"--out={tmp_path / 'x'}", "--jobs=0"])


def test_reuse_skips_rows_with_same_settings(tmp_path, monkeypatch):
    calls = []

    def fake(cmd, *args, **kw):
        if any(str(a).startswith("--out_dir=") for a in cmd):
            calls.append(cmd)
            _fake_run(cmd, *args, **kw)
            out = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith("--out_dir=")))
            res = json.loads((out / "result.json").read_text(encoding="utf-8"))
            opts = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--"))
            res["config"] = {k: v for k, v in opts.items() if k != "out_dir"}  # 像真的 result.json 一样记下设置
            (out / "result.json").write_text(json.dumps(res), encoding="utf-8")
            return None
        return _real_run(cmd, *args, **kw)

    monkeypatch.setattr(results.subprocess, "run", fake)
    majority = results._row("majority", "多数类", "—", 50, 100, 0.0, 0)
    monkeypatch.setattr(results, "baseline_rows", lambda seed: [majority])
    argv = [f"--out={tmp_path / 't'}", f"--work={tmp_path / 'w'}", "--rows=scratch,full", "--tracks=gpt_numpy",
            "--max_steps=2"]
    results.main(argv)
    assert len(calls) == 2
    results.main([*argv, "--reuse"])  # 设置相同：两行都沿用
    assert len(calls) == 2
    results.main([*argv[:-1], "--max_steps=3", "--reuse"])  # 设置变了：重跑
    assert len(calls) == 4
    monkeypatch.setattr(results, "REUSE", False)
