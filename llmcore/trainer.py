"""与框架无关的训练循环：两条轨道（以及 DDP 下的每个进程）都跑这同一段代码。

框架相关的部分（前向、反向、优化器、随机数）由一个“后端” (Backend) 对象提供，
见 gpt_numpy/train.py（tinytensor）与 gpt_torch/train.py（PyTorch）。这里负责：

- 学习率调度（预热 + 余弦）、梯度累积、梯度裁剪；
- 按步数确定的数据批次（续训只需记住步数，见 batches.py）；
- 定期在固定批次上评估训练/验证损失，记录 metrics.jsonl，画 loss.png，写 samples.txt；
- 检查点：last 与 best，原子写入；Ctrl-C (SIGINT) 与 SIGTERM 时先保存再退出；
- 损失变成 NaN/inf 时立即停止，保留上一个正常的检查点。
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .batches import StepBatches, eval_batches
from .checkpoint import CheckpointError
from .config import GPTConfig, TrainConfig
from .errors import EXIT_DIVERGED, DataError, LLMError, UsageError
from .schedule import warmup_cosine_lr
from .train_state import (
    BEST,
    LAST,
    OPTIM_NAME,
    TOKENIZER_NAME,
    check_optimizer_state,
    check_writable,
    find_checkpoint,
    read_training_checkpoint,
    write_training_checkpoint,
)

# 续训时允许改变的训练字段（其余字段必须与检查点一致）
RESUME_MUTABLE = {
    "max_steps", "epochs", "eval_interval", "log_interval", "save_interval", "progress", "max_time", "out_dir",
    "resume", "sample_prompt", "sample_tokens", "sample_temperature", "sample_top_k", "device", "compile", "amp",
    "eval_batches", "stop_at", "weights_only", "overwrite",
}


class TrainingInterrupted(Exception):
    """收到 SIGINT/SIGTERM 或到达 max_time：检查点已保存。"""

    def __init__(self, message: str, exit_code: int, is_main: bool = True) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.is_main = is_main  # 多进程时只有主进程打印


class TrainingDiverged(LLMError, RuntimeError):
    """损失变成 NaN 或 inf。"""

    exit_code = EXIT_DIVERGED

    def __init__(self, message: str, is_main: bool = True) -> None:
        super().__init__(message)
        self.is_main = is_main  # 多进程时每个进程都会发现发散，只有主进程打印


class Backend(Protocol):
    """训练后端需要提供的接口（框架相关的全部操作）。"""

    track: str
    rank: int
    world_size: int
    is_main: bool

    def forward_backward(self, x: np.ndarray, y: np.ndarray, scale: float, sync: bool) -> float: ...
    def clip_grad_norm(self, max_norm: float) -> float: ...
    def optimizer_step(self, lr: float) -> None: ...
    def zero_grad(self) -> None: ...
    def eval_loss(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> float: ...
    def sample(
        self, prompt: np.ndarray, max_new_tokens: int, temperature: float, top_k: int, seed: int
    ) -> list[int]: ...
    def model_arrays(self) -> dict[str, np.ndarray]: ...
    def optim_arrays(self) -> tuple[dict[str, np.ndarray], int]: ...
    def load_state(self, model: dict[str, np.ndarray], optim: dict[str, np.ndarray], optim_step: int) -> None: ...
    def rng_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...
    def set_rng_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...
    def barrier(self) -> None: ...
    def agree(self, flag: bool) -> bool: ...


@dataclass
class TrainData:
    """准备好的数据：分词器、训练/验证词元数组与分词器文件路径。"""

    tokenizer: Any
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    tokenizer_file: Path


@dataclass
class TrainResult:
    steps: int
    train_loss: float | None
    val_loss: float | None
    best_val: float | None
    seconds: float
    tokens_per_sec: float
    sample: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True  # 多进程时只有主进程打印摘要


def lr_at(step: int, tcfg: TrainConfig, total_steps: int) -> float:
    """第 step 次更新（从 0 数）使用的学习率。"""
    warmup = min(tcfg.warmup_steps, total_steps)  # 总步数比预热还短时，预热占满全程
    if tcfg.schedule == "constant":
        if warmup and step < warmup:
            return tcfg.lr * (step + 1) / warmup
        return tcfg.lr
    return warmup_cosine_lr(step, max_lr=tcfg.lr, warmup_steps=warmup, total_steps=total_steps, min_lr=tcfg.min_lr)


def total_steps_for(tcfg: TrainConfig, batches: StepBatches, world_size: int) -> int:
    """总更新次数：epochs > 0 时为“轮数 × 每轮批次数 / 梯度累积”，否则为 max_steps。"""
    if tcfg.epochs > 0:
        per_epoch = batches.batches_per_epoch if batches.mode == "epoch" else max(
            1, len(batches.tokens) // (tcfg.batch_size * world_size * batches.context_length)
        )
        return max(1, tcfg.epochs * per_epoch // tcfg.grad_accum)
    return tcfg.max_steps


def check_resume_compatible(
    saved: dict[str, Any], current: dict[str, Any], saved_model: GPTConfig, model: GPTConfig,
    saved_world: int = 1, world: int = 1,
) -> None:
    """续训时配置必须一致（少数字段除外）；不一致时报出字段名与两边的值。

    进程数可以变：比较的是全局批次 batch_size × 进程数（1 个进程 × 2B 可由 2 个进程 × B 接着训）。
    """
    for k, v in model.to_dict().items():
        old = saved_model.to_dict().get(k)
        if old != v:
            raise UsageError(
                f"续训失败：模型字段 {k} 与检查点不一致（检查点为 {old!r}，当前为 {v!r}）；"
                "如要从头训练请加 --resume=never --overwrite=true（会删除旧的运行），或换一个 --out_dir"
            )
    if "batch_size" in saved:
        old_global, new_global = saved["batch_size"] * saved_world, current["batch_size"] * world
        if old_global != new_global:
            raise UsageError(
                f"续训失败：全局批次 batch_size × 进程数与检查点不一致（检查点为 {saved['batch_size']} × "
                f"{saved_world} = {old_global}，当前为 {current['batch_size']} × {world} = {new_global}）；"
                "改变进程数时请相应调整 --batch_size，或加 --resume=never 从头训练"
            )
    for k, v in current.items():
        if k in RESUME_MUTABLE or k == "batch_size" or k not in saved:
            continue
        if saved[k] != v:
            raise UsageError(
                f"续训失败：训练字段 {k} 与检查点不一致（检查点为 {saved[k]!r}，当前为 {v!r}）；"
                "如要从头训练请加 --resume=never --overwrite=true（会删除旧的运行），或换一个 --out_dir"
            )


class Trainer:
    """训练循环。用法：Trainer(tcfg, model_cfg, backend, data).run()。"""

    def __init__(self, tcfg: TrainConfig, model_cfg: GPTConfig, backend: Backend, data: TrainData) -> None:
        self.tcfg, self.model_cfg, self.backend, self.data = tcfg, model_cfg, backend, data
        self.out = Path(tcfg.out_dir)
        try:
            world = backend.world_size
            self.batches = StepBatches(
                data.train_tokens, tcfg.batch_size * world, model_cfg.context_length, tcfg.sampling, tcfg.seed,
                tcfg.stride,
            )
            self.total_steps = total_steps_for(tcfg, self.batches, world)
            t = model_cfg.context_length
            stride = tcfg.stride or t if tcfg.sampling == "epoch" else 0
            # 评估批次按全局批次大小切分（各进程再各取一段），所以评估集与进程数无关
            gb = tcfg.batch_size * world
            # epoch 模式（原书）：训练集也用训练时的对齐窗口评估，与原书的 calc_loss_loader 相同。记住了训练文本的
            # 大模型在错开位置的窗口上损失会高得多（绝对位置嵌入），随机起点会让“训练损失”与原书不可比。
            if stride:
                self.eval_train = eval_batches(data.train_tokens, tcfg.eval_batches, gb, t, stride=stride)
            else:
                self.eval_train = eval_batches(data.train_tokens, tcfg.eval_batches, gb, t, seed=tcfg.seed + 1)
            self.eval_val = eval_batches(data.val_tokens, tcfg.eval_batches, gb, t, stride=stride)
        except ValueError as e:  # 数据太短，切不出一个窗口
            raise DataError(f"{e}（数据 {tcfg.data!r}）；请换更长的文本或减小 --context_length") from None
        self.step = 0
        self.best_val: float | None = None
        self.history: list[dict[str, Any]] = []
        self._stop: tuple[str, int] | None = None
        self._signalled = False  # 本进程自己收到过 SIGINT/SIGTERM
        self._last_ckpt: Path | None = None

    # ------------------------------------------------------------ 信号
    def _install_signals(self) -> dict[int, Any]:
        old: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            if self._signalled and signum == signal.SIGINT:
                raise KeyboardInterrupt  # 本进程第二次收到 Ctrl-C：立刻退出
            self._signalled = True
            name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
            if self._stop is None or self._stop[0] == "peer":
                self._stop = (name, 128 + signum)
            if self.backend.is_main:
                print(f"\n收到 {name}：完成当前一步后保存检查点并退出（再按一次 Ctrl-C 立即退出）", file=sys.stderr)

        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, handler)
        except ValueError:  # 不在主线程（如在某些笔记本环境中）：不接管信号
            pass
        return old

    @staticmethod
    def _restore_signals(old: dict[int, Any]) -> None:
        for s, h in old.items():
            signal.signal(s, h)

    # ------------------------------------------------------------ 检查点
    def _trainer_state(self, rng_json: dict[str, Any], opt_step: int) -> dict[str, Any]:
        return {
            "step": self.step,
            "optim_step": opt_step,
            "data_index": self.step * self.tcfg.grad_accum,  # 下一个要用的全局批次编号
            "best_val": self.best_val,
            "track": self.backend.track,
            "world_size": self.backend.world_size,
            "train_config": self.tcfg.to_dict(),
            "rng": rng_json,
        }

    def save(self, name: str = LAST) -> Path | None:
        """保存检查点（只在主进程写文件；所有进程都要调用，以便收集状态并同步）。"""
        rng_json, rng_arrays = self.backend.rng_state()  # 多进程时是集合通信：每个进程都要调用
        path = None
        if self.backend.is_main:
            optim, opt_step = self.backend.optim_arrays()
            model = self.backend.model_arrays()
            path = write_training_checkpoint(
                self.out, name, model, self.model_cfg, optim, self._trainer_state(rng_json, opt_step), rng_arrays,
                self.data.tokenizer_file,
            )
            if name == LAST:
                self._last_ckpt = path
        self.backend.barrier()
        return path

    def try_resume(self) -> bool:
        """按 tcfg.resume 决定是否从 out_dir 的 last 检查点继续。"""
        mode = self.tcfg.resume
        if mode == "never":
            return False
        ckpt = find_checkpoint(self.out, LAST)
        if ckpt is None:
            if mode == "must":
                raise CheckpointError(f"--resume=must，但 {self.out} 下没有可用的检查点（{LAST}）")
            return False
        weights_only = self.tcfg.weights_only
        model, saved_cfg, optim, state, rng_arrays = read_training_checkpoint(ckpt, weights_only=weights_only)
        check_resume_compatible(
            state.get("train_config", {}), self.tcfg.to_dict(), saved_cfg, self.model_cfg,
            int(state.get("world_size", 1)), self.backend.world_size,
        )
        optim_step = int(state.get("optim_step", state["step"]))
        if weights_only:
            optim, optim_step = {}, 0
            if self.backend.is_main:
                print(f"--weights_only=true：只载入 {ckpt} 的模型权重，优化器状态从头开始", file=sys.stderr)
        else:
            check_optimizer_state(optim, model, saved_cfg, optim_step, ckpt / OPTIM_NAME)
        self.backend.load_state(model, optim, optim_step)
        if state.get("track") == self.backend.track and state.get("world_size", 1) == self.backend.world_size:
            self.backend.set_rng_state(state.get("rng", {}), rng_arrays)
        elif self.backend.is_main:
            print(
                f"提示：检查点来自 {state.get('track')} 轨道（{state.get('world_size', 1)} 个进程），"
                "随机数状态无法沿用；"
                "drop_rate > 0 时 dropout 掩码会与不中断的训练不同",
                file=sys.stderr,
            )
        self.step = int(state["step"])
        self.best_val = state.get("best_val")
        self._last_ckpt = ckpt
        self._load_history()
        if self.backend.is_main:
            print(f"从 {ckpt} 续训：已完成 {self.step} 步", file=sys.stderr)
        return True

    # ------------------------------------------------------------ 记录
    def _metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def _load_history(self) -> None:
        """续训时读回已有的记录，丢掉检查点之后（会被重跑）的部分。"""
        p = self._metrics_path()
        self.history = []
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("step", 0) <= self.step:
                    self.history.append(rec)
        if self.backend.is_main:
            self._rewrite_metrics()

    def _rewrite_metrics(self) -> None:
        p = self._metrics_path()
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.history), encoding="utf-8")
        tmp.replace(p)

    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.backend.is_main:
            with open(self._metrics_path(), "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def _plot(self) -> None:
        if not self.backend.is_main:
            return
        from .report import plot_losses

        plot_losses(self.history, self.out / "loss.png", tokens_per_step=self.tokens_per_step)

    @property
    def tokens_per_step(self) -> int:
        t = self.tcfg
        return t.batch_size * self.backend.world_size * t.grad_accum * self.model_cfg.context_length

    def sample_text(self) -> str:
        t = self.tcfg
        tok = self.data.tokenizer
        ids = tok.encode(t.sample_prompt) if t.sample_prompt else [tok.eot_id or 0]
        ids = ids[-self.model_cfg.context_length :] or [0]
        out = self.backend.sample(np.asarray([ids]), t.sample_tokens, t.sample_temperature, t.sample_top_k, t.seed)
        return tok.decode(list(ids) + list(out))

    def evaluate(self) -> tuple[float, float]:
        return self.backend.eval_loss(self.eval_train), self.backend.eval_loss(self.eval_val)

    def _eval_and_save(self, elapsed: float) -> tuple[float, float]:
        tr, va = self.evaluate()
        rec = {"type": "eval", "step": self.step, "tokens": self.step * self.tokens_per_step,
               "train_loss": tr, "val_loss": va, "time": round(elapsed, 2)}
        self._record(rec)
        improved = self.best_val is None or va < self.best_val
        if improved:
            self.best_val = va
        sample = self.sample_text() if self.backend.is_main else ""
        if self.backend.is_main:
            with open(self.out / "samples.txt", "a", encoding="utf-8") as f:
                f.write(f"== 第 {self.step} 步（验证损失 {va:.4f}）==\n{sample}\n\n")
        self.save(LAST)
        if improved:
            self.save(BEST)
        self._plot()
        return tr, va

    # ------------------------------------------------------------ 主循环
    def run(self) -> TrainResult:
        t = self.tcfg
        be = self.backend
        n_params = sum(int(np.prod(v.shape)) for v in be.model_arrays().values())
        if be.is_main:
            check_writable(self.out, need_bytes=int(n_params * 4 * 3 * 2.2))
        be.barrier()
        resumed = self.try_resume()
        if be.is_main:
            for name in (LAST, BEST):  # 上次写到一半就被打断的临时目录
                shutil.rmtree(self.out / f".{name}.tmp", ignore_errors=True)
            if not resumed:  # 从头开始：记录也从头写，不接在别的运行后面
                for name in ("metrics.jsonl", "samples.txt"):
                    (self.out / name).unlink(missing_ok=True)
        if be.is_main:
            print(
                f"模型参数 {n_params:,} 个；每步 {self.tokens_per_step:,} 个词元；共 {self.total_steps} 步；"
                f"输出目录 {self.out}",
                file=sys.stderr,
            )
        old = self._install_signals()
        start = time.perf_counter()
        bar = None
        if be.is_main and t.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.total_steps, initial=self.step, desc=f"训练[{be.track}]", unit="步", dynamic_ncols=True
            )
        last_train = last_val = None
        interval_tokens, interval_time = 0, 0.0
        tok_per_sec = 0.0
        try:
            if self.step == 0 and not self.history:
                last_train, last_val = self._eval_and_save(0.0)
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                lr = lr_at(self.step, t, self.total_steps)
                be.zero_grad()
                loss_sum = 0.0
                for m in range(t.grad_accum):
                    x, y = self.batches.get(self.step * t.grad_accum + m, be.rank, be.world_size)
                    loss_sum += be.forward_backward(x, y, 1.0 / t.grad_accum, sync=(m == t.grad_accum - 1))
                loss = loss_sum / t.grad_accum
                if be.agree(not math.isfinite(loss)):  # 多进程时所有进程一起停下（任一进程发散即全体停止）
                    where = f"上一个正常的检查点在 {self._last_ckpt}" if self._last_ckpt else "还没有保存过检查点"
                    raise TrainingDiverged(
                        f"第 {self.step + 1} 步的训练损失为 {loss}，训练停止；{where}", is_main=be.is_main
                    )
                gnorm = be.clip_grad_norm(t.grad_clip) if t.grad_clip > 0 else None
                be.optimizer_step(lr)
                self.step += 1
                dt = time.perf_counter() - t0
                interval_tokens += self.tokens_per_step
                interval_time += dt
                if self.step == 1 and be.is_main:
                    print(f"第 1 步耗时 {dt:.2f} 秒（含内核编译与内存分配）", file=sys.stderr)
                if self.step % t.log_interval == 0 or self.step == self.total_steps:
                    tok_per_sec = interval_tokens / max(interval_time, 1e-9)
                    rec = {"type": "train", "step": self.step, "tokens": self.step * self.tokens_per_step,
                           "loss": loss, "lr": lr, "tokens_per_sec": round(tok_per_sec, 1)}
                    if gnorm is not None:
                        rec["grad_norm"] = gnorm
                    self._record(rec)
                    interval_tokens, interval_time = 0, 0.0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_per_sec:,.0f}", refresh=False)
                last_train = loss
                elapsed = time.perf_counter() - start
                if self.step % t.eval_interval == 0 or self.step == self.total_steps:
                    last_train, last_val = self._eval_and_save(elapsed)
                elif t.save_interval and self.step % t.save_interval == 0:
                    self.save(LAST)
                if self._stop is None and t.max_time and elapsed >= t.max_time:
                    self._stop = ("max_time", 0)
                if self._stop is None and t.stop_at and self.step >= t.stop_at and self.step < self.total_steps:
                    self._stop = ("stop_at", 0)
                if be.agree(self._stop is not None):  # 多进程时所有进程在同一步停下
                    self._stop = self._stop or ("peer", 0)  # 是别的进程要求停下（信号或时间上限）
                    self.save(LAST)
                    self._plot()
                    reason, code = self._stop
                    msg = f"已在第 {self.step} 步保存检查点 {self.out / LAST}"
                    if reason == "max_time":
                        msg = f"达到时间上限 {t.max_time:.0f} 秒，" + msg + "；用同样的命令即可继续训练"
                    elif reason == "stop_at":
                        msg = f"按 stop_at={t.stop_at} 暂停，" + msg + "；去掉 --stop_at 再运行即可继续训练"
                    elif reason == "peer":
                        msg = "另一个进程要求停止（收到信号或达到时间上限），" + msg + "；用同样的命令即可继续训练"
                    raise TrainingInterrupted(msg, code, be.is_main)
        finally:
            if bar is not None:
                bar.close()
            self._restore_signals(old)
        seconds = time.perf_counter() - start
        sample = self.sample_text() if be.is_main else ""
        trained = [r for r in self.history if r.get("type") == "train"]
        speeds = [r["tokens_per_sec"] for r in trained if r.get("tokens_per_sec")]
        return TrainResult(
            steps=self.step, train_loss=last_train, val_loss=last_val, best_val=self.best_val, seconds=seconds,
            tokens_per_sec=float(np.median(speeds)) if speeds else 0.0, sample=sample, history=self.history,
            is_main=be.is_main,
        )


__all__ = [
    "Backend", "TOKENIZER_NAME", "TrainData", "TrainResult", "Trainer", "TrainingDiverged", "TrainingInterrupted",
    "lr_at", "total_steps_for",
]
