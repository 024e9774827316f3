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
import sys
from dataclasses import dataclass
from typing import NoReturn

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


_ACTIVE = False  # 本进程是否建立过多进程的进程组


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str, timeout_s: float | None = None) -> DistInfo:
    """若由 torchrun 启动则初始化进程组（cuda → nccl，其余 → gloo），否则返回单进程信息。

    timeout_s：集合通信的超时（秒），缺省读环境变量 LLMZH_DDP_TIMEOUT，再缺省为 300。
    """
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
    if timeout_s is None:
        timeout_s = float(os.environ.get("LLMZH_DDP_TIMEOUT", "300"))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    global _ACTIVE
    _ACTIVE = True
    return DistInfo(rank, local, world, True)


def used_distributed() -> bool:
    """本进程是否（由 torchrun 启动并）建立过多进程的进程组。"""
    return _ACTIVE


def exit_process(code: int) -> NoReturn:
    """多进程训练结束后直接结束进程（os._exit），跳过 Python 解释器的收尾阶段。

    原因：gloo 的后台线程做完一次集合通信后才释放它持有的张量；若这时解释器已经开始关闭，
    释放张量所需的 GIL 拿不到，进程会以 SIGABRT 结束（"terminate called without an active exception"），
    torchrun 便把一次成功的训练报告为失败。调用这里之前，进程组已销毁，检查点与日志都已写完。
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
