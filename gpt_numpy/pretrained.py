"""把 OpenAI 的 GPT-2 权重（Hugging Face 格式）载入 gpt_numpy 的 GPTModel。

    from gpt_numpy.pretrained import download_gpt2, load_hf_gpt2
    model = load_hf_gpt2(download_gpt2("124M"))

键名映射与配置转换见 hf_gpt2.py（两条轨道共用）。返回的模型处于 eval 模式。
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcore.gpt2_download import download_gpt2
from llmcore.hf_gpt2 import read_hf_gpt2

from .model import GPTModel


def load_hf_gpt2(path: str | Path, drop_rate: float | None = None, dtype: Any = None) -> GPTModel:
    """读取 save_pretrained 格式的目录（config.json + model.safetensors），返回 eval 模式的 GPTModel。

    drop_rate 为 None 时取 config.json 的 resid_pdrop（见 hf_gpt2.config_from_hf）；dtype 缺省为默认浮点类型。
    """
    cfg, state = read_hf_gpt2(path, drop_rate)
    model = GPTModel(cfg)
    if dtype is not None:
        model.to(dtype)
    model.load_arrays(state)
    model.eval()
    return model


__all__ = ["download_gpt2", "load_hf_gpt2"]
