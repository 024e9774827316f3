"""训练检查点：模型 + 优化器状态 + 步数 + 随机数状态 + 数据位置，两条轨道共用一个格式。

目录布局（在 config.json / model.safetensors 之外）::

    ckpt_last/
      optimizer.safetensors  每个参数的 AdamW 动量："{参数名}.exp_avg"、"{参数名}.exp_avg_sq"
      rng.safetensors        框架自己的随机数状态（如 torch 的 ByteTensor），可选
      trainer_state.json     步数、数据位置、最优验证损失、训练配置、NumPy 随机数状态……
      tokenizer.json         分词器（检查点因此可以单独拿去生成）

整个目录先写到 ``.NAME.tmp``，写完再换名：旧目录先改名为 ``.NAME.old``，新目录就位后删除旧的。
任何时刻都至少有一个完整的检查点；读取时若 NAME 不完整，就退回 ``.NAME.old``。
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_arrays,
    load_model_state,
    save_arrays,
    save_model_state,
)
from .config import GPTConfig

LAST, BEST = "ckpt_last", "ckpt_best"
STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"
RNG_NAME = "rng.safetensors"
TOKENIZER_NAME = "tokenizer.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_training_checkpoint(
    out_dir: str | Path,
    name: str,
    model_arrays: Mapping[str, np.ndarray],
    cfg: GPTConfig,
    optim_arrays: Mapping[str, np.ndarray],
    state: dict[str, Any],
    rng_arrays: Mapping[str, np.ndarray] | None = None,
    tokenizer_file: str | Path | None = None,
) -> Path:
    """原子地写出一个完整的训练检查点目录 out_dir/name，返回它的路径。"""
    out = Path(out_dir)
    final, tmp, old = out / name, out / f".{name}.tmp", out / f".{name}.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_state(tmp, model_arrays, cfg, extra={"step": state.get("step")})
    save_arrays(tmp / OPTIM_NAME, optim_arrays)
    if rng_arrays:
        save_arrays(tmp / RNG_NAME, rng_arrays)
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, tmp / TOKENIZER_NAME)
    atomic_write_json(tmp / STATE_NAME, state)  # 最后写：它的存在表示目录完整
    _fsync_dir(tmp)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    _fsync_dir(out)
    if old.exists():
        shutil.rmtree(old)
    return final


def find_checkpoint(out_dir: str | Path, name: str = LAST) -> Path | None:
    """找到 out_dir 下名为 name 的完整检查点；换名中途崩溃时退回旧的那份。"""
    out = Path(out_dir)
    for cand in (out / name, out / f".{name}.old"):
        if (cand / STATE_NAME).is_file():
            return cand
    return None


def read_training_checkpoint(
    directory: str | Path,
) -> tuple[dict[str, np.ndarray], GPTConfig, dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """读取训练检查点：(模型参数, GPTConfig, 优化器数组, trainer_state, 随机数数组)。"""
    import json

    d = Path(directory)
    sp = d / STATE_NAME
    if not sp.is_file():
        raise CheckpointError(f"{d} 不是完整的训练检查点：缺少 {STATE_NAME}（可能是写到一半的目录）")
    try:
        state = json.loads(sp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{sp} 已损坏：{e}") from None
    model_arrays, cfg, _ = load_model_state(d)
    optim = load_arrays(d / OPTIM_NAME) if (d / OPTIM_NAME).exists() else {}
    rng = load_arrays(d / RNG_NAME) if (d / RNG_NAME).exists() else {}
    return model_arrays, cfg, optim, state, rng


def check_writable(out_dir: str | Path, need_bytes: int) -> None:
    """训练开始前确认输出目录可写、磁盘空间够放检查点，否则给出明确的错误。"""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OSError(f"输出目录 {out} 不可写：{e.strerror or e}") from None
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise OSError(
            f"输出目录 {out} 所在磁盘只剩 {free / 2**20:.1f} MiB，而写检查点大约需要 {need_bytes / 2**20:.1f} MiB"
        )
