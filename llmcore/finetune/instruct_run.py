"""指令微调 (SFT)、偏好调优 (DPO) 的一次完整运行，以及基准评测（两条轨道共用，与框架无关）。

    基座 / SFT 检查点 + 分词器 → 指令数据的三个划分 → 编码 → 训练（instruct_trainer 的 train_sft / train_dpo）
    → 验证 → 保存检查点（LoRA 先并回权重；两条轨道都能读；分词器放在检查点里）、LoRA 时另存适配器
    → 在测试集（或验证集）上逐题贪心生成并打分 → result.json

输出目录（--out_dir）：

    ckpt/                完整的语言模型检查点：model.safetensors、config.json、tokenizer.json、manifest.json
                         （整个目录原子地写出；config.json 另记 task="instruct"、stage、lang、mode 等）
    adapter.safetensors  只在 --mode=lora 时：LoRA 的 A、B（格式见 lora_io.py）
    metrics.jsonl        每步一行 {"type": "train", ...}；验证时一行 {"type": "eval", ...}
    answers.jsonl        评测划分上每题的回答与得分
    pairs.jsonl          （DPO）实际用到的偏好对
    result.json          设置、用时、参数量、最终损失，以及按任务的 EM / F1（scores）

轨道提供“指令模块”（gpt_numpy.instruct 或 gpt_torch.instruct）：build_instruct_model、InstructBackend、
frozen_copy、answer。
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..checkpoint import atomic_write_json, save_model_dir
from ..errors import DataError, UsageError
from . import dpo_data as dd
from . import instruct_trainer as it
from .cls_trainer import find_base_checkpoint, load_base_model
from .instruct_bench import TASKS, build_benchmark
from .instruct_data import (
    InstructSplits,
    load_book_instruction_data,
    read_instruction_file,
    split_book_data,
)
from .instruct_eval import results_header, results_row, row_tasks, score
from .sft_data import encode_entries, eot_id_of

INSTRUCT_TASK = "instruct"
BUILTIN_DATA = ("bench-zh", "book")
EVAL_SPLITS = ("test", "val", "none")
LANG_CHOICES = ("auto", "zh", "en")
MODES = ("full", "lora")
PAIR_SOURCES = ("rule", "self")
DTYPES = ("float32", "float64")
NO_DEVICE = "{track} 不接受 --device：NumPy 轨道只在 CPU 上运行；要用 GPU 请改用 python -m gpt_torch"


# ---------------------------------------------------------------------------- 设置
@dataclass
class InstructConfig:
    """SFT、DPO 与评测共用的设置；命令行用 --key=value 覆盖。"""

    ckpt: str = "runs/base-zh"  # 检查点目录或输出目录（取 ckpt_best / ckpt_last / ckpt），或 HF 格式的 GPT-2 目录
    tokenizer: str = ""  # 分词器 JSON 或 gpt2；缺省用检查点里（或旁边）的 tokenizer.json
    data: str = "bench-zh"  # bench-zh | book | .json/.jsonl 文件 | 含 train/val/test.jsonl 的目录
    tasks: str = ""  # 只用这些任务（逗号分隔）；缺省全部
    split_seed: int = 123  # 基准的抽样种子
    lang: str = "auto"  # 提示模板：zh | en | auto（book 用 en，其余用 zh）
    mode: str = "full"  # full | lora
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = "all"  # all | attn | qv | 逗号分隔的模块路径
    batch_size: int = 8
    epochs: int = 2
    max_steps: int = 0  # >0 时按步数训练（优先于 epochs）
    lr: float = 5e-5
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 100  # 每这么多步在验证集的一部分上评估一次
    eval_limit: int = 200  # 训练途中评估只用验证集的前这么多条（0 = 全部）
    eval_split: str = "test"  # 训练后在哪个划分上生成并打分：test | val | none
    max_new_tokens: int = 64  # 打分时每题最多生成的词元数
    limit_train: int = 0  # 只用训练集的前 N 条（0 = 全部）
    limit_val: int = 0
    limit_test: int = 0
    seed: int = 123
    dtype: str = "float32"  # float32 | float64
    device: str = "auto"  # 仅 gpt_torch：auto | cpu | cuda | mps
    on_bad: str = "skip"  # 空回答、超长条目：skip（跳过并计数）| error
    out_dir: str = "runs/sft"
    progress: bool = True

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UsageError(msg)

        need(self.mode in MODES, f"--mode 只能是 {' 或 '.join(MODES)}，收到 {self.mode!r}")
        need(self.lang in LANG_CHOICES, f"--lang 只能是 {'、'.join(LANG_CHOICES)} 之一，收到 {self.lang!r}")
        need(self.eval_split in EVAL_SPLITS,
             f"--eval_split 只能是 {'、'.join(EVAL_SPLITS)} 之一，收到 {self.eval_split!r}")
        need(self.dtype in DTYPES, f"--dtype 只能是 {' 或 '.join(DTYPES)}，收到 {self.dtype!r}")
        need(self.on_bad in ("skip", "error"), f"--on_bad 只能是 skip 或 error，收到 {self.on_bad!r}")
        for name in ("batch_size", "eval_interval", "max_new_tokens", "lora_rank"):
            need(getattr(self, name) > 0, f"--{name} 必须为正整数，收到 {getattr(self, name)!r}")
        for name in ("epochs", "max_steps", "eval_limit", "limit_train", "limit_val", "limit_test"):
            need(getattr(self, name) >= 0, f"--{name} 不能为负，收到 {getattr(self, name)!r}")
        need(self.epochs > 0 or self.max_steps > 0, "--epochs 与 --max_steps 至少有一个为正")
        for name in ("lr", "lora_alpha"):
            v = getattr(self, name)
            need(math.isfinite(v) and v > 0, f"--{name} 必须是正数，收到 {v!r}")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            need(math.isfinite(v) and v >= 0, f"--{name} 不能为负，收到 {v!r}")
        need(bool(self.data), "--data 不能为空：bench-zh、book、.json/.jsonl 文件或目录")
        bad = [t for t in task_list(self.tasks) if t not in TASKS] if self.data == "bench-zh" else []
        need(not bad, f"--tasks 里有未知的任务 {bad}；可选：{', '.join(TASKS)}")


@dataclass
class SFTConfig(InstructConfig):
    """指令微调的设置。"""

    mask_prompt: bool = True  # 提示部分的目标也写 -100（只在回答上算损失）
    allowed_max_length: int = 0  # 每批截断到这个长度；0 = 模型的上下文长度

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.allowed_max_length < 0:
            raise UsageError(f"--allowed_max_length 不能为负，收到 {self.allowed_max_length!r}")


@dataclass
class DPOConfig(InstructConfig):
    """偏好调优的设置（参照模型 = 起点的 SFT 检查点，冻结）。"""

    ckpt: str = "runs/sft"
    pairs: str = "rule"  # rule（规则造的错答）| self（SFT 模型自己的错答，答对的用规则补）| 偏好对文件
    beta: float = 0.1
    lr: float = 5e-6
    epochs: int = 1
    average_logprobs: bool = False  # 回答的对数概率除以词元数（默认求和，与原论文相同）
    out_dir: str = "runs/dpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise UsageError(f"--beta 必须是正数（常用 0.1），收到 {self.beta!r}")
        if self.pairs not in PAIR_SOURCES and not self.pairs.lower().endswith((".json", ".jsonl")):
            raise UsageError(f"--pairs 只能是 rule、self 或偏好对文件（.json/.jsonl），收到 {self.pairs!r}")


@dataclass
class EvalConfig:
    """eval-instruct 的设置。"""

    ckpt: str = "runs/sft"
    tokenizer: str = ""
    data: str = "bench-zh"
    tasks: str = ""
    split_seed: int = 123
    split: str = "test"  # test | val | train
    limit: int = 0  # 只评前 N 题（0 = 全部）
    lang: str = "auto"
    max_new_tokens: int = 64
    name: str = ""  # 表格行的名字；缺省用检查点路径
    header: bool = False  # 先打印表头两行
    out: str = ""  # 另把结果写成 JSON 文件
    answers: str = ""  # 另把每题的回答写成 JSONL 文件
    dtype: str = "float32"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.split not in ("test", "val", "train"):
            raise UsageError(f"--split 只能是 test、val 或 train，收到 {self.split!r}")
        if self.lang not in LANG_CHOICES:
            raise UsageError(f"--lang 只能是 {'、'.join(LANG_CHOICES)} 之一，收到 {self.lang!r}")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype 只能是 {' 或 '.join(DTYPES)}，收到 {self.dtype!r}")
        if self.limit < 0 or self.max_new_tokens <= 0:
            raise UsageError(
                f"--limit 不能为负、--max_new_tokens 必须为正，收到 {self.limit!r}、{self.max_new_tokens!r}")
        bad = [t for t in task_list(self.tasks) if t not in TASKS] if self.data == "bench-zh" else []
        if bad:
            raise UsageError(f"--tasks 里有未知的任务 {bad}；可选：{', '.join(TASKS)}")


def task_list(tasks: str) -> list[str]:
    return [t.strip() for t in tasks.split(",") if t.strip()]


# ---------------------------------------------------------------------------- 数据
def check_data_source(data: str) -> None:
    """准备模型之前先确认数据来源存在（内置名字，或存在的文件 / 目录）。"""
    if data in BUILTIN_DATA:
        return
    p = Path(data)
    if p.is_dir():
        return
    if not p.is_file():
        raise DataError(f"找不到指令数据 {data!r}：可用 bench-zh（中文基准）、book（原书的英文数据）、"
                        ".json/.jsonl 文件，或含 train/val/test.jsonl 的目录")
    if p.suffix.lower() not in (".json", ".jsonl"):
        raise DataError(f"指令数据文件 {p} 应是 .json（条目的数组）或 .jsonl（每行一条）")


def _read_split_dir(d: Path, on_bad: str) -> InstructSplits:
    parts = []
    for split in ("train", "val", "test"):
        cands = [d / f"{split}.jsonl", d / f"{split}.json"]
        f = next((c for c in cands if c.is_file()), None)
        if f is None:
            raise DataError(
                f"目录 {d} 里没有 {split}.jsonl（或 {split}.json）：目录形式的数据要有 train、val、test 三个文件")
        parts.append(read_instruction_file(f, on_bad))
    return InstructSplits(*parts)


def load_instruct_splits(
    data: str, tasks: Sequence[str] = (), split_seed: int = 123, on_bad: str = "skip",
    limits: tuple[int, int, int] = (0, 0, 0),
) -> tuple[InstructSplits, str]:
    """按 --data 取 (训练、验证、测试三个划分, 默认的模板语言)。

    bench-zh：中文基准（tasks 可选其中几个任务）；book：原书的 instruction-data.json（经下载助手），按原书切分；
    文件：按原书的比例切分（不打乱）；目录：其中的 train/val/test.jsonl。limits：各划分只取前 N 条（0 = 全部）。
    """
    check_data_source(data)
    lang = "zh"
    if data == "bench-zh":
        bench = build_benchmark(split_seed, tasks=tuple(tasks) or TASKS)
        splits = InstructSplits(list(bench.train), list(bench.val), list(bench.test))
    elif data == "book":
        splits, lang = split_book_data(load_book_instruction_data()), "en"
    elif Path(data).is_dir():
        splits = _read_split_dir(Path(data), on_bad)
    else:
        splits = split_book_data(read_instruction_file(data, on_bad))
    if tasks and data != "bench-zh":
        want = set(tasks)
        splits = InstructSplits(*[[e for e in part if e.get("task") in want] for part in splits])
        if not splits.train:
            raise DataError(f"{data} 里没有任务为 {sorted(want)} 的训练条目（条目的 task 字段）")
    splits = InstructSplits(*[part[:n] if n else part for part, n in zip(splits, limits)])
    return splits, lang


def read_pairs_file(path: str | Path, log: TextIO | None = None) -> list[dict[str, Any]]:
    """偏好对文件：.json（数组）或 .jsonl（每行一个），字段 instruction、input、output、chosen、rejected。"""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"找不到偏好对文件 {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"偏好对文件 {p} 不是 UTF-8 文本：{e}") from None
    try:
        if p.suffix.lower() == ".jsonl":
            raw = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"偏好对文件 {p} 不是合法的 JSON：{e}") from None
    if not isinstance(raw, list):
        raise DataError(f"偏好对文件 {p} 应是条目的数组，实际是 {type(raw).__name__}")
    return dd.validate_pairs(raw, name=str(p), log=log)


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------- 共用的步骤
class _Run:
    """一次运行的公共部分：读基座与数据、建模型、写 metrics、保存、打分。"""

    def __init__(self, cfg: InstructConfig, mod: Any, track_name: str, stage: str, log: TextIO) -> None:
        self.cfg, self.mod, self.track, self.stage, self.log = cfg, mod, track_name, stage, log
        if track_name != "gpt_torch" and cfg.device != "auto":
            raise UsageError(NO_DEVICE.format(track=track_name))
        check_data_source(cfg.data)
        self.ckpt = find_base_checkpoint(cfg.ckpt)
        self.out = Path(cfg.out_dir)
        from ..train_state import check_writable

        check_writable(self.out, 0)
        self.model_cfg, state, self.tok, tok_file, self.meta = load_base_model(self.ckpt, cfg.tokenizer)
        self.eot = eot_id_of(self.tok)
        if tok_file is None:  # GPT-2 分词器没有文件：存一份到输出目录，再放进检查点
            tok_file = self.out / "tokenizer.json"
            self.tok.save(tok_file)
        self.tok_file = Path(tok_file)
        self.splits, default_lang = load_instruct_splits(
            cfg.data, task_list(cfg.tasks), cfg.split_seed, cfg.on_bad, (cfg.limit_train, cfg.limit_val, cfg.limit_test)
        )
        self.lang = default_lang if cfg.lang == "auto" else cfg.lang
        self.ctx = self.model_cfg.context_length
        kwargs: dict[str, Any] = dict(seed=cfg.seed, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                      lora_targets=cfg.lora_targets, dtype=cfg.dtype)
        if track_name == "gpt_torch":
            kwargs["device"] = cfg.device
        try:
            self.model = mod.build_instruct_model(self.model_cfg, state, cfg.mode, **kwargs)
        except ValueError as e:  # LoRA 目标层不匹配等
            raise UsageError(str(e)) from None
        self.metrics = open(self.out / "metrics.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self.bar: Any = None

    def total_steps(self, n: int) -> int:
        return self.cfg.max_steps or -(-n // self.cfg.batch_size) * self.cfg.epochs

    def write(self, rec: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.metrics.flush()

    def progress(self, total: int, desc: str) -> Any:
        if not self.cfg.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="步" if desc != "打分" else "题", file=sys.stderr, leave=False)

    def save(self, backend: Any, extra: dict[str, Any]) -> dict[str, str]:
        """LoRA 时先存适配器，再把增量并回权重，原子地写出完整的检查点目录。"""
        info = {"task": INSTRUCT_TASK, "stage": self.stage, "lang": self.lang, "mode": self.cfg.mode,
                "base_checkpoint": str(self.ckpt), "data": self.cfg.data, "tasks": task_list(self.cfg.tasks),
                "track": self.track, **extra}
        paths = {}
        if self.cfg.mode == "lora":
            paths["adapter"] = str(backend.save_adapter(self.out / "adapter.safetensors", info))
        state = backend.merged_state()
        paths["checkpoint"] = str(save_model_dir(self.out / "ckpt", state, backend.model.cfg, info,
                                                 {"tokenizer.json": self.tok_file}))
        return paths

    def score(self, backend: Any) -> tuple[dict[str, dict[str, float]] | None, float]:
        """在 eval_split 上逐题贪心生成并打分，写 answers.jsonl；返回 (按任务的结果, 用时)。"""
        split = self.cfg.eval_split
        if split == "none":
            return None, 0.0
        entries = self.splits.test if split == "test" else self.splits.val
        if not entries:
            print(f"{split} 划分为空，跳过打分", file=self.log)
            return None, 0.0
        t0 = time.perf_counter()
        results, answers = score_entries(backend.answer, entries, self.tok, self.lang, self.cfg.max_new_tokens,
                                         self.ctx, self.cfg.progress)
        _write_jsonl(self.out / "answers.jsonl", answer_rows(entries, answers))
        return results, time.perf_counter() - t0

    def close(self) -> None:
        self.metrics.close()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _AnswerOnly:
    """只有 answer 方法的“后端”：instruct_trainer.evaluate_backend 只用到它。"""

    def __init__(self, answer: Callable[[list[int], int, int], list[int]]) -> None:
        self.answer = answer


def score_entries(
    answer: Callable[[list[int], int, int], list[int]], entries: Sequence[dict[str, Any]], tokenizer: Any,
    lang: str, max_new_tokens: int, context_length: int, progress: bool = False,
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """逐题贪心生成并按任务打分：answer(提示词元, 最多新词元, 结束词元) → 新词元。"""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(entries), desc="打分", unit="题", file=sys.stderr, leave=False)
    try:
        return it.evaluate_backend(_AnswerOnly(answer), entries, tokenizer, lang, max_new_tokens, context_length,
                                   on_answer=(lambda n: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def answer_rows(entries: Sequence[dict[str, Any]], answers: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for e, a in zip(entries, answers):
        em, f1 = score(str(e.get("task", "")), a, e["output"])
        rows.append({"task": e.get("task", ""), "instruction": e["instruction"], "input": e.get("input", ""),
                     "output": e["output"], "answer": a, "exact": em, "f1": f1})
    return rows


def _config_dict(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def _summary(res: dict[str, Any], name: str, log: TextIO) -> None:
    scores = res.get("scores")
    if scores:
        tasks = row_tasks(scores)
        print(f"{res['eval_split']} 集上的 EM / F1（%）：\n{results_header(tasks)}\n{results_row(name, scores, tasks)}",
              file=log)
    print(f"检查点在 {res['checkpoint']}；result.json、metrics.jsonl 在 {Path(res['checkpoint']).parent}", file=log)


# ---------------------------------------------------------------------------- SFT
def run_sft(cfg: SFTConfig, mod: Any, track_name: str, log: TextIO | None = None) -> dict[str, Any]:
    """完整的一次指令微调；返回 result.json 的内容。"""
    log = log or sys.stderr
    run = _Run(cfg, mod, track_name, "sft", log)
    try:
        tr = encode_entries(run.splits.train, run.tok, run.lang, run.ctx, cfg.on_bad, "训练集", log)
        va = encode_entries(run.splits.val, run.tok, run.lang, run.ctx, cfg.on_bad, "验证集", log)
        if len(tr) == 0:
            raise DataError(
                f"训练集没有可用的条目（{len(run.splits.train)} 条全被跳过：回答为空或超过上下文长度 {run.ctx}）")
        allowed = cfg.allowed_max_length or None
        backend = mod.InstructBackend(run.model, cfg.lr, cfg.weight_decay, cfg.grad_clip)
        trainable, total = backend.num_parameters()
        steps = run.total_steps(len(tr))
        print(f"{track_name}：SFT，{cfg.mode} 方式，可训练参数 {trainable:,} / {total:,}；"
              f"训练 {len(tr)} 条、验证 {len(va)} 条，{steps} 步，模板 {run.lang}，"
              f"{'只在回答上算损失' if cfg.mask_prompt else '提示与回答都算损失'}", file=log)
        run.bar = run.progress(steps, "SFT")
        losses: list[float] = []

        def on_step(rec: dict[str, float]) -> None:
            losses.append(rec["loss"])
            run.write({"type": "train", "step": rec["step"], "loss": rec["loss"]})
            if "val_loss" in rec:
                run.write({"type": "eval", "step": rec["step"], "val_loss": rec["val_loss"]})
            if run.bar is not None:
                run.bar.update(1)
                run.bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")

        val_part = va.subset(cfg.eval_limit) if cfg.eval_limit else va
        t0 = time.perf_counter()
        it.train_sft(backend, tr, run.eot, steps, cfg.batch_size, cfg.lr, cfg.mask_prompt, cfg.seed,
                     val_part if len(val_part) else None, cfg.eval_interval, log, allowed, on_step)
        train_time = time.perf_counter() - t0
        if run.bar is not None:
            run.bar.close()
            run.bar = None
        val_loss = it.sft_eval(backend, va, run.eot, cfg.batch_size, cfg.mask_prompt, allowed) if len(va) else None
        paths = run.save(backend, {"allowed_max_length": allowed or run.ctx, "mask_prompt": cfg.mask_prompt})
        scores, score_time = run.score(backend)
    finally:
        run.close()
    result = {
        "stage": "sft", "track": track_name, "mode": cfg.mode, "data": cfg.data, "lang": run.lang,
        "base": str(run.ckpt), "steps": len(losses), "epochs": len(losses) / max(-(-len(tr) // cfg.batch_size), 1),
        "train_n": len(tr), "val_n": len(va), "skipped": {"train": tr.skipped, "val": va.skipped},
        "train_time_s": train_time, "score_time_s": score_time, "trainable_params": trainable, "total_params": total,
        "final_train_loss": float(np.mean(losses[-20:])) if losses else None, "val_loss": val_loss,
        "eval_split": cfg.eval_split, "scores": scores, **paths, "config": _config_dict(cfg),
    }
    atomic_write_json(run.out / "result.json", result)
    _summary(result, "SFT", log)
    return result


# ---------------------------------------------------------------------------- DPO
def make_pairs(run: _Run, cfg: DPOConfig, backend: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """按 --pairs 造训练用的偏好对，返回 (偏好对, 计数)。"""
    train = run.splits.train
    if cfg.pairs == "rule":
        pairs = dd.make_rule_pairs(train, cfg.seed, run.log)
        counts = {"rule": len(pairs), "skipped": len(train) - len(pairs)}
    elif cfg.pairs == "self":
        print(f"用起点模型对 {len(train)} 道训练题贪心作答，挑出答错的作 rejected……", file=run.log)
        answers = score_entries(backend.answer, train, run.tok, run.lang, cfg.max_new_tokens, run.ctx,
                                cfg.progress)[1]
        pairs, counts = dd.pairs_from_samples(train, answers, fallback_seed=cfg.seed, log=run.log)
    else:
        pairs = read_pairs_file(cfg.pairs, run.log)
        counts = {"file": len(pairs)}
    pairs = dd.validate_pairs(pairs, log=run.log)
    if not pairs:
        raise DataError(f"没有可用的偏好对（--pairs={cfg.pairs}，训练题 {len(train)} 条）："
                        "规则造错答只认识中文基准的任务；原书数据请用 --pairs=self 或偏好对文件")
    return pairs, counts


def run_dpo(cfg: DPOConfig, mod: Any, track_name: str, log: TextIO | None = None) -> dict[str, Any]:
    """完整的一次 DPO；参照模型是起点检查点的冻结副本。返回 result.json 的内容。"""
    log = log or sys.stderr
    run = _Run(cfg, mod, track_name, "dpo", log)
    try:
        if run.meta.get("task") != INSTRUCT_TASK:
            print(f"提示：{run.ckpt} 不是 SFT 检查点（config.json 里没有 task={INSTRUCT_TASK!r}）；"
                  "DPO 通常从 finetune-sft 的输出出发", file=log)
        reference = mod.frozen_copy(run.model)
        backend = mod.InstructBackend(run.model, cfg.lr, cfg.weight_decay, cfg.grad_clip, reference=reference)
        pairs, counts = make_pairs(run, cfg, backend)
        _write_jsonl(run.out / "pairs.jsonl", pairs)
        enc = dd.encode_pairs(pairs, run.tok, run.lang, run.ctx, log)
        if len(enc) == 0:
            raise DataError(f"{len(pairs)} 个偏好对编码后全被跳过（回答为空或超过上下文长度 {run.ctx}）")
        val_src = run.splits.val[: cfg.eval_limit] if cfg.eval_limit else run.splits.val
        val_pairs = dd.validate_pairs(dd.make_rule_pairs(val_src, cfg.seed + 1, log), log=log) if val_src else []
        val_enc = dd.encode_pairs(val_pairs, run.tok, run.lang, run.ctx, log) if val_pairs else None
        trainable, total = backend.num_parameters()
        steps = run.total_steps(len(enc))
        print(f"{track_name}：DPO，{cfg.mode} 方式，可训练参数 {trainable:,} / {total:,}；偏好对 {len(enc)} 个，"
              f"{steps} 步，beta {cfg.beta:g}，模板 {run.lang}", file=log)
        history: list[dict[str, float]] = []

        def evaluate(step: int) -> dict[str, float] | None:
            if val_enc is None or len(val_enc) == 0:
                return None
            ev = it.dpo_evaluate(backend, val_enc, run.eot, cfg.beta, cfg.batch_size, cfg.average_logprobs)
            run.write({"type": "eval", "step": step, **{f"val_{k}": v for k, v in ev.items()}})
            return ev

        evaluate(0)
        run.bar = run.progress(steps, "DPO")

        def on_step(rec: dict[str, float]) -> None:
            history.append(rec)
            run.write({"type": "train", **rec})
            if rec["step"] % cfg.eval_interval == 0 and rec["step"] != steps:
                evaluate(int(rec["step"]))
            if run.bar is not None:
                run.bar.update(1)
                run.bar.set_postfix(loss=f"{rec['loss']:.3f}", margin=f"{rec['margin']:.2f}",
                                    acc=f"{rec['accuracy']:.2f}")

        t0 = time.perf_counter()
        it.train_dpo(backend, enc, run.eot, steps, cfg.batch_size, cfg.beta, cfg.lr, cfg.seed, cfg.average_logprobs,
                     log=log, on_step=on_step)
        train_time = time.perf_counter() - t0
        if run.bar is not None:
            run.bar.close()
            run.bar = None
        final_eval = evaluate(steps)
        paths = run.save(backend, {"beta": cfg.beta, "pairs": cfg.pairs})
        scores, score_time = run.score(backend)
    finally:
        run.close()
    last = history[-20:]
    result = {
        "stage": "dpo", "track": track_name, "mode": cfg.mode, "data": cfg.data, "lang": run.lang,
        "base": str(run.ckpt), "reference": str(run.ckpt), "steps": len(history), "pairs": cfg.pairs,
        "pair_counts": {**counts, "used": len(enc), "encode_skipped": enc.skipped}, "beta": cfg.beta,
        "train_time_s": train_time, "score_time_s": score_time, "trainable_params": trainable, "total_params": total,
        **{f"final_{k}": float(np.mean([r[k] for r in last])) for k in ("loss", "margin", "accuracy")},
        "val": final_eval, "eval_split": cfg.eval_split, "scores": scores, **paths, "config": _config_dict(cfg),
    }
    atomic_write_json(run.out / "result.json", result)
    _summary(result, "SFT+DPO", log)
    return result


# ---------------------------------------------------------------------------- 评测任意检查点
def evaluate_checkpoint(cfg: EvalConfig, mod: Any, track_name: str, log: TextIO | None = None) -> dict[str, Any]:
    """在基准（或其它指令数据）的一个划分上给检查点打分；返回 {"checkpoint", "split", "lang", "scores", "answers"}。"""
    log = log or sys.stderr
    if track_name != "gpt_torch" and cfg.device != "auto":
        raise UsageError(NO_DEVICE.format(track=track_name))
    check_data_source(cfg.data)
    ckpt = find_base_checkpoint(cfg.ckpt)
    model_cfg, state, tok, _, meta = load_base_model(ckpt, cfg.tokenizer)
    eot = eot_id_of(tok)
    kwargs: dict[str, Any] = dict(seed=0, dtype=cfg.dtype)
    if track_name == "gpt_torch":
        kwargs["device"] = cfg.device
    model = mod.build_instruct_model(model_cfg, state, "full", **kwargs)
    splits, default_lang = load_instruct_splits(cfg.data, task_list(cfg.tasks), cfg.split_seed)
    lang = cfg.lang
    if lang == "auto":  # 内置数据用它自己的语言；自己的数据文件按检查点记录的模板语言
        lang = (meta.get("lang") if cfg.data not in BUILTIN_DATA else None) or default_lang
    entries = getattr(splits, cfg.split)[: cfg.limit or None]
    if not entries:
        raise DataError(f"{cfg.data} 的 {cfg.split} 划分为空，无法评测")
    t0 = time.perf_counter()
    scores, answers = score_entries(lambda ids, n, eos: mod.answer(model, ids, n, eos), entries, tok, lang,
                                    cfg.max_new_tokens, model_cfg.context_length, cfg.progress)
    print(f"{ckpt}：{cfg.split} 集 {len(entries)} 题，用时 {time.perf_counter() - t0:.1f} 秒（结束词元 id {eot}）",
          file=log)
    rows = answer_rows(entries, answers)
    out = {"checkpoint": str(ckpt), "track": track_name, "data": cfg.data, "split": cfg.split, "lang": lang,
           "n": len(entries), "scores": scores}
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.out, out)
    if cfg.answers:
        Path(cfg.answers).parent.mkdir(parents=True, exist_ok=True)
        _write_jsonl(Path(cfg.answers), rows)
    return {**out, "answers": answers}


__all__ = [
    "BUILTIN_DATA", "DPOConfig", "EvalConfig", "INSTRUCT_TASK", "InstructConfig", "SFTConfig", "answer_rows",
    "check_data_source", "evaluate_checkpoint", "load_instruct_splits", "make_pairs", "read_pairs_file", "run_dpo",
    "run_sft", "score_entries", "task_list",
]
