"""指令微调与 DPO 的 tinytensor 后端：建模型（全参数或 LoRA）、SFT 一步、DPO 一步、贪心生成回答。

训练循环在 llmcore/finetune/instruct_trainer.py（两条轨道共用）；与 gpt_torch/instruct.py 同接口。
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import tinytensor as tt
from llmcore.config import GPTConfig
from llmcore.finetune.dpo_data import DPOStats
from llmcore.weight_init import init_arrays

from . import dpo, lora
from .classifier import FinetuneOptimizer
from .generate import generate
from .model import GPTModel

INSTRUCT_MODES = ("full", "lora")


def build_instruct_model(cfg: GPTConfig, state: dict[str, np.ndarray] | None, mode: str = "full", seed: int = 123,
                         lora_rank: int = 8, lora_alpha: float = 16.0, lora_targets: str = "all",
                         dtype: str = "float32") -> GPTModel:
    """载入基座（state 为 None 时按 seed 随机初始化）；lora 方式冻结原参数、只训练 LoRA 的 A、B。"""
    if mode not in INSTRUCT_MODES:
        raise ValueError(f"训练方式 {mode!r} 不支持：应为 {' 或 '.join(INSTRUCT_MODES)}")
    tt.set_default_dtype(np.dtype(dtype))
    tt.manual_seed(seed)
    model = GPTModel(cfg)
    if state is None:
        state = init_arrays({k: v.shape for k, v in model.state_dict().items()}, cfg, seed, "gpt2", dtype)
    model.load_arrays(state)
    if mode == "lora":
        lora.replace_linear_with_lora(model, lora_rank, lora_alpha, lora_targets, seed + 1)
    return model


def frozen_copy(model: GPTModel) -> GPTModel:
    """参照模型：同样的权重（LoRA 先按当前值合并进副本），eval 模式，参数不要梯度。"""
    ref = GPTModel(model.cfg)
    state = {k: v.data.copy() for k, v in model.state_dict().items()}
    for name, m in lora.lora_modules(model).items():  # 副本里没有 LoRA 层：把增量并进权重
        state.pop(f"{name}.lora.A")
        state.pop(f"{name}.lora.B")
        w = state.pop(f"{name}.linear.weight")
        with tt.no_grad():
            state[f"{name}.weight"] = w + m.lora.delta_weight().data
        if f"{name}.linear.bias" in state:
            state[f"{name}.bias"] = state.pop(f"{name}.linear.bias")
    ref.load_arrays(state)
    for p in ref.parameters():
        p.requires_grad = False
    ref.eval()
    return ref


def answer(model: GPTModel, prompt_ids: list[int], max_new_tokens: int, eos_id: int) -> list[int]:
    """贪心生成（温度 0）回答的词元，遇到结束词元停止（不含它）。"""
    with tt.no_grad():
        out = generate(model, np.asarray([prompt_ids]), max_new_tokens, eos_id=eos_id)[0, len(prompt_ids):]
    new = out.tolist()
    return new[: new.index(eos_id)] if eos_id in new else new


class InstructBackend(FinetuneOptimizer):
    """共用训练循环的 tinytensor 后端：sft_step / dpo_step / reference_logprobs / answer。"""

    track = "gpt_numpy"

    def __init__(self, model: GPTModel, lr: float = 5e-5, weight_decay: float = 0.1, grad_clip: float = 1.0,
                 reference: GPTModel | None = None) -> None:
        super().__init__(model, lr, weight_decay, grad_clip)
        self.reference = reference

    def sft_step(self, inputs: np.ndarray, targets: np.ndarray, lr: float) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = dpo.sft_loss(self.model, inputs, targets)
        self._update(loss, lr)
        return float(loss.item())

    def sft_eval_loss(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        self.model.eval()
        with tt.no_grad():
            return float(dpo.sft_loss(self.model, inputs, targets).item())

    def reference_logprobs(self, batch: dict[str, np.ndarray], average: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if self.reference is None:
            raise ValueError("DPO 需要参照模型：InstructBackend(reference=frozen_copy(model))")
        return dpo.reference_logprobs(self.reference, batch, average)

    def dpo_step(self, batch: dict[str, np.ndarray], ref_logprobs: tuple[Any, Any], beta: float, lr: float,
                 average: bool = False) -> DPOStats:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss, stats = dpo.dpo_batch_loss(self.model, None, batch, beta, average, ref_logprobs)
        self._update(loss, lr)
        return stats

    def dpo_eval(self, batch: dict[str, np.ndarray], ref_logprobs: tuple[Any, Any], beta: float,
                 average: bool = False) -> DPOStats:
        self.model.eval()
        with tt.no_grad():
            return dpo.dpo_batch_loss(self.model, None, batch, beta, average, ref_logprobs)[1]

    def answer(self, prompt_ids: list[int], max_new_tokens: int, eos_id: int) -> list[int]:
        """贪心生成（温度 0）回答的词元，遇到结束词元停止（不含它）。"""
        return answer(self.model, prompt_ids, max_new_tokens, eos_id)

    def num_parameters(self) -> tuple[int, int]:
        return lora.count_parameters(self.model)

    def save_adapter(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """只存 LoRA 适配器（A、B），格式见 llmcore/finetune/lora_io.py。"""
        return lora.save_adapter(self.model, path, extra)

    def merged_state(self) -> dict[str, np.ndarray]:
        """要存进检查点的权重：有 LoRA 时先把增量并回原权重（就地合并，之后模型就是普通 GPT）。"""
        if lora.lora_modules(self.model):
            lora.merge_lora(self.model)
        return self.model.state_arrays()


__all__ = ["INSTRUCT_MODES", "InstructBackend", "answer", "build_instruct_model", "frozen_copy"]
