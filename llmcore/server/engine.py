"""服务端的“引擎”：一个模型在服务器眼里的全部样子，以及让请求排队、逐个生成的工人 (worker)。

服务器不认识 tinytensor 或 torch，只认识满足 `Engine` 接口的对象：

- `context_length`：上下文长度（提示词超过它就拒绝请求）；
- `stop`：默认的停止字符串（来自对话模板）；
- `encode_chat(messages) -> list[int]`：按模型自己的对话模板编码消息；
- `decode(ids) -> str`；
- `stream(ids, temperature, top_k, top_p, seed, max_new_tokens)`：逐个产出新词元 id（int）。

`GPTEngine` 用各轨道现成的 stream_generate 实现它（见 gpt_numpy/gpt_torch 的 __main__.py 里的 Track）。
`ModelWorker` 保证同一个模型的请求按到达顺序排队、一次只有一个在引擎里生成；生成在独立线程里进行，
事件循环始终能响应别的请求；每个请求有自己的取消标志，客户端断开只停掉它自己。
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .chat_template import ZH_TEMPLATE, ChatTemplate, Message


class Engine(Protocol):
    """服务器需要的模型接口（与框架无关）。"""

    context_length: int
    stop: tuple[str, ...]

    def encode_chat(self, messages: Sequence[Message]) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def stream(
        self, ids: Sequence[int], temperature: float, top_k: int | None, top_p: float | None, seed: int | None,
        max_new_tokens: int,
    ) -> Generator[int, None, None]: ...


class GPTEngine:
    """把一条轨道的模型、分词器和 stream 函数包装成 `Engine`。

    stream_fn 的签名与 llmcore.cli.Track.stream 相同：
    stream_fn(model, ids (1, T), n, temperature, top_k, top_p, eos_id, seed, use_cache) → 逐个产出 (1,) 数组。
    """

    def __init__(self, model: Any, tokenizer: Any, stream_fn: Callable[..., Generator[np.ndarray, None, None]],
                 template: ChatTemplate = ZH_TEMPLATE, context_length: int | None = None) -> None:
        self.model, self.tokenizer, self.stream_fn, self.template = model, tokenizer, stream_fn, template
        self.context_length = int(context_length or model.cfg.context_length)
        self.stop = tuple(template.stop)
        self.eos_id = getattr(tokenizer, "eot_id", None)

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        return self.template.encode(messages, self.tokenizer)

    def warmup(self) -> None:
        """启动时先生成几个词元：第一次前向要编译/载入 numba 内核（约 1 秒多），别让第一个用户来等。
        短提示走 KV 缓存的路径，满上下文的提示走窗口滑动后整段重算的路径，两种都预热。"""
        ids = self.encode_chat([{"role": "user", "content": "你好"}])
        for n in (min(len(ids), self.context_length), self.context_length):
            prompt = (ids * (n // max(len(ids), 1) + 1))[:n]
            for _ in self.stream(prompt, 1.0, None, None, 0, 2):
                pass

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def stream(self, ids: Sequence[int], temperature: float, top_k: int | None, top_p: float | None,
               seed: int | None, max_new_tokens: int) -> Generator[int, None, None]:
        arr = np.asarray([list(ids)], dtype=np.int64)  # (1, T)
        gen = self.stream_fn(self.model, arr, max_new_tokens, temperature, top_k, top_p, self.eos_id, seed, True)
        with contextlib.closing(gen):  # 提前停下时也让 stream_generate 的 finally 执行（恢复 train/eval 模式）
            for tok in gen:
                yield int(tok[0])


class TextAssembler:
    """把逐个到来的词元变成可以安全发出的文本增量，并处理停止字符串。

    - 字节级 BPE 可能把一个汉字拆成几个词元，解码结果末尾的 U+FFFD 先不发；
    - 文本末尾若可能是某个停止字符串的开头，也先扣住，直到确定不是；
    - 出现停止字符串时，文本截断在它之前（停止字符串本身不返回，与 OpenAI 相同）。
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str]) -> None:
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.sent = 0  # 已发出的字符数
        self.text = ""

    def push(self, token: int) -> tuple[str, bool]:
        """加入一个词元，返回 (可以发出的新文本, 是否遇到停止字符串)。"""
        self.ids.append(token)
        self.text = self.decode(self.ids)
        cut = self._find_stop()
        if cut is not None:
            self.text = self.text[:cut]
            return self._emit(len(self.text)), True
        stable = len(self.text.rstrip("\ufffd"))
        hold = max((k for s in self.stop for k in range(1, len(s)) if self.text[:stable].endswith(s[:k])), default=0)
        return self._emit(stable - hold), False

    def finish(self) -> str:
        """生成结束（长度用尽或 eos）：发出扣住的剩余文本。"""
        return self._emit(len(self.text))

    def _find_stop(self) -> int | None:
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.sent - longest)
        hits = [i for s in self.stop if (i := self.text.find(s, start)) >= 0]
        return min(hits) if hits else None

    def _emit(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out = self.text[self.sent : upto]
        self.sent = upto
        return out


@dataclass
class GenParams:
    """一次生成的参数（已经校验过）。"""

    ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Job:
    """排队中或正在生成的一个请求。emit(kind, payload) 由生成线程调用（须线程安全）。

    事件：("delta", 文本)、("done", {"finish_reason", "completion_tokens", "first_token_s", "gen_s"})、
    ("error", 消息)。
    """

    params: GenParams
    emit: Callable[[str, Any], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class ModelWorker:
    """一个模型一个工人：请求按到达顺序排队，同一时刻只有一个在引擎里生成。"""

    def __init__(self, name: str, engine: Engine, max_queue: int = 64) -> None:
        self.name, self.engine, self.max_queue = name, engine, max_queue
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()  # 队首是正在生成的请求
        self.shutdown = threading.Event()
        self.stats = {"completed": 0, "cancelled": 0, "failed": 0, "tokens": 0}

    @property
    def queued(self) -> int:
        """排队与正在生成的请求数。"""
        with self._cond:
            return len(self._queue)

    def busy(self) -> bool:
        return self.queued >= self.max_queue

    def submit(self, job: Job) -> None:
        """登记请求并开一个线程处理它（线程先排队，轮到它才生成）。"""
        with self._cond:
            self._queue.append(job)
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"gen-{self.name}", daemon=True)
        job.thread.start()

    def _wait_turn(self, job: Job) -> bool:
        with self._cond:
            while self._queue[0] is not job:
                if job.cancel.is_set() or self.shutdown.is_set():
                    self._queue.remove(job)
                    self._cond.notify_all()
                    return False
                self._cond.wait(timeout=0.05)
            return True

    def _run(self, job: Job) -> None:
        if not self._wait_turn(job):
            self._count("cancelled")
            job.emit("done", {"finish_reason": "cancelled", "completion_tokens": 0})
            return
        p = job.params
        info: dict[str, Any] = {"finish_reason": "length", "completion_tokens": 0, "first_token_s": None}
        text = TextAssembler(self.engine.decode, p.stop)
        t0 = time.perf_counter()
        try:
            gen = self.engine.stream(p.ids, p.temperature, p.top_k, p.top_p, p.seed, p.max_tokens)
            with contextlib.closing(gen):
                for tok in gen:
                    if job.cancel.is_set() or self.shutdown.is_set():
                        info["finish_reason"] = "cancelled"
                        break
                    info["completion_tokens"] += 1
                    if info["first_token_s"] is None:
                        info["first_token_s"] = time.perf_counter() - t0
                    delta, stopped = text.push(tok)
                    if delta:
                        job.emit("delta", delta)
                    if stopped:
                        info["finish_reason"] = "stop"
                        break
                else:  # 生成器自己结束：用完 max_tokens 是 length，否则是遇到了 eos
                    info["finish_reason"] = "length" if info["completion_tokens"] >= p.max_tokens else "stop"
            if info["finish_reason"] in ("length", "stop"):
                rest = text.finish()
                if rest:
                    job.emit("delta", rest)
            info["gen_s"] = time.perf_counter() - t0
            self._count("cancelled" if info["finish_reason"] == "cancelled" else "completed", info["completion_tokens"])
            job.emit("done", info)
        except Exception as e:  # 引擎出错只影响这一个请求
            self._count("failed")
            job.emit("error", f"生成出错：{type(e).__name__}: {e}")
        finally:
            with self._cond:
                self._queue.remove(job)
                self._cond.notify_all()

    def _count(self, key: str, tokens: int = 0) -> None:
        with self._cond:
            self.stats[key] += 1
            self.stats["tokens"] += tokens


__all__ = ["Engine", "GPTEngine", "GenParams", "Job", "ModelWorker", "TextAssembler"]
