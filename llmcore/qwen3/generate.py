"""Qwen3 的对话生成：抽样（温度、top-k、top-p、重复惩罚）、停止条件（停止词元、停止串）与多轮会话。

与框架无关：模型只需提供 ``step(ids (1, T), cache) -> 最后位置的 logits (1, V)``，缓存只需有可读写的 ``pos``
与 ``max_len``（两条轨道的 Qwen3 缓存都满足）。

多轮对话复用 KV 缓存：每轮把整段对话重新渲染、编码，与缓存里已有的词元比较，只把最长公共前缀之后的
部分送进模型（把 cache.pos 退回到公共前缀的长度即可，之后的旧键值会被覆盖）。上一轮回复里的思考块在
历史里会被去掉，所以公共前缀止于那里，之后的部分重新计算。
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sampling import check_sampling_args, sample_next
from .chat import IM_END, render_chat, strip_thinking

StepFn = Callable[[np.ndarray, Any], np.ndarray]


def apply_repetition_penalty(logits: np.ndarray, seen: Sequence[int], penalty: float) -> np.ndarray:
    """重复惩罚（CTRL 论文的做法，与 transformers 相同）：出现过的词元，正的 logit 除以 penalty、负的乘以 penalty。

    logits 形状 (V,) 或 (1, V)，返回新数组；penalty = 1 时不变。
    """
    if not penalty > 0:
        raise ValueError(f"repetition_penalty 必须 > 0（1 表示不惩罚），收到 {penalty}")
    out = np.array(logits, dtype=np.float64)
    if penalty == 1.0 or len(seen) == 0:
        return out
    idx = np.unique(np.asarray(seen, dtype=np.int64))
    row = out.reshape(-1, out.shape[-1])
    v = row[:, idx]
    row[:, idx] = np.where(v > 0, v / penalty, v * penalty)
    return out


@dataclass
class SamplingConfig:
    """抽样与停止设置。Qwen3 官方建议：思考模式 温度 0.6、top-p 0.95、top-k 20；非思考模式 0.7 / 0.8 / 20。"""

    temperature: float = 0.6
    top_k: int | None = 20
    top_p: float | None = 0.95
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None

    def check(self) -> None:
        check_sampling_args(self.temperature, self.top_k, self.top_p)
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty 必须 > 0，收到 {self.repetition_penalty}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens 不能为负，收到 {self.max_new_tokens}")


def stream_sample(
    step: StepFn,
    cache: Any,
    new_ids: Sequence[int],
    cfg: SamplingConfig,
    stop_ids: Sequence[int] = (),
    history: Sequence[int] = (),
    rng: np.random.Generator | None = None,
) -> Iterator[int]:
    """把 new_ids 接在缓存后面送入模型，然后逐个产出新词元；遇到 stop_ids 中的词元时停止（不产出它）。

    history：重复惩罚要看的已有词元（通常是整段提示）。缓存放不下时抛出 ValueError。
    """
    cfg.check()
    if len(new_ids) == 0:
        raise ValueError("至少要送入一个新词元")
    if cache.pos + len(new_ids) > cache.max_len:
        raise ValueError(f"提示共 {cache.pos + len(new_ids)} 个词元，超过了缓存长度 {cache.max_len}")
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    seen = list(history) + list(new_ids)
    logits = step(np.asarray([new_ids], dtype=np.int64), cache)
    stops = set(int(s) for s in stop_ids)
    for _ in range(cfg.max_new_tokens):
        if cfg.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
        tok = int(sample_next(np.asarray(logits).reshape(1, -1), cfg.temperature, cfg.top_k, cfg.top_p, rng)[0])
        if tok in stops:
            return
        yield tok
        seen.append(tok)
        if cache.pos >= cache.max_len:
            return  # 缓存已满：上下文用完
        logits = step(np.asarray([[tok]], dtype=np.int64), cache)


@dataclass
class ChatSession:
    """多轮对话：保存消息历史与缓存里的词元，每轮只计算新增的部分。

    on_overflow：提示超过缓存长度时，"error" 报错；"truncate" 丢掉最早的几轮对话（保留 system）并警告。
    """

    step: StepFn
    cache: Any
    tokenizer: Any
    system: str | None = None
    enable_thinking: bool = True
    on_overflow: str = "error"
    messages: list[dict[str, str]] = field(default_factory=list)
    cached_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_overflow not in ("error", "truncate"):
            raise ValueError(f"on_overflow 应为 'error' 或 'truncate'，收到 {self.on_overflow!r}")
        self.reset()

    def reset(self) -> None:
        """清空对话（/reset）。"""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.cached_ids = []
        self.cache.pos = 0

    def _prompt_ids(self) -> list[int]:
        text = render_chat(self.messages, add_generation_prompt=True, enable_thinking=self.enable_thinking)
        return self.tokenizer.encode(text, allowed_special="all")

    def _fit(self, reserve: int) -> list[int]:
        ids = self._prompt_ids()
        limit = self.cache.max_len - reserve
        while len(ids) > limit:
            if self.on_overflow == "error":
                raise ValueError(
                    f"对话共 {len(ids)} 个词元，加上预留给回复的 {reserve} 个，超过了上下文长度 {self.cache.max_len}；"
                    "请 /reset，或用 --on-overflow=truncate 自动丢掉最早的对话"
                )
            first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
            if len(self.messages) - first <= 1:
                raise ValueError(
                    f"这一条消息本身就有 {len(ids)} 个词元，超过了上下文长度 {self.cache.max_len} 减去预留的 {reserve}"
                )
            del self.messages[first : first + 2]  # 丢掉最早的一问一答
            print("警告：对话超过上下文长度，已丢掉最早的一轮", file=sys.stderr)
            ids = self._prompt_ids()
        return ids

    def reply(self, user: str, cfg: SamplingConfig, stop_ids: Sequence[int] = ()) -> Generator[str, None, None]:
        """加入用户消息并流式产出回复的文字片段。调用方中途停止迭代（例如 Ctrl-C）也会把已生成的部分记入历史。"""
        self.messages.append({"role": "user", "content": user})
        reserve = min(cfg.max_new_tokens, self.cache.max_len // 4)
        try:
            ids = self._fit(reserve)
        except ValueError:
            self.messages.pop()
            raise
        common = 0
        for a, b in zip(self.cached_ids, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # 至少送入一个词元，才有下一个位置的 logits
        self.cache.pos = common
        self.cached_ids = list(ids)
        out: list[int] = []
        printed = 0
        stops = list(stop_ids)
        im_end = self.tokenizer.special_tokens.get(IM_END)
        if im_end is not None:
            stops.append(im_end)
        text = ""
        try:
            for tok in stream_sample(self.step, self.cache, ids[common:], cfg, stops, ids[:common]):
                out.append(tok)
                self.cached_ids.append(tok)
                text = self.tokenizer.decode(out)
                stable = text.rstrip("\ufffd")  # 字节级 BPE 可能把一个汉字拆成几个词元：只输出、只比较完整的字
                hit = _find_stop(stable, cfg.stop_strings)
                if hit is not None:
                    text = stable[:hit]
                    if len(text) > printed:
                        yield text[printed:]
                    printed = len(text)
                    break
                if len(stable) > printed:
                    yield stable[printed:]
                    printed = len(stable)
            if len(text) > printed:  # 结束时还没凑成完整字符的字节，按替换字符输出，与记入历史的文字一致
                yield text[printed:]
        finally:
            # 缓存里最后一个词元的键值还没算（它是下一步的输入），从缓存的词元表里去掉
            self.cached_ids = self.cached_ids[: self.cache.pos]
            self.messages.append({"role": "assistant", "content": strip_thinking(text)})


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None
