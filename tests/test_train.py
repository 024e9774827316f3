"""训练（第 5 章 / 附录 D）：精确续训、跨轨道续训、信号、NaN、配置冲突、损坏的检查点、CLI。

这些测试在子进程里运行真正的命令行（python -m gpt_numpy / gpt_torch train），
用测试自己写的小语料和很小的模型。
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_helpers import ROOT, TINY, env, read_metrics, run_cli, train_losses, val_losses, write_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus.txt")


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["train", f"--data={corpus}", f"--out_dir={out}", *TINY, *extra]


def _interrupt_and_resume(track: str, corpus: Path, out: Path, total: int, extra: list[str]) -> subprocess.Popen:
    """启动训练，等它记录到第 3 步之后发送真正的 SIGINT，返回已结束的进程。"""
    cmd = [sys.executable, "-m", track, *_args(corpus, out, f"--max_steps={total}", *extra)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if metrics.exists() and any(
                json.loads(line).get("step", 0) >= 3 and json.loads(line)["type"] == "train"
                for line in metrics.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc


@pytest.mark.parametrize("track", ["gpt_numpy", "gpt_torch"])
def test_sigint_then_resume_equals_uninterrupted(track: str, corpus: Path, tmp_path: Path) -> None:
    if track == "gpt_torch":
        pytest.importorskip("torch")
    total = 40
    extra = ["--eval_interval=1000"]
    ref = tmp_path / "ref"
    run_cli(track, _args(corpus, ref, f"--max_steps={total}", *extra))
    out = tmp_path / "int"
    proc = _interrupt_and_resume(track, corpus, out, total, extra)
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr
    state = json.loads((out / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
    stopped = state["step"]
    assert 3 <= stopped < total, f"应在训练中途停下，实际停在第 {stopped} 步"
    run_cli(track, _args(corpus, out, f"--max_steps={total}", *extra))
    a, b = train_losses(ref), train_losses(out)
    assert sorted(a) == sorted(b) == list(range(1, total + 1))
    la, lb = np.array([a[s] for s in sorted(a)]), np.array([b[s] for s in sorted(b)])
    if track == "gpt_numpy":
        assert np.array_equal(la, lb), f"NumPy 轨道续训后的损失应与不中断时完全相同：{la - lb}"
    else:
        np.testing.assert_allclose(lb, la, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("first,second", [("gpt_numpy", "gpt_torch"), ("gpt_torch", "gpt_numpy")])
def test_cross_track_continuation(first: str, second: str, corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    total, half = 30, 15
    ref = tmp_path / "ref"
    run_cli(first, _args(corpus, ref, f"--max_steps={total}", "--eval_interval=1000"))
    out = tmp_path / "cross"
    run_cli(first, _args(corpus, out, f"--max_steps={total}", "--eval_interval=1000", f"--stop_at={half}"))
    assert json.loads((out / "ckpt_last" / "trainer_state.json").read_text())["step"] == half
    run_cli(second, _args(corpus, out, f"--max_steps={total}", "--eval_interval=1000"))
    a, b = train_losses(ref), train_losses(out)
    assert sorted(b) == list(range(1, total + 1))
    np.testing.assert_allclose([b[s] for s in range(1, total + 1)], [a[s] for s in range(1, total + 1)], rtol=2e-4)


@pytest.mark.parametrize("track", ["gpt_numpy", "gpt_torch"])
def test_short_run_learns(track: str, corpus: Path, tmp_path: Path) -> None:
    """一次短训练：验证损失必须降到一个坏模型达不到的水平。

    语料约 20 种字符，均匀猜测的损失 ln(20) ≈ 3.0；只学到字频（一元模型）的损失约 2.6；
    句式完全由上下文决定，能利用上下文的模型可以降到 1.0 以下。
    """
    if track == "gpt_torch":
        pytest.importorskip("torch")
    out = tmp_path / "run"
    proc = run_cli(track, _args(corpus, out, "--max_steps=150", "--eval_interval=50", "--log_interval=10"))
    vals = val_losses(out)
    assert vals[0] > 2.5
    assert vals[150] < 1.0, f"验证损失 {vals[150]:.3f} 没有降到 1.0 以下：{vals}"
    for name in ("loss.png", "samples.txt", "metrics.jsonl", "tokenizer.json"):
        assert (out / name).is_file(), name
    for ck in ("ckpt_last", "ckpt_best"):
        assert {"model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json",
                "tokenizer.json"} <= {p.name for p in (out / ck).iterdir()}
    assert "样例" in proc.stdout and "训练完成" in proc.stdout
    # generate 与 eval 命令能用这个检查点
    gen = run_cli(track, ["generate", f"--ckpt={out}", "--prompt=新华社", "--max-new-tokens=10", "--seed=1"])
    assert gen.stdout.startswith("新华社") and len(gen.stdout.strip()) > 3
    ev = run_cli(track, ["eval", f"--ckpt={out}", "--batch-size=4", "--max-batches=3"])
    assert "困惑度" in ev.stdout


def test_nan_loss_stops_and_keeps_last_good_checkpoint(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    proc = run_cli("gpt_numpy", _args(corpus, out, "--max_steps=50", "--lr=1e9", "--min_lr=1e9", "--grad_clip=0",
                                      "--warmup_steps=0", "--eval_interval=1000"), check=False)
    assert proc.returncode == 3, proc.stderr
    assert "训练发散" in proc.stderr and "步" in proc.stderr
    state = json.loads((out / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["step"] == 0  # 只有开始时的那个检查点，发散的状态没有被写入
    model = out / "ckpt_last" / "model.safetensors"
    from safetensors.numpy import load_file

    assert all(np.isfinite(v).all() for v in load_file(str(model)).values())


def test_resume_with_conflicting_config_names_the_field(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "conflict"
    run_cli("gpt_numpy", _args(corpus, out, "--max_steps=4", "--stop_at=2", "--eval_interval=1000"))
    before = (out / "ckpt_last" / "model.safetensors").read_bytes()
    proc = run_cli("gpt_numpy", _args(corpus, out, "--max_steps=4", "--emb_dim=64"), check=False)
    assert proc.returncode != 0
    assert "emb_dim" in proc.stderr and "32" in proc.stderr and "64" in proc.stderr
    proc = run_cli("gpt_numpy", _args(corpus, out, "--max_steps=4", "--batch_size=8"), check=False)
    assert proc.returncode != 0 and "batch_size" in proc.stderr
    assert (out / "ckpt_last" / "model.safetensors").read_bytes() == before


def test_corrupted_checkpoint_gives_clear_error_and_is_not_overwritten(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "corrupt"
    run_cli("gpt_numpy", _args(corpus, out, "--max_steps=4", "--stop_at=2", "--eval_interval=1000"))
    weights = out / "ckpt_last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    damaged = weights.read_bytes()
    proc = run_cli("gpt_numpy", _args(corpus, out, "--max_steps=4"), check=False)
    assert proc.returncode != 0
    assert "损坏" in proc.stderr and "model.safetensors" in proc.stderr
    assert weights.read_bytes() == damaged
    # 缺少检查点而要求续训
    proc = run_cli("gpt_numpy", _args(corpus, tmp_path / "none", "--max_steps=4", "--resume=must"), check=False)
    assert proc.returncode != 0 and "没有可用的检查点" in proc.stderr
    # generate 找不到检查点
    proc = run_cli("gpt_numpy", ["generate", f"--ckpt={tmp_path / 'nowhere'}"], check=False)
    assert proc.returncode != 0 and "找不到检查点" in proc.stderr


def test_unwritable_output_dir_fails_before_training(corpus: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("gpt_numpy", _args(corpus, blocker / "sub", "--max_steps=4"), check=False)
    assert proc.returncode != 0
    assert "sub" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_prompt_characters_warn(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "unk"
    run_cli("gpt_numpy", _args(corpus, out, "--max_steps=3", "--eval_interval=1000"))
    proc = run_cli("gpt_numpy", ["generate", f"--ckpt={out}", "--prompt=新华社龘", "--max-new-tokens=3"])
    assert "龘" in proc.stderr and "<|unk|>" in proc.stderr


def test_cli_help_and_bad_arguments() -> None:
    proc = run_cli("gpt_numpy", ["train", "--help"])
    assert "训练" in proc.stdout and "--recipe" in proc.stdout
    proc = run_cli("gpt_numpy", ["train", "--no_such_field=1"], check=False)
    assert proc.returncode == 2 and "no_such_field" in proc.stderr
    proc = run_cli("gpt_numpy", ["train", "--batch_size=abc"], check=False)
    assert proc.returncode == 2 and "batch_size" in proc.stderr
    proc = run_cli("gpt_numpy", ["frobnicate"], check=False)
    assert proc.returncode == 2 and "frobnicate" in proc.stderr


def test_metrics_are_truncated_to_the_resumed_step(corpus: Path, tmp_path: Path) -> None:
    """检查点之后记录的步会被重跑：续训时 metrics.jsonl 丢掉检查点之后的记录，不出现重复的步。"""
    import shutil

    out = tmp_path / "trunc"
    run_cli("gpt_numpy", _args(corpus, out, "--max_steps=10", "--stop_at=3", "--eval_interval=1000"))
    shutil.copytree(out / "ckpt_last", tmp_path / "step3")
    run_cli("gpt_numpy", _args(corpus, out, "--max_steps=10", "--stop_at=6", "--eval_interval=1000"))
    assert [r["step"] for r in read_metrics(out) if r["type"] == "train"] == list(range(1, 7))
    # 模拟“第 6 步的检查点没写成就崩溃了”：把 last 换回第 3 步的那份
    shutil.rmtree(out / "ckpt_last")
    shutil.copytree(tmp_path / "step3", out / "ckpt_last")
    run_cli("gpt_numpy", _args(corpus, out, "--max_steps=10", "--eval_interval=1000"))
    steps = [r["step"] for r in read_metrics(out) if r["type"] == "train"]
    assert steps == list(range(1, 11)), steps


@pytest.mark.parametrize("sampling", ["epoch", "random"])
def test_eval_windows_follow_the_sampling_mode(sampling: str, tmp_path: Path) -> None:
    """epoch 模式（原书）：训练集与验证集都用训练时的对齐窗口评估（起点是 stride 的倍数），
    这样“训练损失”与原书的 calc_loss_loader 可比；random 模式：训练集评估窗口的起点随机。"""
    from types import SimpleNamespace

    from llmcore.config import GPTConfig, TrainConfig
    from llmcore.trainer import TrainData, Trainer

    tcfg = TrainConfig(sampling=sampling, batch_size=2, eval_batches=3, max_steps=5, out_dir=str(tmp_path))
    mcfg = GPTConfig(vocab_size=50, context_length=16, emb_dim=8, n_heads=2, n_layers=1)
    data = TrainData(None, np.arange(400), np.arange(100), tmp_path / "tok.json")  # 词元各不相同：窗口可反查起点
    tr = Trainer(tcfg, mcfg, SimpleNamespace(world_size=1, rank=0), data)
    tokens = data.train_tokens
    firsts = []
    for x, y in tr.eval_train:
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        firsts += [int(np.flatnonzero((np.lib.stride_tricks.sliding_window_view(tokens, 16) == row).all(1))[0])
                   for row in x]
    assert len(firsts) == 6
    if sampling == "epoch":
        assert firsts == [0, 16, 32, 48, 64, 80]
    else:
        assert any(s % 16 for s in firsts)
