"""DDP（torchrun，CPU 上 2 个进程，gloo）与单进程训练的一致性、跨进程数续训、崩溃与 SIGINT。

每个 torchrun 任务都在子进程里启动，有超时；结束后检查没有遗留进程（finally 中清理）。
单进程的参照运行在本进程内做（同一个 train 入口，线程数设为 1，与 DDP 子进程相同）。

- 2 进程 × B 与 1 进程 × 2B：metrics.jsonl 里的每一步损失、梯度范数、评估损失，以及最终权重，
  在 float32 容差内相等；梯度累积 (grad_accum=2) 时也一样。
- 续训：单进程训到第 7 步停下 → 2 进程 DDP 接着训到第 14 步停下 → 单进程训完，
  拼起来的损失曲线与最终权重等于不中断的单进程运行；dropout > 0 时 DDP 停下再续训与不中断的 DDP 运行逐位相同
  （每个进程的随机数状态都存进了检查点）。
- 测试钩子 LLMZH_FAULT_RANK/LLMZH_FAULT_STEP 让进程 1 在第 3 步抛异常：torchrun 很快以非零状态退出。
- 向 torchrun 发 SIGINT：所有进程停在同一步，主进程保存检查点，进程全部退出。
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.torch]
torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("此 torch 不支持 torch.distributed", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
STEPS = 20
RUN_TIMEOUT = 120  # 单个 torchrun 任务的上限（秒）；正常 10 秒左右


def common_args(data: Path, out: Path) -> list[str]:
    return [
        f"--data={data}", "--tokenizer=char", "--preset=tiny", "--n_layers=1", "--emb_dim=32", "--n_heads=2",
        "--context_length=16", "--drop_rate=0.0", f"--max_steps={STEPS}", "--warmup_steps=5", "--lr=3e-3",
        "--eval_interval=1000", "--eval_batches=2", "--log_interval=1", "--sample_tokens=8", "--progress=false",
        "--device=cpu", f"--out_dir={out}",
    ]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """一段确定的中文文本：几个句子按随机顺序重复（有规律，损失会下降）。"""
    sents = ["新华社北京一月一日电。", "今天是新年的第一天，", "人们走上街头，", "经济发展很快；", "我们要努力工作！\n"]
    rng = np.random.default_rng(0)
    text = "".join(sents[i] for i in rng.integers(0, len(sents), size=1500))
    p = tmp_path_factory.mktemp("ddp_data") / "data.txt"
    p.write_text(text, encoding="utf-8")
    return p


# ---------------------------------------------------------------------------- 运行与读取
def run_single(args: list[str]) -> None:
    """在本进程内做单进程训练（与 python -m gpt_torch train 相同的入口）；stop_at 造成的暂停不算错误。"""
    from gpt_torch.__main__ import TRACK
    from gpt_torch.train import train
    from llmcore.cli import parse_train_args
    from llmcore.trainer import TrainingInterrupted

    tcfg, overrides = parse_train_args(args, TRACK)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tcfg, overrides)
    except TrainingInterrupted:
        pass
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procs_with(marker: str) -> list[int]:
    """命令行里含 marker 的进程号（marker 是本测试独有的输出目录，只会匹配到我们启动的进程）。"""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    pids = []
    for line in out.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if marker in cmd and int(pid) != os.getpid():
            pids.append(int(pid))
    return pids


def wait_gone(marker: str, seconds: float = 5.0) -> list[int]:
    end = time.monotonic() + seconds
    while True:
        left = procs_with(marker)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def kill_all(marker: str) -> None:
    for pid in procs_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Torchrun:
    """在子进程里启动 torchrun（2 个进程，空闲端口），输出写到文件；用作上下文管理器，退出时清理所有进程。"""

    def __init__(self, args: list[str], out: Path, env: dict[str, str] | None = None) -> None:
        self.out, self.args, self.extra_env = out, args, env or {}
        self.log = out.parent / f"{out.name}.torchrun.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.marker = str(out)

    def start(self) -> Torchrun:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               **self.extra_env}
        env.pop("RANK", None)
        env.pop("WORLD_SIZE", None)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "gpt_torch.train", *self.args]
        self._fh = open(self.log, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait(self, timeout: float = RUN_TIMEOUT) -> tuple[int, float]:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"torchrun 超过 {timeout} 秒没有结束（挂住了）；日志：\n{self.output()[-4000:]}")
        return rc, time.monotonic() - self.t0

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> Torchrun:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        finally:
            kill_all(self.marker)
            self._fh.close()


def run_ddp(args: list[str], out: Path) -> str:
    """跑完一个 DDP 任务（端口被别人抢先占用时换一个端口重试一次），返回日志。"""
    for attempt in range(2):
        with Torchrun(args, out) as tr:
            rc, _ = tr.wait()
            log = tr.output()
            assert not wait_gone(tr.marker), "torchrun 结束后还有遗留进程"
        if rc == 0:
            return log
        if attempt == 0 and "address already in use" in log.lower():
            continue
        pytest.fail(f"DDP 训练失败（退出码 {rc}）：\n{log[-4000:]}")
    raise AssertionError("unreachable")


def records(out: Path) -> list[dict[str, Any]]:
    """metrics.jsonl 中与时间无关的字段。"""
    keep = ("type", "step", "tokens", "loss", "lr", "grad_norm", "train_loss", "val_loss")
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: r[k] for k in keep if k in r} for r in map(json.loads, lines)]


def weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(out / "ckpt_last" / "model.safetensors"))


def assert_same_run(got: Path, want: Path) -> None:
    """两次训练的记录（每一步的损失、学习率、梯度范数、评估损失）与最终权重在 float32 容差内相等。"""
    a, b = records(got), records(want)
    assert [(r["type"], r["step"], r["tokens"]) for r in a] == [(r["type"], r["step"], r["tokens"]) for r in b]
    assert sum(r["type"] == "train" for r in a) == STEPS
    for ra, rb in zip(a, b):
        for k in ("loss", "lr", "grad_norm", "train_loss", "val_loss"):
            if k in rb:
                np.testing.assert_allclose(ra[k], rb[k], rtol=1e-5, atol=1e-5, err_msg=f"第 {rb['step']} 步的 {k}")
    wa, wb = weights(got), weights(want)
    assert wa.keys() == wb.keys()
    for k in wb:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-4, atol=2e-5, err_msg=f"权重 {k}")
    # 确实训练了：权重离开了初始值，损失下降
    losses = [r["loss"] for r in b if r["type"] == "train"]
    assert losses[-1] < losses[0] - 0.5


def check_first_step(out: Path, batch_size: int, grad_accum: int) -> None:
    """独立核对第 1 步：把这一步的 grad_accum 个小批次拼成一个大批次，直接算平均损失与梯度范数，
    应当等于训练记录的值（检验“损失除以累积步数”）。"""
    from torch.nn import functional as F

    from gpt_torch.model import GPTModel
    from llmcore.batches import StepBatches
    from llmcore.checkpoint import load_model_state
    from llmcore.datasets import load_tokens
    from llmcore.weight_init import init_arrays

    _, cfg, _ = load_model_state(out / "ckpt_last")
    model = GPTModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_arrays(init_arrays(shapes, cfg, seed=1337))
    sb = StepBatches(load_tokens(out / "data" / "train.npy"), batch_size, cfg.context_length, "random", 1337)
    xs, ys = zip(*(sb.get(i) for i in range(grad_accum)))
    x, y = torch.as_tensor(np.concatenate(xs)), torch.as_tensor(np.concatenate(ys))
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item()
    first = next(r for r in records(out) if r["type"] == "train" and r["step"] == 1)
    np.testing.assert_allclose(first["loss"], loss.item(), rtol=1e-5)
    np.testing.assert_allclose(first["grad_norm"], norm, rtol=1e-4)


@pytest.fixture(scope="module")
def single_ref(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """参照：单进程，batch_size 8，不中断。"""
    out = tmp_path_factory.mktemp("ddp_ref") / "single"
    run_single([*common_args(data_file, out), "--batch_size=8"])
    return out


# ---------------------------------------------------------------------------- 测试
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_ddp_equals_single_process(grad_accum: int, data_file: Path, single_ref: Path, tmp_path: Path) -> None:
    ga = f"--grad_accum={grad_accum}"
    ref = single_ref
    if grad_accum != 1:
        ref = tmp_path / "single"
        run_single([*common_args(data_file, ref), "--batch_size=8", ga])
        check_first_step(ref, batch_size=8, grad_accum=grad_accum)
    ddp = tmp_path / "ddp"
    log = run_ddp([*common_args(data_file, ddp), "--batch_size=4", ga], ddp)
    assert log.count("训练完成") == 1, "只应由主进程打印摘要"
    assert_same_run(ddp, ref)
    state = json.loads((ddp / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["world_size"] == 2 and state["step"] == STEPS


def test_resume_across_world_sizes(data_file: Path, single_ref: Path, tmp_path: Path) -> None:
    """单进程 → 2 进程 DDP → 单进程，同一个输出目录、同一个检查点格式；拼起来等于不中断的运行。"""
    from safetensors.numpy import load_file

    out = tmp_path / "chain"
    args = common_args(data_file, out)
    run_single([*args, "--batch_size=8", "--stop_at=7"])
    assert json.loads((out / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))["step"] == 7
    log = run_ddp([*args, "--batch_size=4", "--stop_at=14"], out)
    assert "已完成 7 步" in log
    state = json.loads((out / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["step"] == 14 and state["world_size"] == 2
    rng = load_file(str(out / "ckpt_last" / "rng.safetensors"))  # 每个进程的随机数状态都保存了
    assert {"torch_cpu", "torch_cpu.rank1"} <= rng.keys()
    assert not np.array_equal(rng["torch_cpu"], rng["torch_cpu.rank1"]), "各进程的种子应当不同"
    run_single([*args, "--batch_size=8"])
    assert_same_run(out, single_ref)


def test_ddp_resume_restores_each_rank_rng(data_file: Path, tmp_path: Path) -> None:
    """dropout > 0：DDP 停下再由 DDP 续训，与不中断的 DDP 运行逐位相同（每个进程恢复自己的随机数状态）。"""
    def args(out: Path) -> list[str]:
        return [*common_args(data_file, out), "--batch_size=4", "--drop_rate=0.2", "--max_steps=12"]

    full, split = tmp_path / "full", tmp_path / "split"
    run_ddp(args(full), full)
    run_ddp([*args(split), "--stop_at=6"], split)
    log = run_ddp(args(split), split)
    assert "已完成 6 步" in log and "随机数状态无法沿用" not in log
    a, b = records(split), records(full)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert a == b, "续训后的记录应与不中断的运行完全相同"
    wa, wb = weights(split), weights(full)
    for k in wb:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_resume_rejects_different_global_batch(data_file: Path, single_ref: Path, tmp_path: Path) -> None:
    """进程数变了而 batch_size 没跟着变：全局批次不同，续训应报错并说明原因。"""
    from llmcore.trainer import check_resume_compatible

    state = json.loads((single_ref / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
    saved = state["train_config"]
    from llmcore.config import GPTConfig

    cfg = GPTConfig.preset("tiny")
    check_resume_compatible(saved, {**saved, "batch_size": 4}, cfg, cfg, saved_world=1, world=2)
    with pytest.raises(ValueError, match="全局批次"):
        check_resume_compatible(saved, saved, cfg, cfg, saved_world=1, world=2)


def test_crash_of_one_rank_ends_job(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "fault"
    args = [*common_args(data_file, out), "--batch_size=4", "--max_steps=1000"]
    with Torchrun(args, out, env={"LLMZH_FAULT_RANK": "1", "LLMZH_FAULT_STEP": "3"}) as tr:
        rc, seconds = tr.wait(timeout=90)
        log = tr.output()
        left = wait_gone(tr.marker)
    assert rc != 0
    assert seconds < 60, f"一个进程崩溃后 torchrun 用了 {seconds:.0f} 秒才结束"
    assert "InjectedFault" in log and "进程 1 在第 3 步故意出错" in log
    assert "异常退出" in log
    assert not left, f"遗留进程：{left}"
    steps = [r["step"] for r in records(out) if r["type"] == "train"]
    assert steps == [1, 2], steps


def test_sigint_stops_all_ranks_at_same_step(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "sigint"
    args = [*common_args(data_file, out), "--batch_size=4", "--max_steps=100000"]
    metrics = out / "metrics.jsonl"
    with Torchrun(args, out) as tr:
        assert tr.proc is not None
        deadline = time.monotonic() + 60
        while not (metrics.is_file() and '"train"' in metrics.read_text(encoding="utf-8")):
            if tr.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"训练没有开始：\n{tr.output()[-4000:]}")
            time.sleep(0.05)
        tr.proc.send_signal(signal.SIGINT)
        rc, _ = tr.wait(timeout=60)
        seconds = time.monotonic() - tr.t0
        log = tr.output()
        left = wait_gone(tr.marker)
    assert rc != 0  # torchrun 收到信号时以非零状态退出
    assert not left, f"遗留进程：{left}"
    assert "SIGKILL" not in log, "进程没有在 torchrun 的关闭时限内自己退出"
    assert "[rank0]" not in log and "[rank1]" not in log, f"进程不应报错：\n{log[-3000:]}"
    state = json.loads((out / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
    k = state["step"]
    assert k >= 1 and state["world_size"] == 2
    assert f"已在第 {k} 步保存检查点" in log, log[-3000:]
    assert f"[进程 1/2] 在第 {k} 步停下" in log, log[-3000:]
    assert [r["step"] for r in records(out) if r["type"] == "train"][-1] == k
    assert seconds < 60


def test_divergence_stops_all_ranks_and_is_reported_once(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    args = [*common_args(data_file, out), "--batch_size=4", "--max_steps=50", "--lr=1e9", "--min_lr=1e9",
            "--grad_clip=0", "--warmup_steps=0"]
    with Torchrun(args, out) as tr:
        rc, seconds = tr.wait(timeout=90)
        log = tr.output()
        left = wait_gone(tr.marker)
    assert rc != 0
    assert not left, f"遗留进程：{left}"
    assert log.count("训练发散") == 1, log[-3000:]  # 只有主进程打印
    assert seconds < 60
