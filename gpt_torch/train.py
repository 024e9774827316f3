"""PyTorch 轨道的训练：PyTorch 训练后端 + ``train(tcfg)`` 入口，也是 torchrun 的入口。

    python -m gpt_torch train [--key=value ...]                   # 单进程（CPU / 单 GPU）
    torchrun --nproc_per_node=N -m gpt_torch.train [--key=value ...]   # DDP

训练循环在 llmcore/trainer.py（两条轨道共用）；这里实现框架相关的部分：
设备选择、bf16 autocast、fused AdamW、可选的 torch.compile、DDP 的梯度同步与进程间归约。
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llmcore.config import GPTConfig, TrainConfig, build_model_config
from llmcore.errors import DeviceError
from llmcore.trainer import TrainData, Trainer, TrainingDiverged, TrainingInterrupted, TrainResult
from llmcore.weight_init import decay_mask, init_arrays

from .ddp import DistInfo, cleanup_distributed, init_distributed, unwrap
from .generate import generate
from .model import GPTModel


def resolve_device(name: str) -> torch.device:
    """auto：有 CUDA 用 CUDA，其次 MPS，否则 CPU；请求的设备不存在时给出明确的错误。"""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"未知的设备 {name!r}；可选：auto、cpu、cuda、cuda:N、mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"请求的设备 {name!r} 不可用：本机没有可用的 CUDA GPU（可用 --device=cpu 或 --device=auto）")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"请求的设备 {name!r} 不存在：本机只有 {torch.cuda.device_count()} 块 GPU（编号从 0 开始）")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"请求的设备 {name!r} 不可用：本机没有 Apple MPS（可用 --device=cpu 或 --device=auto）")
    return dev


def fault_from_env() -> tuple[int, int] | None:
    """测试钩子（只供测试使用）：LLMZH_FAULT_RANK=r 与 LLMZH_FAULT_STEP=n 让第 r 个进程在第 n 步（从 1 数）抛出异常，
    用来检验“一个进程崩溃时整个任务报错退出而不是挂住”。两个变量都设置时才生效。"""
    rank, step = os.environ.get("LLMZH_FAULT_RANK"), os.environ.get("LLMZH_FAULT_STEP")
    if rank is None or step is None:
        return None
    return int(rank), int(step)


class InjectedFault(RuntimeError):
    """测试钩子注入的故障。"""


class TorchBackend:
    """PyTorch 训练后端；dist.enabled 时是 DDP 中的一个进程。"""

    track = "torch"

    def __init__(self, cfg: GPTConfig, tcfg: TrainConfig, dist_info: DistInfo | None = None) -> None:
        self.cfg, self.tcfg = cfg, tcfg
        self.dist = dist_info or DistInfo()
        self.rank, self.world_size, self.is_main = self.dist.rank, self.dist.world_size, self.dist.is_main
        self.device = resolve_device(tcfg.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.dtype = torch.float64 if tcfg.dtype == "float64" else torch.float32
        amp = tcfg.amp if tcfg.amp != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if amp == "bf16"
            else contextlib.nullcontext()
        )
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(tcfg.seed + self.rank)  # 每个进程的 dropout 随机数不同
        model = GPTModel(cfg, attn_impl="sdpa")
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        model.load_arrays(init_arrays(shapes, cfg, tcfg.seed, tcfg.init, tcfg.dtype))  # 与 NumPy 轨道相同的初始权重
        model.to(device=self.device, dtype=self.dtype)
        model.train()
        self.raw = model
        named = list(model.named_parameters())
        mask = decay_mask({n: tuple(p.shape) for n, p in named}, tcfg.decay_all)
        groups = [
            {"params": [p for n, p in named if mask[n]], "weight_decay": tcfg.weight_decay},
            {"params": [p for n, p in named if not mask[n]], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        fused = self.device.type == "cuda"
        self.opt = torch.optim.AdamW(groups, lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=1e-8, fused=fused)
        by_id = {id(p): n for n, p in named}
        self._ordered = [(by_id[id(p)], p) for g in self.opt.param_groups for p in g["params"]]
        self._updates = 0  # 已做的优化器更新次数（测试钩子用）
        self._fault = fault_from_env()
        self.model: torch.nn.Module = model
        if tcfg.compile:
            self.model = torch.compile(self.model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # 缓冲区只有常量因果掩码，不必每次前向都广播（新版 torch 把参数改名为 forward_sync_buffers）
            no_buf = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
                else "broadcast_buffers"
            self.model = DDP(self.model, device_ids=ids, **{no_buf: False})

    # -------------------------------------------------------- 训练
    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.long).to(self.device, non_blocking=True)

    def forward_backward(self, x: np.ndarray, y: np.ndarray, scale: float, sync: bool = True) -> float:
        """前向 + 反向。梯度累积的非最后一步在 no_sync() 里做：DDP 只在最后一步同步梯度。"""
        if self._fault is not None and self._fault == (self.rank, self._updates + 1):
            step = self._updates + 1
            raise InjectedFault(f"测试钩子：进程 {self.rank} 在第 {step} 步故意出错（LLMZH_FAULT_RANK/STEP）")
        xt, yt = self._tensor(x), self._tensor(y)
        no_sync = self.dist.enabled and not sync
        ctx = self.model.no_sync() if no_sync else contextlib.nullcontext()
        with ctx:
            with self.autocast:
                logits = self.model(xt)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).to(self.dtype), yt.flatten())
            (loss * scale if scale != 1.0 else loss).backward()
        value = loss.detach()
        if self.dist.enabled:  # 记录的是全局批次的平均损失（各进程的批次一样大）
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
            value = value / self.world_size
        return float(value.item())

    def clip_grad_norm(self, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(self.raw.parameters(), max_norm).item())

    def optimizer_step(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self._updates += 1

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_loss(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """每个（全局）批次各进程取自己的一段行，再把 (损失和, 词元数) 归约到一起。"""
        self.raw.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for xb, yb in batches:
            x = np.array_split(xb, self.world_size)[self.rank]
            y = np.array_split(yb, self.world_size)[self.rank]
            if len(y) == 0:
                continue
            with self.autocast:
                logits = self.raw(self._tensor(x))
            loss = F.cross_entropy(logits.flatten(0, 1).to(self.dtype), self._tensor(y).flatten(), reduction="sum")
            total[0] += loss.double()
            total[1] += y.size
        if self.dist.enabled:
            torch.distributed.all_reduce(total)
        self.raw.train()
        return float(total[0] / total[1].clamp(min=1))

    def sample(self, prompt: np.ndarray, max_new_tokens: int, temperature: float, top_k: int, seed: int) -> list[int]:
        out = generate(self.raw, prompt, max_new_tokens, temperature=temperature, top_k=top_k or None, seed=seed)
        return out[0, prompt.shape[1] :].tolist()

    # -------------------------------------------------------- 状态（与 NumPy 轨道同一格式）
    def model_arrays(self) -> dict[str, np.ndarray]:
        return unwrap(self.model).state_arrays()

    def optim_arrays(self) -> tuple[dict[str, np.ndarray], int]:
        out: dict[str, np.ndarray] = {}
        step = 0
        for name, p in self._ordered:
            st = self.opt.state.get(p)
            if not st:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"{name}.{key}"] = st[key].detach().to(self.dtype).cpu().numpy()
            step = int(st["step"])
        return out, step

    def load_state(self, model: dict[str, np.ndarray], optim: dict[str, np.ndarray], optim_step: int) -> None:
        self.raw.load_arrays(model)
        self.opt.state.clear()
        fused = self.device.type == "cuda"
        for name, p in self._ordered:
            if f"{name}.exp_avg" not in optim:
                continue
            step_dev = p.device if fused else torch.device("cpu")
            self.opt.state[p] = {
                "step": torch.tensor(float(optim_step), dtype=torch.float32, device=step_dev),
                "exp_avg": torch.as_tensor(np.asarray(optim[f"{name}.exp_avg"])).to(p.device, p.dtype),
                "exp_avg_sq": torch.as_tensor(np.asarray(optim[f"{name}.exp_avg_sq"])).to(p.device, p.dtype),
            }

    def rng_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """随机数状态。多进程时收集每个进程的状态（集合通信，所有进程都要调用）：
        第 0 个进程的存为 "torch_cpu"（与单进程同名），第 r 个进程的存为 "torch_cpu.rank{r}"。"""
        own = {"torch_cpu": torch.get_rng_state().numpy()}
        if self.device.type == "cuda":
            own["torch_cuda"] = torch.cuda.get_rng_state(self.device).numpy()
        if not self.dist.enabled:
            return {}, own
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, own)
        arrays = {_rng_key(k, r): v for r, st in enumerate(gathered) for k, v in st.items()}
        return {}, arrays

    def set_rng_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        cpu, cuda = _rng_key("torch_cpu", self.rank), _rng_key("torch_cuda", self.rank)
        if cpu in arrays:
            torch.set_rng_state(torch.as_tensor(arrays[cpu], dtype=torch.uint8))
        if cuda in arrays and self.device.type == "cuda":
            torch.cuda.set_rng_state(torch.as_tensor(arrays[cuda], dtype=torch.uint8), self.device)

    def barrier(self) -> None:
        if self.dist.enabled:
            torch.distributed.barrier()

    def agree(self, flag: bool) -> bool:
        """任一进程为真则全体为真（如某个进程收到了 SIGINT），保证所有进程在同一步停下。"""
        if not self.dist.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)


def _rng_key(name: str, rank: int) -> str:
    return name if rank == 0 else f"{name}.rank{rank}"


def train(
    tcfg: TrainConfig, model_overrides: dict[str, Any] | None = None, data: TrainData | None = None
) -> TrainResult:
    """按配置训练（可续训）。由 torchrun 启动时自动进入 DDP 模式；结束、出错或中断时都会清理进程组。"""
    from llmcore.prepare import prepare_data
    from llmcore.train_state import LAST, find_checkpoint

    device = resolve_device(tcfg.device)
    dist_info = init_distributed(device.type)
    try:
        resuming = tcfg.resume != "never" and find_checkpoint(tcfg.out_dir, LAST) is not None
        if data is None:
            if dist_info.is_main:
                data = prepare_data(tcfg, reuse_tokenizer=resuming)
            if dist_info.enabled:
                torch.distributed.barrier()
            if not dist_info.is_main:
                data = prepare_data(tcfg, write=False, reuse_tokenizer=True)
        assert data is not None
        cfg = build_model_config(tcfg, model_overrides or {}, data.tokenizer.vocab_size)
        backend = TorchBackend(cfg, tcfg, dist_info)
        trainer = Trainer(tcfg, cfg, backend, data)
        try:
            return trainer.run()
        except TrainingInterrupted:
            if dist_info.enabled and not dist_info.is_main:  # 主进程会打印详情；其余进程只报自己停在哪一步
                print(f"[进程 {dist_info.rank}/{dist_info.world_size}] 在第 {trainer.step} 步停下", file=sys.stderr)
            raise
    except (TrainingInterrupted, TrainingDiverged):
        raise
    except BaseException as e:
        if dist_info.enabled:
            print(
                f"[进程 {dist_info.rank}/{dist_info.world_size}] 异常退出（{type(e).__name__}）；"
                "多进程训练中一个进程出错，其余进程会在通信时报错或被 torchrun 终止——"
                "请先看最早出错的那个进程（torchrun 报告里的 Root Cause）",
                file=sys.stderr,
            )
        raise
    finally:
        cleanup_distributed()


def main(argv: list[str] | None = None) -> int:
    """torchrun 的入口：参数与 python -m gpt_torch train 相同。"""
    from .__main__ import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
