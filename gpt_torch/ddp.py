"""分布式数据并行 (DDP)：在 torchrun 启动的进程里初始化与清理进程组。

    torchrun --nproc_per_node=N -m gpt_torch.train [--key=value ...]

torchrun 为每个进程设置 RANK、LOCAL_RANK、WORLD_SIZE、MASTER_ADDR、MASTER_PORT；
多机时用 --nnodes 与 --rdzv-* 参数（见 README），这里的代码不用改。
后端：CUDA 上用 nccl，CPU 上用 gloo。进程组设置了超时：某个进程崩溃时，
其余进程在集合通信处等到超时就报错退出，而不是永远挂住。
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """当前进程在分布式训练中的位置。单进程时 rank=0、world_size=1、enabled=False。"""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str, timeout_s: float = 300.0) -> DistInfo:
    """若由 torchrun 启动则初始化进程组（cuda → nccl，其余 → gloo），否则返回单进程信息。"""
    if not launched_by_torchrun():
        return DistInfo()
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if world == 1:
        return DistInfo(rank, local, 1, False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local}，但本机只有 {torch.cuda.device_count()} 块 GPU")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, local, world, True)


def cleanup_distributed() -> None:
    """销毁进程组（正常结束、出错或被中断时都要调用）。"""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # 进程组可能已经因为别的进程失败而损坏
            pass


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """去掉 DDP 的 .module 与 torch.compile 的 _orig_mod 外壳，得到原始模型（保存检查点时用）。"""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
