"""可选的“大模型评委”：通过本机 Ollama 服务的 HTTP 接口给回答打 0–100 分（原书第 7 章的做法）。

我们的基准有精确答案，主要用 instruct_eval 的 EM/F1；评委只用于没有唯一答案的数据（如原书的英文指令数据）。
只用标准库 urllib；每个请求都有超时，服务没开、模型没下载、超时都报清楚的中文错误，绝不挂起。

    judge = OllamaJudge(model="qwen3:0.6b")   # 先在本机运行 `ollama serve` 与 `ollama pull qwen3:0.6b`
    judge.check()                              # GET /api/tags：服务在不在、模型有没有
    judge.score(entry, "模型的回答")            # POST /api/generate（stream=false），返回 0–100 的整数或 None
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from ..errors import EXIT_DOWNLOAD, LLMError
from .instruct_data import format_input

DEFAULT_URL = "http://localhost:11434"
SCORE_PROMPT = {
    "zh": ("已知输入：\n{input}\n\n正确答案：\n{output}\n\n请给下面这个模型回答打分，0 到 100 分，100 分最好：\n"
           "{response}\n\n只回答一个整数。"),
    "en": ("Given the input `{input}` and correct output `{output}`, score the model response `{response}`"
           " on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only."),
}
_INT = re.compile(r"-?\d+")


class JudgeError(LLMError, ConnectionError):
    """评委服务不可用：没有运行、地址不对、模型不存在、超时或返回了看不懂的内容。"""

    exit_code = EXIT_DOWNLOAD


def parse_score(text: str) -> int | None:
    """从评委的回答里取第一个整数；不在 0..100 或没有整数时返回 None。"""
    m = _INT.search(text)
    if m is None:
        return None
    v = int(m.group())
    return v if 0 <= v <= 100 else None


class OllamaJudge:
    """Ollama HTTP 客户端：/api/generate 与 /api/chat（非流式），温度 0、固定种子。"""

    def __init__(self, model: str = "llama3", url: str = DEFAULT_URL, timeout: float = 60.0, seed: int = 123,
                 num_ctx: int = 2048) -> None:
        if not url.startswith(("http://", "https://")):
            raise JudgeError(f"评委地址 {url!r} 不对：应以 http:// 或 https:// 开头，例如 {DEFAULT_URL}")
        if not timeout > 0:
            raise JudgeError(f"评委请求的超时应为正数（秒），收到 {timeout!r}")
        self.model, self.url, self.timeout = model, url.rstrip("/"), float(timeout)
        self.options = {"temperature": 0, "seed": seed, "num_ctx": num_ctx}

    def _request(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.url + path
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        hint = f"请先运行 `ollama serve`，并 `ollama pull {self.model}`；或用 url 参数指定评委服务的地址"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:200]
            if e.code == 404:
                raise JudgeError(f"评委服务 {url} 返回 404（{detail}）：模型 {self.model!r} 可能还没下载；"
                                 f"请运行 `ollama pull {self.model}`") from None
            raise JudgeError(f"评委服务 {url} 返回 HTTP {e.code}：{detail}") from None
        except TimeoutError:
            raise JudgeError(f"评委服务 {url} 在 {self.timeout:g} 秒内没有回应（超时）；{hint}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise JudgeError(f"评委服务 {url} 在 {self.timeout:g} 秒内没有回应（超时）；{hint}") from None
            raise JudgeError(f"连不上评委服务 {url}（{reason}）；{hint}") from None
        try:
            out = json.loads(body)
        except json.JSONDecodeError:
            raise JudgeError(f"评委服务 {url} 返回的不是 JSON：{body[:80]!r}") from None
        if not isinstance(out, dict):
            raise JudgeError(f"评委服务 {url} 返回的 JSON 不是对象：{str(out)[:80]}")
        if "error" in out:
            raise JudgeError(f"评委服务 {url} 报错：{out['error']}")
        return out

    def models(self) -> list[str]:
        """服务上已下载的模型名（GET /api/tags）。"""
        tags = self._request("/api/tags")
        return [str(m.get("name", "")) for m in tags.get("models", []) if isinstance(m, dict)]

    def check(self) -> None:
        """确认服务在运行、模型已下载；否则报 JudgeError。"""
        names = self.models()
        if self.model not in names and f"{self.model}:latest" not in names:
            raise JudgeError(
                f"评委服务上没有模型 {self.model!r}（已有：{names or '无'}）；请运行 `ollama pull {self.model}`"
            )

    def generate(self, prompt: str) -> str:
        """POST /api/generate（stream=false），返回生成的文本。"""
        out = self._request("/api/generate", {"model": self.model, "prompt": prompt, "stream": False,
                                              "options": self.options})
        if not isinstance(out.get("response"), str):
            raise JudgeError(f"评委服务的 /api/generate 回应里没有 response 字段：{str(out)[:80]}")
        return out["response"]

    def chat(self, messages: Sequence[dict[str, str]]) -> str:
        """POST /api/chat（stream=false），返回助手消息的内容。"""
        out = self._request("/api/chat", {"model": self.model, "messages": list(messages), "stream": False,
                                          "options": self.options})
        msg = out.get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise JudgeError(f"评委服务的 /api/chat 回应里没有 message.content：{str(out)[:80]}")
        return msg["content"]

    def score(self, entry: dict[str, Any], response: str, lang: str = "zh") -> int | None:
        """给一条回答打分（0–100）；评委答非所问时返回 None。"""
        prompt = SCORE_PROMPT[lang].format(input=format_input(entry, lang), output=entry["output"], response=response)
        return parse_score(self.generate(prompt))

    def score_all(self, entries: Sequence[dict[str, Any]], responses: Sequence[str], lang: str = "zh"
                  ) -> list[int | None]:
        if len(entries) != len(responses):
            raise JudgeError(f"条目 {len(entries)} 条，回答 {len(responses)} 条，数量不一致")
        return [self.score(e, r, lang) for e, r in zip(entries, responses)]


__all__ = ["DEFAULT_URL", "JudgeError", "OllamaJudge", "SCORE_PROMPT", "parse_score"]
