"""训练检查点：模型 + 优化器状态 + 步数 + 随机数状态 + 数据位置，两条轨道共用一个格式。

目录布局（在 config.json / model.safetensors 之外）::

    ckpt_last/
      optimizer.safetensors  每个参数的 AdamW 动量："{参数名}.exp_avg"、"{参数名}.exp_avg_sq"
      rng.safetensors        框架自己的随机数状态（如 torch 的 ByteTensor），可选
      trainer_state.json     步数、数据位置、最优验证损失、训练配置、NumPy 随机数状态……
      tokenizer.json         分词器（检查点因此可以单独拿去生成）

      manifest.json          以上每个文件的 sha256 与字节数（最后写），读取时逐个核对

整个目录先写到 ``.NAME.tmp``，写完再换名：旧目录先改名为 ``.NAME.old``，新目录就位后删除旧的。
任何时刻都至少有一个完整的检查点；换名中途崩溃时 NAME 不存在，读取方（train、generate、eval）
都会找到 ``.NAME.old``。NAME 存在却不完整（缺文件、校验和不符）是错误，不会被悄悄跳过或覆盖。
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import (
    CONFIG_NAME,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    atomic_write_json,
    check_arrays,
    load_arrays,
    load_model_state,
    read_json_object,
    save_arrays,
    save_model_state,
    verify_files,
    write_manifest,
)
from .config import GPTConfig, TrainConfig, from_dict
from .errors import OutputDirError

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
    save_model_state(tmp, model_arrays, cfg, extra={"step": state.get("step")}, manifest=False)
    names = [WEIGHTS_NAME, CONFIG_NAME, OPTIM_NAME, STATE_NAME]
    save_arrays(tmp / OPTIM_NAME, optim_arrays)
    if rng_arrays:
        save_arrays(tmp / RNG_NAME, rng_arrays)
        names.append(RNG_NAME)
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, tmp / TOKENIZER_NAME)
        names.append(TOKENIZER_NAME)
    atomic_write_json(tmp / STATE_NAME, state)
    write_manifest(tmp, names)  # 最后写：清单覆盖上面每一个文件
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
    """找到 out_dir 下名为 name 的检查点；换名中途崩溃（NAME 不在、``.NAME.old`` 完整）时返回旧的那份。

    NAME 目录存在就返回它，哪怕不完整：读取时会报出缺了什么，而不是把它当作“没有检查点”从头训练并覆盖。
    """
    out = Path(out_dir)
    if (out / name).is_dir():
        return out / name
    old = out / f".{name}.old"
    if (old / STATE_NAME).is_file() or (old / MANIFEST_NAME).is_file():
        return old
    return None


def validate_trainer_state(state: dict[str, Any], path: Path) -> None:
    """按约定检查 trainer_state.json 的字段与类型；出错时报出文件路径与字段。"""

    def need(cond: bool, field: str, expect: str) -> None:
        if not cond:
            raise CheckpointError(f"{path} 中的 {field} 应为{expect}，实际是 {state.get(field)!r}：文件已损坏")

    def nonneg_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    need(nonneg_int(state.get("step")), "step", "非负整数")
    need(nonneg_int(state.get("optim_step", 0)), "optim_step", "非负整数")
    need(nonneg_int(state.get("data_index", 0)), "data_index", "非负整数")
    ws = state.get("world_size", 1)
    need(isinstance(ws, int) and not isinstance(ws, bool) and ws >= 1, "world_size", "正整数")
    bv = state.get("best_val")
    need(bv is None or (isinstance(bv, (int, float)) and not isinstance(bv, bool) and np.isfinite(bv)), "best_val",
         "有限的数或 null")
    need(isinstance(state.get("track", ""), str), "track", "字符串")
    need(isinstance(state.get("rng", {}), dict), "rng", "对象")
    tc = state.get("train_config", {})
    need(isinstance(tc, dict), "train_config", "对象")
    try:
        from_dict(TrainConfig, tc)
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} 中的 train_config 无效：{e}") from None


def read_training_checkpoint(
    directory: str | Path, weights_only: bool = False,
) -> tuple[dict[str, np.ndarray], GPTConfig, dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """读取训练检查点：(模型参数, GPTConfig, 优化器数组, trainer_state, 随机数数组)。

    先按 manifest.json 核对全部文件（weights_only=True 时不核对、不读取优化器状态）；缺少的文件报出文件名。
    """
    d = Path(directory)
    sp = d / STATE_NAME
    if not sp.is_file():
        raise CheckpointError(
            f"{d} 不是完整的训练检查点：缺少 {STATE_NAME}（步数与数据位置都记在里面，无法续训）；"
            "如要从头训练请加 --resume=never --overwrite=true"
        )
    names = None
    if weights_only:
        from .checkpoint import read_manifest

        names = [n for n in (read_manifest(d) or {}) if n != OPTIM_NAME]
    try:
        has_manifest = verify_files(d, names)
    except CheckpointError as e:
        if OPTIM_NAME in str(e):  # 只有优化器状态坏了：可以只载入权重
            raise CheckpointError(f"{e}；如只想载入模型权重、用新的优化器状态继续，请加 --weights_only=true") from None
        raise
    if not has_manifest:
        print(f"提示：{d} 没有 {MANIFEST_NAME}（旧版本保存的检查点），无法核对校验和", file=sys.stderr)
    state = read_json_object(sp)
    validate_trainer_state(state, sp)
    model_arrays, cfg, _ = load_model_state(d)
    optim: dict[str, np.ndarray] = {}
    if not weights_only:
        op = d / OPTIM_NAME
        if not op.is_file():
            raise CheckpointError(
                f"检查点缺少优化器状态 {op}：无法精确续训；如只想载入模型权重、用新的优化器状态继续，"
                "请加 --weights_only=true"
            )
        optim = load_arrays(op)
        check_arrays(optim, op, what="优化器状态")
    rng = load_arrays(d / RNG_NAME) if (d / RNG_NAME).exists() else {}
    return model_arrays, cfg, optim, state, rng


def check_optimizer_state(
    optim: Mapping[str, np.ndarray], model: Mapping[str, np.ndarray], cfg: GPTConfig, optim_step: int, where: Path,
) -> None:
    """优化器状态必须与模型参数一一对应（每个参数一份 exp_avg 与 exp_avg_sq，形状相同）。

    第 0 步的检查点还没有优化器状态（空文件）；optim_step > 0 时缺一个键就是不完整的文件。
    """
    params = [k for k in model if not (cfg.tie_weights and k == "out_head.weight")]
    expected = {f"{k}.{s}": tuple(np.shape(model[k])) for k in params for s in ("exp_avg", "exp_avg_sq")}
    if optim_step == 0 and not optim:
        return
    missing = [k for k in expected if k not in optim]
    extra = [k for k in optim if k not in expected]
    if missing or extra:
        part = f"缺少 {missing[:4]}{' ...' if len(missing) > 4 else ''}" if missing else f"多出 {extra[:4]}"
        raise CheckpointError(
            f"{where} 不完整：{part}（共应有 {len(expected)} 个数组）；"
            "如只想载入模型权重、用新的优化器状态继续，请加 --weights_only=true"
        )
    for k, shape in expected.items():
        if tuple(np.shape(optim[k])) != shape:
            raise CheckpointError(f"{where} 中 {k!r} 的形状是 {tuple(np.shape(optim[k]))}，参数的形状是 {shape}")
        if k.endswith("exp_avg_sq") and (np.asarray(optim[k]) < 0).any():
            raise CheckpointError(f"{where} 中 {k!r} 有负值（二阶矩不可能为负）：文件已损坏")


# 一次训练在输出目录里留下的文件（--resume=never --overwrite=true 时删除的正是这些）
RUN_FILES = ("metrics.jsonl", "samples.txt", "loss.png", TOKENIZER_NAME)
RUN_DIRS = (LAST, BEST, f".{LAST}.old", f".{BEST}.old", f".{LAST}.tmp", f".{BEST}.tmp", "data")
USED_MARKERS = (LAST, BEST, f".{LAST}.old", f".{BEST}.old", "metrics.jsonl", "samples.txt")


def previous_run_files(out_dir: str | Path) -> list[str]:
    """输出目录里上一次运行留下的检查点与记录（据此判断目录是否“用过”）。"""
    out = Path(out_dir)
    return [n for n in USED_MARKERS if (out / n).exists()]


def clean_previous_run(out_dir: str | Path) -> list[str]:
    """删除上一次运行的检查点、记录、分词器与词元缓存（只删本项目写的这些名字），返回删掉的名字。"""
    out = Path(out_dir)
    removed = []
    for n in RUN_DIRS:
        if (out / n).is_dir():
            shutil.rmtree(out / n)
            removed.append(n)
    for n in RUN_FILES:
        if (out / n).is_file():
            (out / n).unlink()
            removed.append(n)
    return removed


def check_output_dir(tcfg: TrainConfig) -> list[str]:
    """训练开始前（持有运行锁时）按 --resume 与 --overwrite 检查输出目录；返回被 --overwrite 删除的名字。

    - never：目录里有上一次运行的检查点或记录时拒绝（不追加、不覆盖），除非 --overwrite=true（先删除它们）；
    - auto / must：有 ckpt_best 却没有可续训的 last 检查点时拒绝（不会从第 0 步重来并覆盖它）。
    """
    out = Path(tcfg.out_dir)
    used = previous_run_files(out)
    if tcfg.resume == "never":
        if used and not tcfg.overwrite:
            raise OutputDirError(
                f"输出目录 {out} 里已有上一次运行的 {'、'.join(used)}，--resume=never 不会覆盖它们；"
                "要接着训练请去掉 --resume=never，要丢掉旧的运行从头开始请加 --overwrite=true，或换一个 --out_dir"
            )
        return clean_previous_run(out) if tcfg.overwrite else []
    ckpt = find_checkpoint(out, LAST)
    if ckpt is not None:
        check_checkpoint_tokenizer(ckpt, out)
    else:
        if tcfg.resume == "must":
            raise CheckpointError(f"--resume=must，但 {out} 下没有可用的检查点（{LAST}）")
        best = [n for n in used if BEST in n]
        if best:
            raise CheckpointError(
                f"输出目录 {out} 里有 {best[0]} 却没有可续训的 {LAST}：不会从第 0 步重新训练并覆盖它；"
                "要丢掉旧的运行从头开始请加 --resume=never --overwrite=true，或换一个 --out_dir"
            )
    return []


def check_checkpoint_tokenizer(ckpt: Path, out: Path) -> None:
    """续训前（写任何文件之前）核对分词器：检查点里的 tokenizer.json 要与模型的词表一样大，
    输出目录里的 tokenizer.json（续训时用来编码数据）要与检查点里的那份完全相同。"""
    from .checkpoint import read_config
    from .errors import TokenizerError
    from .prepare import read_tokenizer

    own = ckpt / TOKENIZER_NAME
    if not own.is_file():
        return
    verify_files(ckpt, [TOKENIZER_NAME])
    n_tok = read_tokenizer(own).vocab_size
    n_model = read_config(ckpt)["model"].get("vocab_size")
    if n_tok != n_model:
        raise TokenizerError(
            f"{own} 有 {n_tok} 个词元，而 {ckpt / CONFIG_NAME} 中模型的词表是 {n_model}：两者不是一起保存的"
        )
    shared = out / TOKENIZER_NAME
    if shared.is_file() and shared.read_bytes() != own.read_bytes():
        raise TokenizerError(
            f"{shared} 与检查点里的 {own} 不同：续训必须用同一个分词器；请把检查点里的那份复制回去，"
            "或加 --resume=never --overwrite=true 从头训练"
        )


def check_writable(out_dir: str | Path, need_bytes: int) -> None:
    """训练开始前确认输出目录可写、磁盘空间够放检查点，否则给出明确的错误。"""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"输出目录 {out} 是一个已有的文件，不是目录；请换一个 --out_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        file_in_path = isinstance(e, (NotADirectoryError, FileExistsError))
        why = "路径上有一段是文件而不是目录" if file_in_path else e.strerror or e
        raise OutputDirError(f"输出目录 {out} 不可写：{why}；请换一个 --out_dir") from None
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise OutputDirError(
            f"输出目录 {out} 所在磁盘只剩 {free / 2**20:.1f} MiB，而写检查点大约需要 {need_bytes / 2**20:.1f} MiB"
        )
