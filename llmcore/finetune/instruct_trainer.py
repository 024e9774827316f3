"""指令微调 (SFT) 与偏好调优 (DPO) 的训练循环（两条轨道共用，与框架无关）。

后端由轨道提供（gpt_numpy.instruct.InstructBackend 或 gpt_torch.instruct.InstructBackend）：
``sft_step(inputs, targets, lr)``、``sft_eval_loss``、``reference_logprobs(batch)``、
``dpo_step(batch, ref_logprobs, beta, lr)``、``dpo_eval``、``answer(prompt_ids, max_new_tokens, eos_id)``。

    SFT：  encode_entries → iter_batches（补齐、移位、掩码）→ sft_step …；定期看验证损失
    DPO：  偏好对 → encode_pairs → collate_pairs → 参照模型的对数概率（冻结，每批算一次）→ dpo_step …
    评测：  每题贪心生成回答 → extract_response → instruct_eval.evaluate（EM / F1）
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from ..errors import UsageError
from ..trainer import TrainingDiverged
from .dpo_data import PairData, check_beta, iter_pair_batches
from .instruct_data import format_prompt
from .instruct_eval import evaluate, extract_response
from .sft_data import SFTData, iter_batches


def _check(steps: int, batch_size: int, n: int, what: str) -> None:
    if steps < 1 or batch_size < 1:
        raise UsageError(f"steps 与 batch_size 应为正整数，收到 steps={steps!r}、batch_size={batch_size!r}")
    if n == 0:
        raise UsageError(f"{what}为空：没有可训练的样本")


def sft_eval(backend: Any, data: SFTData, pad_id: int, batch_size: int = 8, mask_prompt: bool = True,
             allowed_max_length: int | None = None) -> float:
    """数据上的平均 SFT 损失（按批平均）。"""
    losses = [backend.sft_eval_loss(x, y) for x, y in iter_batches(data, batch_size, pad_id, mask_prompt=mask_prompt,
                                                                   allowed_max_length=allowed_max_length)]
    return float(np.mean(losses)) if losses else float("nan")


def train_sft(
    backend: Any, data: SFTData, pad_id: int, steps: int, batch_size: int = 8, lr: float = 5e-5,
    mask_prompt: bool = True, seed: int = 123, val: SFTData | None = None, eval_every: int = 0,
    log: TextIO | None = None, allowed_max_length: int | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """SFT 训练 steps 步（数据用完就重新打乱再来）；返回逐步记录 [{"step", "loss"[, "val_loss"]}]。

    allowed_max_length：每批截断到这个长度（原书的 allowed_max_length）；on_step：每步结束时用这一步的记录调用。
    """
    _check(steps, batch_size, len(data), "SFT 训练数据")
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    step = 0
    while step < steps:
        for x, y in iter_batches(data, batch_size, pad_id, shuffle=True, rng=rng, mask_prompt=mask_prompt,
                                 allowed_max_length=allowed_max_length):
            loss = backend.sft_step(x, y, lr)
            step += 1
            if not np.isfinite(loss):
                raise TrainingDiverged(f"SFT 第 {step} 步损失为 {loss}：训练发散，试试更小的 lr")
            rec = {"step": step, "loss": loss}
            if val is not None and eval_every and (step % eval_every == 0 or step == steps):
                rec["val_loss"] = sft_eval(backend, val, pad_id, batch_size, mask_prompt, allowed_max_length)
                print(f"SFT 第 {step} 步：训练损失 {loss:.4f}，验证损失 {rec['val_loss']:.4f}", file=log or sys.stderr)
            history.append(rec)
            if on_step is not None:
                on_step(rec)
            if step >= steps:
                break
    return history


def train_dpo(
    backend: Any, pairs: PairData, pad_id: int, steps: int, batch_size: int = 8, beta: float = 0.1,
    lr: float = 5e-6, seed: int = 123, average: bool = False, log_every: int = 0, log: TextIO | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """DPO 训练 steps 步；参照模型的对数概率每批算一次。返回逐步记录（损失、奖励、奖励差、偏好准确率）。

    on_step：每步结束时用这一步的记录调用（命令行用它写 metrics.jsonl、做验证）。
    """
    _check(steps, batch_size, len(pairs), "偏好对")
    beta = check_beta(beta)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    step = 0
    while step < steps:
        for batch in iter_pair_batches(pairs, batch_size, pad_id, shuffle=True, rng=rng):
            ref = backend.reference_logprobs(batch, average)
            stats = backend.dpo_step(batch, ref, beta, lr, average)
            step += 1
            if not np.isfinite(stats.loss):
                raise TrainingDiverged(f"DPO 第 {step} 步损失为 {stats.loss}：训练发散，试试更小的 lr 或 beta")
            rec = {"step": step, **stats.as_dict()}
            history.append(rec)
            if on_step is not None:
                on_step(rec)
            if log_every and step % log_every == 0:
                print(f"DPO 第 {step} 步：损失 {stats.loss:.4f}，奖励差 {stats.margin:.4f}，"
                      f"偏好准确率 {stats.accuracy:.2f}", file=log or sys.stderr)
            if step >= steps:
                break
    return history


def dpo_evaluate(
    backend: Any, pairs: PairData, pad_id: int, beta: float, batch_size: int = 8, average: bool = False,
) -> dict[str, float]:
    """偏好对上的平均 DPO 统计（不更新参数）：{"loss", "chosen_reward", "rejected_reward", "margin", "accuracy"}。

    按条数加权平均（最后一批可能较小）。
    """
    if len(pairs) == 0:
        raise UsageError("偏好对为空：没有可评估的样本")
    beta = check_beta(beta)
    sums: dict[str, float] = {}
    n = 0
    for batch in iter_pair_batches(pairs, batch_size, pad_id):
        b = len(batch["chosen_inputs"])
        stats = backend.dpo_eval(batch, backend.reference_logprobs(batch, average), beta, average).as_dict()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v * b
        n += b
    return {k: v / n for k, v in sums.items()}


def generate_answers(
    backend: Any, entries: Sequence[dict[str, Any]], tokenizer: Any, lang: str = "zh", max_new_tokens: int = 64,
    context_length: int | None = None, on_answer: Callable[[int], None] | None = None,
) -> list[str]:
    """逐题贪心生成，返回取出的回答（只取第一行）。提示太长时只保留末尾，给回答留出 max_new_tokens。

    on_answer：每答完一题用已答的题数调用（进度条用）。
    """
    eos = tokenizer.eot_id
    out = []
    for e in entries:
        ids = tokenizer.encode(format_prompt(e, lang))
        if context_length is not None:
            ids = ids[-max(context_length - max_new_tokens, 1) :]
        new = backend.answer(ids, max_new_tokens, eos)
        out.append(extract_response(tokenizer.decode(new), lang, first_line=True))
        if on_answer is not None:
            on_answer(len(out))
    return out


def evaluate_backend(
    backend: Any, entries: Sequence[dict[str, Any]], tokenizer: Any, lang: str = "zh", max_new_tokens: int = 64,
    context_length: int | None = None, on_answer: Callable[[int], None] | None = None,
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """生成并打分：返回 ({任务: {n, exact, f1}}, 回答列表)。"""
    answers = generate_answers(backend, entries, tokenizer, lang, max_new_tokens, context_length, on_answer)
    return evaluate(entries, answers), answers


__all__ = ["dpo_evaluate", "evaluate_backend", "generate_answers", "sft_eval", "train_dpo", "train_sft"]
