"""分类微调（第 6 章）的 tinytensor 版本：把 GPT 的输出层换成 K 类的分类头，读最后一个真实词元。

    ids (B, T) 右侧补齐 → GPT 主体 → 最终 LayerNorm → 取第 lengths-1 个位置 (B, C) → out_head → (B, K)

参数名与 gpt_torch/classifier.py 相同（分类头仍叫 out_head，多了 out_head.bias），检查点两边通用。
训练循环在 llmcore/finetune/cls_trainer.py（两条轨道共用），这里只有前向、损失、反向与更新。
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import tinytensor as tt
from llmcore.checkpoint import CheckpointError, load_model_state, save_model_state
from llmcore.config import GPTConfig
from llmcore.finetune.cls_common import CLS_TASK, decay_names, head_init_arrays, trainable_names
from llmcore.weight_init import init_arrays
from tinytensor import nn
from tinytensor.nn import functional as F

from . import lora
from .model import GPTModel


def to_classifier(model: GPTModel, num_classes: int = 2, seed: int = 0) -> GPTModel:
    """把输出层换成 (C → num_classes，带偏置) 的分类头（初始值由共用函数按 seed 生成）。"""
    c = model.cfg.emb_dim
    head = nn.Linear(c, num_classes, bias=True)
    for k, v in head_init_arrays(c, num_classes, seed, "float64").items():
        getattr(head, k.split(".")[1]).data[...] = v
    model.out_head = head
    model.cfg = model.cfg.replace(tie_weights=False)  # 分类头不再与词元嵌入共享
    model.num_classes = num_classes
    return model


def class_logits(model: GPTModel, ids: Any, lengths: Any) -> tt.Tensor:
    """每条序列最后一个真实词元处的分类 logits，形状 (B, K)。"""
    ids = np.asarray(ids)
    lengths = np.asarray(lengths)
    if lengths.shape != (ids.shape[0],) or lengths.min() < 1 or lengths.max() > ids.shape[1]:
        raise ValueError(f"lengths 应为 1..{ids.shape[1]} 之间的 {ids.shape[0]} 个整数，收到 {lengths.tolist()}")
    h = model.features(ids)  # (B, T, C)
    last = h[np.arange(ids.shape[0]), lengths - 1]  # (B, C)：因果注意力下它看不到后面的补齐词元
    return model.out_head(last)  # (B, K)


def class_loss(model: GPTModel, ids: Any, lengths: Any, labels: Any) -> tt.Tensor:
    """平均交叉熵损失（只在最后一个真实词元上）。"""
    return F.cross_entropy(class_logits(model, ids, lengths), np.asarray(labels))


def set_trainable(model: GPTModel, mode: str) -> list[str]:
    """按训练方式打开/关闭 requires_grad，返回可训练参数名。"""
    names = trainable_names([n for n, _ in model.named_parameters()], mode, model.cfg.n_layers)
    keep = set(names)
    for n, p in model.named_parameters():
        p.requires_grad = n in keep
    return names


def build_classifier(cfg: GPTConfig, base_state: dict[str, np.ndarray] | None, num_classes: int, mode: str,
                     seed: int = 123, lora_rank: int = 8, lora_alpha: float = 16.0, lora_targets: str = "all",
                     dtype: str = "float32") -> GPTModel:
    """建分类模型：载入基座权重（base_state 为 None 时按 seed 随机初始化，即“从零训练”）、换分类头、
    （lora 方式）加 LoRA，再按训练方式设置可训练参数。"""
    tt.set_default_dtype(np.dtype(dtype))
    tt.manual_seed(seed)
    model = GPTModel(cfg)
    if base_state is None:
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        base_state = init_arrays(shapes, cfg, seed, "gpt2", dtype)
    model.load_arrays(base_state)
    to_classifier(model, num_classes, seed)
    if mode == "lora":
        lora.replace_linear_with_lora(model, lora_rank, lora_alpha, lora_targets, seed + 1)
    set_trainable(model, mode)
    return model


class FinetuneOptimizer:
    """微调后端共用的优化部分（第 6 章分类、第 7 章 SFT/DPO）：可训练参数分两组的 AdamW
    （二维以上的权重做权重衰减），每步设学习率、按全局范数裁剪梯度。"""

    def __init__(self, model: GPTModel, lr: float, weight_decay: float, grad_clip: float) -> None:
        self.model, self.grad_clip = model, grad_clip
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        decay = decay_names({n: p.shape for n, p in named})
        groups = [
            {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
        ]
        self.opt = tt.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        self._params = [p for _, p in named]

    def _update(self, loss: tt.Tensor, lr: float) -> None:
        """反向传播、裁剪、按 lr 更新一步（调用前先 zero_grad）。"""
        loss.backward()
        if self.grad_clip > 0:
            tt.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()


class ClassifierBackend(FinetuneOptimizer):
    """共用分类训练循环 (llmcore/finetune/cls_trainer.py) 的 tinytensor 后端。"""

    track = "gpt_numpy"

    def __init__(self, model: GPTModel, lr: float, weight_decay: float, grad_clip: float, mode: str) -> None:
        super().__init__(model, lr, weight_decay, grad_clip)
        self.mode = mode

    def train_step(self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray, lr: float) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = class_loss(self.model, ids, lengths, labels)
        self._update(loss, lr)
        return float(loss.item())

    @staticmethod
    def predict_with(model: GPTModel, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """不训练时的预测（命令行 classify 用）：logits (B, K)，float64。"""
        model.eval()
        with tt.no_grad():
            return class_logits(model, ids, lengths).data.astype(np.float64)

    def predict(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.predict_with(self.model, ids, lengths)

    def num_parameters(self) -> tuple[int, int]:
        return lora.count_parameters(self.model)

    def save_adapter(self, path: str | Path, extra: dict[str, Any]) -> Path:
        return lora.save_adapter(self.model, path, extra)

    def save(self, directory: str | Path, extra: dict[str, Any]) -> Path:
        """保存完整的分类检查点（有 LoRA 时先合并）。"""
        if lora.lora_modules(self.model):
            lora.merge_lora(self.model)
        return save_classifier(self.model, directory, extra)


def save_classifier(model: GPTModel, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """存成普通检查点格式，config.json 另记 task/num_classes 等（两条轨道都能读）。"""
    info = {"task": CLS_TASK, "num_classes": int(model.out_head.weight.shape[0]), **(extra or {})}
    return save_model_state(directory, model.state_arrays(), model.cfg, info)


def load_classifier(directory: str | Path, dtype: Any = None) -> tuple[GPTModel, dict[str, Any]]:
    """读分类检查点（任一轨道保存的），返回 (eval 模式的模型, config.json 全部内容)。"""
    state, cfg, meta = load_model_state(directory)
    if meta.get("task") != CLS_TASK:
        raise CheckpointError(f"{directory} 不是分类模型的检查点（没有 task={CLS_TASK!r}）；请先 finetune-cls")
    if dtype is not None:
        tt.set_default_dtype(np.dtype(dtype))
    model = GPTModel(cfg)
    to_classifier(model, int(meta["num_classes"]))
    model.load_arrays(state)
    model.eval()
    return model, meta


__all__ = [
    "ClassifierBackend", "build_classifier", "class_logits", "class_loss", "load_classifier", "save_classifier",
    "set_trainable", "to_classifier",
]
