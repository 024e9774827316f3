"""Qwen3（稠密模型，Hugging Face `Qwen3ForCausalLM` 布局）的框架无关部分。

- `config.py`：从 config.json 读出结构参数（不支持的架构给出明确的错误）；
- `weights.py`：按 Hugging Face 的键名读取 safetensors（内存映射、逐个张量转换，bf16 → float32）；
- `chat.py`：Qwen 的对话模板（system / user / assistant，思考模式开或关）；
- `generate.py`：对话生成循环（温度、top-k、top-p、重复惩罚、停止串）；
- `hub.py`：经 huggingface_hub 下载（遵守 HF_ENDPOINT、HF_HUB_OFFLINE，复用已有缓存）。

两条轨道的模型在 gpt_numpy/qwen3.py 与 gpt_torch/qwen3.py，参数名都是 Hugging Face 的键名。
"""

from .chat import render_chat
from .config import SUPPORTED_ARCHITECTURES, Qwen3Config
from .weights import Qwen3Checkpoint, expected_shapes, open_checkpoint

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "Qwen3Checkpoint",
    "Qwen3Config",
    "expected_shapes",
    "open_checkpoint",
    "render_chat",
]
