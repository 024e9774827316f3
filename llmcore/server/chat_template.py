"""对话模板 (chat template)：把 OpenAI 格式的消息列表变成模型要续写的词元。

我们的小 GPT 没有专门的特殊词元，用一个纯文本的中文模板（第 7 章按同一格式做指令微调）：

    系统：{system 内容}\\n        （可选，只能出现在开头）
    用户：{user 内容}\\n
    助手：{assistant 内容}\\n
    ……
    助手：                      ← 生成从这里开始

训练数据里每条助手回复后面接 `<|endoftext|>`；推理时遇到它、或生成出 "\\n用户：" / "\\n系统："
（模型开始替用户说话）就停下。消息内容里的 "<|endoftext|>" 等字样按普通文本编码，用户无法借此伪造特殊词元。

别的模型（如 Qwen3）可以提供自己的模板：任何有 `name`、`stop` 与 `encode(messages, tokenizer)`
的对象都行（见 `ChatTemplate`）。
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Message = dict[str, str]
"""一条消息：{"role": "system" | "user" | "assistant", "content": 文本}。"""

ROLES = ("system", "user", "assistant")


class ChatTemplate(Protocol):
    """对话模板的接口。"""

    name: str
    stop: tuple[str, ...]  # 默认的停止字符串（与请求里的 stop 合并）

    def render(self, messages: Sequence[Message]) -> str:
        """渲染成文本（含结尾的生成提示），用于展示与调试。"""
        ...

    def encode(self, messages: Sequence[Message], tokenizer: Any) -> list[int]:
        """渲染并编码成词元 id。"""
        ...


class ChineseChatTemplate:
    """上面描述的纯文本中文模板。"""

    name = "zh-simple"
    prefix = {"system": "系统：", "user": "用户：", "assistant": "助手："}
    stop: tuple[str, ...] = ("\n用户：", "\n系统：")

    def render(self, messages: Sequence[Message]) -> str:
        check_messages(messages)
        parts = [f"{self.prefix[m['role']]}{m['content']}\n" for m in messages]
        return "".join(parts) + self.prefix["assistant"]

    def encode(self, messages: Sequence[Message], tokenizer: Any) -> list[int]:
        return tokenizer.encode(self.render(messages), disallowed_special=())


def check_messages(messages: Sequence[Message]) -> None:
    """消息列表必须非空；角色只能是 system/user/assistant，system 只能在开头；内容是字符串。"""
    if not messages:
        raise ValueError("messages 不能为空")
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role 应是 {'/'.join(ROLES)} 之一，收到 {role!r}")
        if role == "system" and i != 0:
            raise ValueError(f"system 消息只能放在第一条，messages[{i}] 不是")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}].content 应是字符串，收到 {type(m.get('content')).__name__}")


ZH_TEMPLATE = ChineseChatTemplate()

__all__ = ["ROLES", "ZH_TEMPLATE", "ChatTemplate", "ChineseChatTemplate", "Message", "check_messages"]
