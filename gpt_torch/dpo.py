"""指令微调与偏好调优（第 7 章）的 PyTorch 版本：与 gpt_numpy/dpo.py 同名、同公式、同结果。

    SFT：  loss = 交叉熵(model(inputs), targets)，targets 里 -100 的位置不计
    DPO：  logπ(y|x) = Σ_{targets ≠ -100} log softmax(model(inputs))[targets]       (B,)
           L = −mean log σ(β·[(logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l))])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llmcore.finetune.dpo_data import DPOStats, check_beta, preference_stats
from llmcore.finetune.sft_data import IGNORE_INDEX

from .model import GPTModel


def _as_long(x: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x if isinstance(x, torch.Tensor) else np.asarray(x), dtype=torch.long, device=device)


def sft_loss(model: GPTModel, inputs: Any, targets: Any) -> torch.Tensor:
    """指令微调的损失：对所有 targets ≠ -100 的位置取平均的交叉熵。"""
    device = model.tok_emb.weight.device
    logits = model(_as_long(inputs, device))  # (B, T, V)
    if logits.dtype != torch.float64:  # 半精度下在 float32 里算损失（与 model.loss 相同）
        logits = logits.float()
    return F.cross_entropy(logits.flatten(0, 1), _as_long(targets, device).flatten(), ignore_index=IGNORE_INDEX)


def sequence_logprobs(model: GPTModel, inputs: Any, targets: Any, average: bool = False) -> torch.Tensor:
    """每条回答的对数概率 logπ(y|x)，形状 (B,)：targets 为 -100 的位置不计；average=True 时除以计入的词元数。"""
    device = model.tok_emb.weight.device
    ids, tgt = _as_long(inputs, device), _as_long(targets, device)
    logits = model(ids)  # (B, T, V)
    if logits.dtype != torch.float64:
        logits = logits.float()
    b, t, v = logits.shape
    nll = F.cross_entropy(logits.reshape(b * t, v), tgt.reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="none").reshape(b, t)  # (B, T)，被忽略的位置为 0
    logp = -nll.sum(dim=-1)  # (B,)
    if average:
        count = (tgt != IGNORE_INDEX).sum(-1)
        if int(count.min()) == 0:
            raise ValueError("有一条序列没有任何计入的词元（targets 全是 -100），无法求平均")
        logp = logp / count.to(logp.dtype)
    return logp


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: Any, ref_rejected: Any,
    beta: float = 0.1,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """DPO 损失（标量张量），以及每条的 chosen / rejected 隐式奖励 β·(logπ − logπ_ref)（NumPy 数组）。"""
    beta = check_beta(beta)
    rc = torch.as_tensor(ref_chosen, dtype=policy_chosen.dtype, device=policy_chosen.device)
    rr = torch.as_tensor(ref_rejected, dtype=policy_rejected.dtype, device=policy_rejected.device)
    logits = (policy_chosen - policy_rejected) - (rc - rr)  # (B,)
    loss = -F.logsigmoid(beta * logits).mean()
    with torch.no_grad():
        chosen_rewards = (beta * (policy_chosen - rc)).double().cpu().numpy()
        rejected_rewards = (beta * (policy_rejected - rr)).double().cpu().numpy()
    return loss, chosen_rewards, rejected_rewards


def reference_logprobs(reference: GPTModel, batch: dict[str, Any], average: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """冻结的参照模型对 chosen 与 rejected 的对数概率（不建计算图，eval 模式），各 (B,)。"""
    was_training = reference.training
    reference.eval()
    with torch.no_grad():
        rc = sequence_logprobs(reference, batch["chosen_inputs"], batch["chosen_targets"], average)
        rr = sequence_logprobs(reference, batch["rejected_inputs"], batch["rejected_targets"], average)
    reference.train(was_training)
    return rc, rr


def dpo_batch_loss(
    policy: GPTModel, reference: GPTModel | None, batch: dict[str, Any], beta: float = 0.1,
    average: bool = False, ref_logprobs: tuple[Any, Any] | None = None,
) -> tuple[torch.Tensor, DPOStats]:
    """一批偏好对的 DPO 损失与统计。ref_logprobs 给出时（事先算好的参照对数概率）不再调用参照模型。"""
    if ref_logprobs is None:
        if reference is None:
            raise ValueError("dpo_batch_loss 需要参照模型 reference，或事先算好的 ref_logprobs")
        ref_logprobs = reference_logprobs(reference, batch, average)
    pc = sequence_logprobs(policy, batch["chosen_inputs"], batch["chosen_targets"], average)
    pr = sequence_logprobs(policy, batch["rejected_inputs"], batch["rejected_targets"], average)
    loss, cr, rr = dpo_loss(pc, pr, ref_logprobs[0], ref_logprobs[1], beta)
    return loss, preference_stats(float(loss.item()), cr, rr)


__all__ = ["dpo_batch_loss", "dpo_loss", "reference_logprobs", "sequence_logprobs", "sft_loss"]
