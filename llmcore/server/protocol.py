"""OpenAI Chat Completions 协议的请求校验与响应格式（与 Web 框架无关）。

只实现我们用得到的子集：model、messages、stream、stream_options.include_usage、temperature、top_p、
max_tokens（或 max_completion_tokens）、stop、seed、n=1；另外接受 top_k（vLLM 等服务器也接受）。
不认识的字段忽略（OpenAI 客户端会带上一些可选字段）。出错时抛出 `APIError`，
其 body() 是 OpenAI 的错误格式：{"error": {"message", "type", "param", "code"}}。
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .chat_template import check_messages

MAX_STOP = 4  # OpenAI 最多允许 4 个停止字符串


class APIError(Exception):
    """以 OpenAI 错误格式返回给客户端的错误。"""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    """校验过的请求。"""

    model: str
    messages: list[dict[str, str]]
    stream: bool = False
    include_usage: bool = False
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


def parse_json(raw: bytes) -> dict[str, Any]:
    """请求体 → JSON 对象；不是合法 JSON 或不是对象时 400。"""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"请求体不是合法的 JSON：{e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"请求体应是 JSON 对象，收到 {type(data).__name__}", code="invalid_json")
    return data


def _number(data: dict[str, Any], key: str, lo: float, hi: float, default: Any, lo_open: bool = False) -> Any:
    v = data.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise APIError(400, f"{key} 应是数字，收到 {v!r}", param=key, code="invalid_type")
    if v < lo or v > hi or (lo_open and v == lo):
        rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise APIError(400, f"{key} 应在 {rng} 内，收到 {v}", param=key, code="invalid_value")
    return v


def _integer(data: dict[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    v = data.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise APIError(400, f"{key} 应是整数，收到 {v!r}", param=key, code="invalid_type")
    if v < lo or (hi is not None and v > hi):
        raise APIError(400, f"{key} 应在 [{lo}, {hi if hi is not None else '∞'}] 内，收到 {v}", param=key,
                       code="invalid_value")
    return v


def _content_text(content: Any, i: int) -> str:
    """content 可以是字符串，也可以是 [{"type": "text", "text": ...}, ...]（只接受文本部分）。"""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise APIError(400, f"messages[{i}].content 应是字符串或文本片段列表", param=f"messages[{i}].content",
                   code="invalid_type")


def parse_chat_request(data: dict[str, Any]) -> ChatRequest:
    """校验 /v1/chat/completions 的请求体。"""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "缺少 model（应是模型名字符串，见 GET /v1/models）", param="model",
                       code="missing_required_parameter")
    msgs = data.get("messages")
    if msgs is None:
        raise APIError(400, "缺少 messages（应是消息列表）", param="messages", code="missing_required_parameter")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages 应是非空列表", param="messages", code="invalid_value")
    messages: list[dict[str, str]] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] 应是对象", param=f"messages[{i}]", code="invalid_type")
        role = m.get("role")
        if role == "developer":  # OpenAI 新的名字，含义同 system
            role = "system"
        messages.append({"role": role, "content": _content_text(m.get("content"), i)})  # type: ignore[dict-item]
    try:
        check_messages(messages)
    except ValueError as e:
        raise APIError(400, str(e), param="messages", code="invalid_value") from None
    stream = data.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise APIError(400, f"stream 应是 true/false，收到 {stream!r}", param="stream", code="invalid_type")
    opts = data.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise APIError(400, "stream_options 应是对象", param="stream_options", code="invalid_type")
    n = _integer(data, "n", 1)
    if n not in (None, 1):
        raise APIError(400, f"本服务器每次只生成一个回复（n=1），收到 n={n}", param="n", code="invalid_value")
    max_tokens = _integer(data, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(data, "max_tokens", 1)
    stop = data.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
        stops = tuple(stop)
    else:
        raise APIError(400, f"stop 应是字符串或至多 {MAX_STOP} 个字符串的列表，收到 {stop!r}", param="stop",
                       code="invalid_value")
    top_p = _number(data, "top_p", 0.0, 1.0, None, lo_open=True)
    return ChatRequest(
        model=model, messages=messages, stream=bool(stream), include_usage=bool(opts.get("include_usage")),
        temperature=float(_number(data, "temperature", 0.0, 2.0, 1.0)),
        top_p=None if top_p is None or top_p >= 1.0 else float(top_p),
        top_k=_integer(data, "top_k", 1), max_tokens=max_tokens, stop=stops,
        seed=_integer(data, "seed", -(2**63), 2**63 - 1),
    )


def new_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, model: str, text: str, finish_reason: str, prompt_tokens: int,
               completion_tokens: int) -> dict[str, Any]:
    """非流式响应（object = chat.completion）。"""
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
          usage_: dict[str, int] | None = None, with_choice: bool = True) -> dict[str, Any]:
    """流式响应的一块（object = chat.completion.chunk）。"""
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                        "finish_reason": finish_reason}] if with_choice else []}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def sse(data: dict[str, Any] | str) -> bytes:
    """一条 server-sent event：'data: <JSON>' 加一个空行。"""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


__all__ = ["APIError", "ChatRequest", "chunk", "completion", "new_id", "parse_chat_request", "parse_json", "sse",
           "usage"]
