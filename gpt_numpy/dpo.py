"""指令微调与偏好调优（第 7 章）的 tinytensor 版本：SFT 损失、回答的序列对数概率、DPO 损失。

    SFT：  loss = 交叉熵(model(inputs), targets)，targets 里 -100 的位置（补齐、可选的提示）不计
    DPO：  logπ(y|x) = Σ_{targets ≠ -100} log softmax(model(inputs))[targets]       (B,)
           L = −mean log σ(β·[(logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l))])

参照模型 π_ref 冻结：它的对数概率在 tt.no_grad() 下算，是常数。公式与统计见 llmcore/finetune/dpo_data.py；
与 gpt_torch/dpo.py 一一对应，测试检查两边的损失与每个参数的梯度相同。
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tinytensor as tt
from llmcore.finetune.dpo_data import DPOStats, check_beta, preference_stats
from llmcore.finetune.sft_data import IGNORE_INDEX
from tinytensor.nn import functional as F

from .model import GPTModel


def sft_loss(model: GPTModel, inputs: Any, targets: Any) -> tt.Tensor:
    """指令微调的损失：对所有 targets ≠ -100 的位置取平均的交叉熵（输出层与交叉熵融合计算）。"""
    return model.loss(np.asarray(inputs), np.asarray(targets))


def sequence_logprobs(model: GPTModel, inputs: Any, targets: Any, average: bool = False) -> tt.Tensor:
    """每条回答的对数概率 logπ(y|x)，形状 (B,)：targets 为 -100 的位置不计；average=True 时除以计入的词元数。

    等价于 log_softmax(logits).gather(-1, targets) 再按掩码求和；这里用 reduction="none" 的交叉熵
    （被忽略的位置为 0），省掉一个 (B, T, V) 的中间数组。
    """
    ids, tgt = np.asarray(inputs), np.asarray(targets)
    logits = model(ids)  # (B, T, V)
    b, t, v = logits.shape
    nll = F.cross_entropy(logits.reshape(b * t, v), tgt.reshape(-1), reduction="none").reshape(b, t)  # (B, T)
    logp = -nll.sum(dim=-1)  # (B,)
    if average:
        count = (tgt != IGNORE_INDEX).sum(-1)
        if count.min() == 0:
            raise ValueError("有一条序列没有任何计入的词元（targets 全是 -100），无法求平均")
        logp = logp / tt.tensor(count.astype(logp.dtype))
    return logp


def log_sigmoid(x: tt.Tensor) -> tt.Tensor:
    """log σ(x) = log_softmax([0, x]) 的第二项：借用 log_softmax 的稳定写法，x 很大或很小都不溢出。"""
    pair = tt.stack([tt.zeros_like(x), x], dim=-1)  # (B, 2)
    return F.log_softmax(pair, dim=-1)[:, 1]


def dpo_loss(
    policy_chosen: tt.Tensor, policy_rejected: tt.Tensor, ref_chosen: np.ndarray, ref_rejected: np.ndarray,
    beta: float = 0.1,
) -> tuple[tt.Tensor, np.ndarray, np.ndarray]:
    """DPO 损失（标量张量），以及每条的 chosen / rejected 隐式奖励 β·(logπ − logπ_ref)（NumPy 数组）。"""
    beta = check_beta(beta)
    rc = np.asarray(ref_chosen, dtype=policy_chosen.dtype)
    rr = np.asarray(ref_rejected, dtype=policy_rejected.dtype)
    logits = (policy_chosen - policy_rejected) - tt.tensor(rc - rr)  # (B,)
    loss = -log_sigmoid(logits * beta).mean()
    chosen_rewards = beta * (policy_chosen.data - rc)
    rejected_rewards = beta * (policy_rejected.data - rr)
    return loss, chosen_rewards.astype(np.float64), rejected_rewards.astype(np.float64)


def reference_logprobs(reference: GPTModel, batch: dict[str, np.ndarray], average: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """冻结的参照模型对 chosen 与 rejected 的对数概率（不建计算图，eval 模式），各 (B,)。"""
    was_training = reference.training
    reference.eval()
    with tt.no_grad():
        rc = sequence_logprobs(reference, batch["chosen_inputs"], batch["chosen_targets"], average).data
        rr = sequence_logprobs(reference, batch["rejected_inputs"], batch["rejected_targets"], average).data
    reference.train(was_training)
    return rc, rr


def dpo_batch_loss(
    policy: GPTModel, reference: GPTModel | None, batch: dict[str, np.ndarray], beta: float = 0.1,
    average: bool = False, ref_logprobs: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[tt.Tensor, DPOStats]:
    """一批偏好对的 DPO 损失与统计。ref_logprobs 给出时（事先算好的参照对数概率）不再调用参照模型。"""
    if ref_logprobs is None:
        if reference is None:
            raise ValueError("dpo_batch_loss 需要参照模型 reference，或事先算好的 ref_logprobs")
        ref_logprobs = reference_logprobs(reference, batch, average)
    pc = sequence_logprobs(policy, batch["chosen_inputs"], batch["chosen_targets"], average)
    pr = sequence_logprobs(policy, batch["rejected_inputs"], batch["rejected_targets"], average)
    loss, cr, rr = dpo_loss(pc, pr, ref_logprobs[0], ref_logprobs[1], beta)
    return loss, preference_stats(float(loss.item()), cr, rr)


__all__ = ["dpo_batch_loss", "dpo_loss", "log_sigmoid", "reference_logprobs", "sequence_logprobs", "sft_loss"]
