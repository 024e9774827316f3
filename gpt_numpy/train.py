"""NumPy 轨道的训练：tinytensor 上的训练后端 + ``train(tcfg)`` 入口。

训练循环本身在 trainer.py（两条轨道共用）；这里只实现框架相关的部分：
前向 + 交叉熵 + 反向、梯度裁剪、AdamW 更新、评估、采样、状态的保存与恢复。
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tinytensor as tt
from llmcore.config import GPTConfig, TrainConfig, build_model_config
from llmcore.trainer import TrainData, Trainer, TrainResult
from llmcore.weight_init import decay_mask, init_arrays
from tinytensor.nn import functional as F

from .generate import generate
from .model import GPTModel


class NumpyBackend:
    """tinytensor 训练后端（单进程）。"""

    track = "numpy"
    rank, world_size, is_main = 0, 1, True

    def __init__(self, cfg: GPTConfig, tcfg: TrainConfig) -> None:
        self.cfg, self.tcfg = cfg, tcfg
        self.dtype = np.dtype(tcfg.dtype)
        tt.set_default_dtype(self.dtype)
        tt.manual_seed(tcfg.seed)
        self.model = GPTModel(cfg)
        shapes = {k: v.shape for k, v in self.model.state_dict().items()}
        self.model.load_arrays(init_arrays(shapes, cfg, tcfg.seed, tcfg.init, tcfg.dtype))
        self.model.train()
        named = list(self.model.named_parameters())
        self.param_names = [n for n, _ in named]
        mask = decay_mask({n: p.shape for n, p in named}, tcfg.decay_all)
        groups = [
            {"params": [p for n, p in named if mask[n]], "weight_decay": tcfg.weight_decay},
            {"params": [p for n, p in named if not mask[n]], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        self.opt = tt.optim.AdamW(groups, lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=1e-8)
        self._ordered = [p for g in self.opt.param_groups for p in g["params"]]
        by_id = {id(p): n for n, p in named}
        self._ordered_names = [by_id[id(p)] for p in self._ordered]

    # -------------------------------------------------------- 训练
    def forward_backward(self, x: np.ndarray, y: np.ndarray, scale: float, sync: bool = True) -> float:
        loss = self.model.loss(x, y)  # 输出层与交叉熵融合，不保存 (B, T, V) 的 logits
        value = float(loss.item())
        # 梯度累积：每个小批次的梯度按 1/累积步数 缩放后相加
        (loss * scale if scale != 1.0 else loss).backward()
        return value

    def clip_grad_norm(self, max_norm: float) -> float:
        return float(tt.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item())

    def optimizer_step(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def eval_loss(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        self.model.eval()
        total, n = 0.0, 0
        with tt.no_grad():
            for x, y in batches:
                h = self.model.features(x)
                loss = F.linear_cross_entropy(h, self.model.out_head.weight, y, reduction="sum")
                total += float(loss.item())
                n += y.size
        self.model.train()
        return total / max(n, 1)

    def sample(self, prompt: np.ndarray, max_new_tokens: int, temperature: float, top_k: int, seed: int) -> list[int]:
        out = generate(self.model, prompt, max_new_tokens, temperature=temperature, top_k=top_k or None, seed=seed)
        return out[0, prompt.shape[1] :].tolist()

    # -------------------------------------------------------- 状态
    def model_arrays(self) -> dict[str, np.ndarray]:
        return self.model.state_arrays()

    def optim_arrays(self) -> tuple[dict[str, np.ndarray], int]:
        out: dict[str, np.ndarray] = {}
        step = 0
        for i, name in enumerate(self._ordered_names):
            st = self.opt.state.get(i)
            if st is None:
                continue
            out[f"{name}.exp_avg"] = st["exp_avg"]
            out[f"{name}.exp_avg_sq"] = st["exp_avg_sq"]
            step = st["step"]
        return out, step

    def load_state(self, model: dict[str, np.ndarray], optim: dict[str, np.ndarray], optim_step: int) -> None:
        self.model.load_arrays(model)
        self.opt.state = {}
        for i, name in enumerate(self._ordered_names):
            if f"{name}.exp_avg" in optim:
                self.opt.state[i] = {
                    "step": int(optim_step),
                    "exp_avg": np.array(optim[f"{name}.exp_avg"], dtype=self.dtype),
                    "exp_avg_sq": np.array(optim[f"{name}.exp_avg_sq"], dtype=self.dtype),
                }

    def rng_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"numpy": tt.get_rng_state()}, {}

    def set_rng_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if "numpy" in state:
            tt.set_rng_state(state["numpy"])

    def barrier(self) -> None:
        pass

    def agree(self, flag: bool) -> bool:
        return flag


def train(
    tcfg: TrainConfig, model_overrides: dict[str, Any] | None = None, data: TrainData | None = None
) -> TrainResult:
    """按配置训练（可续训），返回结果摘要。"""
    from llmcore.prepare import prepare_data
    from llmcore.train_state import LAST, find_checkpoint

    resuming = tcfg.resume != "never" and find_checkpoint(tcfg.out_dir, LAST) is not None
    data = data or prepare_data(tcfg, reuse_tokenizer=resuming)
    cfg = build_model_config(tcfg, model_overrides or {}, data.tokenizer.vocab_size)
    backend = NumpyBackend(cfg, tcfg)
    return Trainer(tcfg, cfg, backend, data).run()
