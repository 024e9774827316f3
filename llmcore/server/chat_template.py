"""对话模板 (chat template)：把 OpenAI 格式的消息列表变成模型要续写的词元。

我们的小 GPT 没有专门的特殊词元，预训练得到的模型用一个纯文本的中文模板：

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

from ..finetune.instruct_data import HEADERS, LANGS, format_example, format_prompt

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


class InstructChatTemplate:
    """第 7 章指令微调（SFT / DPO）用的 Alpaca 风格模板，让聊天页面与 API 能直接用第 7 章的模型。

    每条 user 消息是一条指令：第一个空行之前是“### 指令：”，之后（如果有）是“### 输入：”，正好对应
    `generate --instruction=… --input=…`。system 消息写在第一条指令的前面。之前的每一轮（指令 + 助手的回答）
    排成一条完整的训练样本，后面接 `<|endoftext|>`，和 SFT 时批里相邻的样本一样；最后一轮停在“### 回答：”之后。
    模型是逐条训练的，没有学过多轮对话：之前的轮次只是作为前文。
    """

    def __init__(self, lang: str = "zh") -> None:
        if lang not in LANGS:
            raise ValueError(f"指令模板的语言应是 {'/'.join(LANGS)} 之一，收到 {lang!r}")
        self.lang = lang
        self.name = f"instruct-{lang}"
        self.stop: tuple[str, ...] = ("\n\n" + HEADERS[lang][0],)  # 模型开始自己写下一条指令

    def entries(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        """消息 → 条目 {instruction, input, output}；最后一条的 output 为空（要生成的回答）。"""
        check_messages(messages)
        system = messages[0]["content"].strip() if messages[0]["role"] == "system" else ""
        turns = list(messages[1:] if messages[0]["role"] == "system" else messages)
        if not turns or turns[-1]["role"] != "user":
            raise ValueError("指令模板要求最后一条消息来自 user（那是要回答的指令）")
        out: list[dict[str, str]] = []
        for i, m in enumerate(turns):
            want = "user" if i % 2 == 0 else "assistant"
            if m["role"] != want:
                raise ValueError(f"指令模板要求 user 与 assistant 交替出现，第 {i + 1} 条对话消息应是 {want}，"
                                 f"收到 {m['role']}")
            if want == "user":
                instruction, _, extra = m["content"].strip().partition("\n\n")
                if system and not out:
                    instruction = f"{system}\n{instruction}"
                out.append({"instruction": instruction, "input": extra.strip(), "output": ""})
            else:
                out[-1]["output"] = m["content"]
        return out

    def render(self, messages: Sequence[Message]) -> str:
        *done, last = self.entries(messages)
        return "".join(format_example(e, self.lang) + "<|endoftext|>" for e in done) + format_prompt(last, self.lang)

    def encode(self, messages: Sequence[Message], tokenizer: Any) -> list[int]:
        *done, last = self.entries(messages)
        ids: list[int] = []
        for e in done:  # 结束词元按 id 插入；消息里写的 "<|endoftext|>" 仍按普通文本编码
            ids += tokenizer.encode(format_example(e, self.lang), disallowed_special=()) + [tokenizer.eot_id]
        return ids + tokenizer.encode(format_prompt(last, self.lang), disallowed_special=())


def template_for(config: dict[str, Any]) -> ChatTemplate:
    """按检查点 config.json 选模板：第 7 章的指令模型（task = instruct）用指令模板，其余用纯文本中文模板。"""
    if config.get("task") == "instruct":
        return InstructChatTemplate(config.get("lang", "zh"))
    return ZH_TEMPLATE


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
