"""模型检查点：safetensors 权重 + JSON 配置，两条轨道共用同一格式。

目录布局::

    ckpt/
      model.safetensors   参数（键名即两条轨道共同的参数名；权重共享时省略 out_head.weight）
      config.json         {"format": "llm-zh-gpt", "version": 1, "model": GPTConfig 字段, ...附加信息}

只依赖 NumPy、safetensors 与 JSON（不用 pickle）；写文件都先写临时文件再改名（原子写入），
中途崩溃不会留下写了一半的检查点。本模块不导入任何框架；张量与数组的转换由各轨道负责。
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .config import GPTConfig

FORMAT = "llm-zh-gpt"
VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TIED_KEY = "out_head.weight"


class CheckpointError(RuntimeError):
    """检查点缺失、损坏或与模型不匹配。"""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """先写同目录下的临时文件、刷到磁盘，再原子地改名覆盖目标。"""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8"))


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """把若干 NumPy 数组原子地存成一个 safetensors 文件。"""
    from safetensors.numpy import save

    data = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write_bytes(path, save(data, metadata=metadata))


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """读取 safetensors 文件；文件缺失或损坏时报 CheckpointError。"""
    from safetensors.numpy import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"找不到权重文件 {p}")
    try:
        return load_file(str(p))
    except Exception as e:  # safetensors 对损坏文件抛出多种异常
        odd = _unsupported_dtypes(p)
        if odd:
            raise CheckpointError(
                f"权重文件 {p} 含有 NumPy 不支持的数据类型 {', '.join(sorted(odd))}（如 bf16）；"
                "请先转换为 float32（例如在 torch 里 .float() 后重新保存）"
            ) from None
        raise CheckpointError(f"权重文件 {p} 已损坏或不是 safetensors 格式：{e}") from None


_NUMPY_DTYPES = {"F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"}


def _unsupported_dtypes(path: Path) -> set[str]:
    """读 safetensors 的头（8 字节长度 + JSON），返回 NumPy 读不了的数据类型；头本身坏了就返回空集合。"""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100_000_000:
                return set()
            header = json.loads(f.read(n))
        return {v["dtype"] for k, v in header.items() if k != "__metadata__"} - _NUMPY_DTYPES
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def save_model_state(
    directory: str | Path, state: Mapping[str, np.ndarray], cfg: GPTConfig, extra: dict[str, Any] | None = None
) -> Path:
    """保存模型参数与配置到目录（目录不存在就创建）。"""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in state.items() if not (cfg.tie_weights and k == TIED_KEY)}
    save_arrays(d / WEIGHTS_NAME, arrays, metadata={"format": FORMAT})
    atomic_write_json(d / CONFIG_NAME, {"format": FORMAT, "version": VERSION, "model": cfg.to_dict(), **(extra or {})})
    return d


def read_config(directory: str | Path) -> dict[str, Any]:
    """读取检查点目录的 config.json（含 "model" 字段）。"""
    p = Path(directory) / CONFIG_NAME
    if not p.is_file():
        raise CheckpointError(f"{directory} 不是检查点目录：缺少 {CONFIG_NAME}")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} 不是合法的 JSON：{e}") from None
    if meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{p} 不是本项目的模型检查点（format={meta.get('format')!r}）")
    return meta


def load_model_state(directory: str | Path) -> tuple[dict[str, np.ndarray], GPTConfig, dict[str, Any]]:
    """读取检查点，返回 (参数数组, GPTConfig, config.json 全部内容)。"""
    meta = read_config(directory)
    try:
        cfg = GPTConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{Path(directory) / CONFIG_NAME} 中的模型配置无效：{e}") from None
    state = load_arrays(Path(directory) / WEIGHTS_NAME)
    if cfg.tie_weights and TIED_KEY not in state and "tok_emb.weight" in state:
        state[TIED_KEY] = state["tok_emb.weight"]
    return state, cfg, meta


def check_state_shapes(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any], tied: bool = False
) -> None:
    """逐键核对形状与键集合；不一致时报出键名与两边的形状。

    tied=True（权重共享）时 out_head.weight 与 tok_emb.weight 必须相同，否则载入后只会留下其中一个。
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"缺少的键：{missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"多余的键：{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        raise CheckpointError("检查点与模型的参数名不一致，" + "；".join(parts))
    for k, shape in expected.items():
        got = tuple(np.shape(state[k]))
        if got != tuple(shape):
            raise CheckpointError(f"参数 {k!r} 形状不匹配：检查点中为 {got}，模型需要 {tuple(shape)}")
    if tied and TIED_KEY in state and "tok_emb.weight" in state:
        head, emb = state[TIED_KEY], state["tok_emb.weight"]
        if head is not emb and not np.array_equal(_as_numpy(head), _as_numpy(emb)):
            raise CheckpointError(f"模型要求 {TIED_KEY} 与 tok_emb.weight 共享（tie_weights），但检查点中两者的值不同")


def _as_numpy(x: Any) -> np.ndarray:
    """NumPy 数组、tinytensor 或 torch 张量（任意设备）→ NumPy 数组。"""
    if hasattr(x, "cpu"):  # torch 张量：可能在 GPU 上，可能是 bf16
        x = x.detach().cpu().double()
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)
