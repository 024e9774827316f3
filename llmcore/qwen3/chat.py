"""Qwen 的对话模板 (chat template)。

Qwen3 用 ChatML 格式：每一轮是 ``<|im_start|>角色\\n内容<|im_end|>\\n``，角色是 system / user / assistant；
要模型接着说话时，末尾加上 ``<|im_start|>assistant\\n``（生成提示，generation prompt）。

思考模式 (thinking)：Qwen3 回答前可以先在 ``<think>…</think>`` 里写推理过程。
- 开（默认）：生成提示就是 ``<|im_start|>assistant\\n``，模型自己决定写多少思考；
- 关：生成提示后面直接放一个空的思考块 ``<think>\\n\\n</think>\\n\\n``，模型于是跳过思考、直接回答。
历史里的助手回复只保留 ``</think>`` 之后的正文（官方模板也这样做：旧的推理过程不再送回模型，省上下文）。
官方模板在工具调用的多步流程里会保留最后一个用户问题之后的推理；我们不做工具调用，所以一律去掉。

``render_chat`` 与 transformers 的 ``apply_chat_template(..., tokenize=False)`` 对普通对话给出相同的字符串。
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EMPTY_THINK = "<think>\n\n</think>\n\n"
ROLES = ("system", "user", "assistant")


def strip_thinking(text: str) -> str:
    """去掉回复里的思考块，只留正文（没有 </think> 时原样返回）。"""
    if THINK_CLOSE in text:
        text = text.split(THINK_CLOSE)[-1]
    return text.lstrip("\n")


def render_chat(
    messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, enable_thinking: bool = True
) -> str:
    """把 [{"role": ..., "content": ...}, ...] 渲染成模型看到的文本。system 只能出现在第一条。"""
    parts: list[str] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"第 {i} 条消息的角色 {role!r} 不受支持，应为 {', '.join(ROLES)} 之一")
        if not isinstance(content, str):
            raise ValueError(f"第 {i} 条消息的内容应为字符串，收到 {type(content).__name__}")
        if role == "system" and i != 0:
            raise ValueError(f"system 消息只能是第一条，却出现在第 {i} 条")
        if role == "assistant":
            content = strip_thinking(content)
        parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
        if not enable_thinking:
            parts.append(EMPTY_THINK)
    return "".join(parts)
