"""模型检查点：safetensors 权重 + JSON 配置，两条轨道共用同一格式。

目录布局::

    ckpt/
      model.safetensors   参数（键名即两条轨道共同的参数名；权重共享时省略 out_head.weight）
      config.json         {"format": "llm-zh-gpt", "version": 1, "model": GPTConfig 字段, ...附加信息}
      manifest.json       目录里每个文件的 sha256 与字节数（最后写）；读取时逐个核对

读取时的检查：manifest 中登记的文件必须都在、校验和一致；JSON 按约定的字段与类型检查，出错时报出文件路径；
权重必须是浮点类型、全部有限（没有 NaN/inf）；形状由各轨道的模型按配置核对（check_state_shapes）。

只依赖 NumPy、safetensors 与 JSON（不用 pickle）；写文件都先写临时文件再改名（原子写入），
中途崩溃不会留下写了一半的检查点。本模块不导入任何框架；张量与数组的转换由各轨道负责。
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .config import GPTConfig
from .errors import EXIT_CHECKPOINT, LLMError

FORMAT = "llm-zh-gpt"
VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "llm-zh-manifest"
TIED_KEY = "out_head.weight"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class CheckpointError(LLMError, RuntimeError):
    """检查点缺失、损坏或与模型不匹配。"""

    exit_code = EXIT_CHECKPOINT


# ---------------------------------------------------------------------------- 清单（每个文件的 sha256）
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: str | Path, names: Iterable[str]) -> None:
    """为目录里的若干文件写 manifest.json（sha256 与字节数）；应在这些文件都写完之后调用。"""
    d = Path(directory)
    files = {n: {"sha256": file_sha256(d / n), "size": (d / n).stat().st_size} for n in sorted(set(names))}
    atomic_write_json(d / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "version": 1, "files": files})


def read_manifest(directory: str | Path) -> dict[str, dict[str, Any]] | None:
    """读取并按约定检查 manifest.json；没有清单（旧版本写的检查点）时返回 None。"""
    p = Path(directory) / MANIFEST_NAME
    if not p.is_file():
        return None
    meta = read_json_object(p)
    files = meta.get("files")
    if meta.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        raise CheckpointError(f"{p} 不是本项目的检查点清单（应有 format={MANIFEST_FORMAT!r} 与 files 对象）")
    for name, entry in files.items():
        if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
            raise CheckpointError(f"{p} 登记了不合法的文件名 {name!r}：清单只能列出检查点目录里的文件，不能含路径")
        ok = isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and \
            re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None and _is_nonneg_int(entry.get("size"))
        if not ok:
            raise CheckpointError(f"{p} 中 {name!r} 的条目应为 {{\"sha256\": 64 位十六进制, \"size\": 非负整数}}")
    return files


def verify_files(directory: str | Path, names: Iterable[str] | None = None) -> bool:
    """按 manifest.json 核对文件（names 为 None 时核对清单里的全部文件，否则只核对其中登记过的这些）。

    登记了却不存在、字节数或 sha256 不符时报 CheckpointError（说出文件名）；没有清单时返回 False。
    """
    d = Path(directory)
    files = read_manifest(d)
    if files is None:
        return False
    wanted = list(files) if names is None else [n for n in names if n in files]
    for n in wanted:
        p = d / n
        if not p.is_file():
            raise CheckpointError(f"检查点缺少文件 {p}（{MANIFEST_NAME} 中登记了它）：检查点不完整")
        size = p.stat().st_size
        if size != files[n]["size"]:
            raise CheckpointError(
                f"{p} 有 {size} 字节，{MANIFEST_NAME} 记录的是 {files[n]['size']} 字节：文件被截断或改动过，已损坏"
            )
        if file_sha256(p) != files[n]["sha256"]:
            raise CheckpointError(f"{p} 的 sha256 与 {MANIFEST_NAME} 不符：文件已损坏或被改动过")
    return True


def _is_nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_json_object(path: str | Path) -> dict[str, Any]:
    """读取顶层为对象的 JSON 文件；缺失、不是 UTF-8、不是合法 JSON 或顶层不是对象时报 CheckpointError（带路径）。"""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"缺少 {p}")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{p} 不是 UTF-8 文本，已损坏") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} 不是合法的 JSON：{e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} 的顶层应是 JSON 对象，实际是 {type(obj).__name__}")
    return obj


def check_arrays(arrays: Mapping[str, np.ndarray], where: str | Path, what: str = "参数") -> None:
    """每个数组都必须是浮点类型且全部有限；否则报出文件、键名与问题。"""
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype.kind != "f":
            raise CheckpointError(f"{where} 中{what} {k!r} 的类型是 {a.dtype}，应为浮点数（float16/float32/float64）")
        if not np.isfinite(a).all():
            n = int(a.size - np.isfinite(a).sum())
            raise CheckpointError(f"{where} 中{what} {k!r} 含 {n} 个 NaN 或 inf：检查点已损坏，不能使用")


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
    directory: str | Path, state: Mapping[str, np.ndarray], cfg: GPTConfig, extra: dict[str, Any] | None = None,
    manifest: bool = True,
) -> Path:
    """保存模型参数与配置到目录（目录不存在就创建），最后写 manifest.json。"""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in state.items() if not (cfg.tie_weights and k == TIED_KEY)}
    save_arrays(d / WEIGHTS_NAME, arrays, metadata={"format": FORMAT})
    atomic_write_json(d / CONFIG_NAME, {"format": FORMAT, "version": VERSION, "model": cfg.to_dict(), **(extra or {})})
    if manifest:
        write_manifest(d, [WEIGHTS_NAME, CONFIG_NAME])
    return d


def save_model_dir(
    directory: str | Path, state: Mapping[str, np.ndarray], cfg: GPTConfig, extra: dict[str, Any] | None = None,
    files: Mapping[str, str | Path] | None = None,
) -> Path:
    """原子地写出一个完整的检查点目录：权重、配置，再加 files（目录里的文件名 → 源文件，如 tokenizer.json）。

    先写到同级的 ``.NAME.tmp``，清单覆盖其中每个文件；写完后把旧目录（若有）改名为 ``.NAME.old``、新目录就位、
    再删掉旧的。中途崩溃时要么是旧的完整目录，要么是新的完整目录（换名之间崩溃则留在 ``.NAME.old``）。
    """
    import shutil

    final = Path(directory)
    tmp, old = final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old")
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_state(tmp, state, cfg, extra, manifest=False)
    names = [WEIGHTS_NAME, CONFIG_NAME]
    for name, src in (files or {}).items():
        if not _PLAIN_NAME.fullmatch(name) or name in (WEIGHTS_NAME, CONFIG_NAME, MANIFEST_NAME):
            raise ValueError(f"检查点目录里的附加文件名 {name!r} 不合法或与固定文件重名")
        shutil.copyfile(src, tmp / name)
        names.append(name)
    write_manifest(tmp, names)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def read_config(directory: str | Path) -> dict[str, Any]:
    """读取检查点目录的 config.json（含 "model" 字段）。"""
    p = Path(directory) / CONFIG_NAME
    if not p.is_file():
        raise CheckpointError(f"{directory} 不是检查点目录：缺少 {CONFIG_NAME}")
    meta = read_json_object(p)
    if meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{p} 不是本项目的模型检查点（format={meta.get('format')!r}）")
    if not isinstance(meta["model"], dict):
        raise CheckpointError(f"{p} 中的 model 应是对象，实际是 {type(meta['model']).__name__}")
    if meta.get("version", VERSION) != VERSION:
        raise CheckpointError(f"{p} 的格式版本是 {meta.get('version')!r}，本程序只认 {VERSION}")
    return meta


def load_model_state(directory: str | Path) -> tuple[dict[str, np.ndarray], GPTConfig, dict[str, Any]]:
    """读取检查点，返回 (参数数组, GPTConfig, config.json 全部内容)。

    先按 manifest.json 核对 model.safetensors 与 config.json；再检查每个参数是有限的浮点数。
    """
    d = Path(directory)
    meta = read_config(d)
    if not verify_files(d, [WEIGHTS_NAME, CONFIG_NAME]):
        print(f"提示：{d} 没有 {MANIFEST_NAME}（旧版本保存的检查点），无法核对校验和", file=sys.stderr)
    try:
        cfg = GPTConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG_NAME} 中的模型配置无效：{e}") from None
    state = load_arrays(d / WEIGHTS_NAME)
    check_arrays(state, d / WEIGHTS_NAME)
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
