"""指令微调 (SFT) 的数据通路（与框架无关）：编码条目、补齐成批、移位得到目标、掩码。

    条目 → 提示 (format_prompt) 与回答分别分词 → 词元序列 prompt + output
    → collate：每条末尾加一个 <|endoftext|>，右侧补齐到本批最长，输入 = 序列[:-1]，目标 = 序列[1:]，
      目标里的补齐位置写 -100（交叉熵忽略），可选把提示部分也写 -100，最后截断到 allowed_max_length。

一条长度为 n 的序列（不含结束词元）在批里的样子（P = 提示的词元数，T = 本批最长的 n）：

    输入 inputs[j]  = s[j]           (j < n)，  s[n] = <|endoftext|>，其后是补齐词元
    目标 targets[j] = s[j+1]         (j < n)，  第 n-1 位的目标是 <|endoftext|>（模型要学会停下）
                      -100           (j ≥ n，补齐) 或 (j < P-1，mask_prompt 时的提示部分)

与原书 custom_collate_fn 的区别只有一处：原书按“值等于补齐词元”找要掩掉的位置，这里按位置，
所以文本里真的出现 <|endoftext|> 时也不会被误掩。补齐词元就是 <|endoftext|>（原书也如此）。
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ..errors import DataError, TokenizerError, UsageError
from .instruct_data import format_prompt

IGNORE_INDEX = -100


@dataclass
class SFTData:
    """编码后的指令数据：seqs[i] 是提示 + 回答的词元（不含结束词元），prompt_lengths[i] 是提示的词元数。"""

    seqs: list[list[int]]
    prompt_lengths: list[int]
    kept: list[int]  # 保留的条目在原列表里的下标
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seqs)

    def subset(self, n: int) -> SFTData:
        """前 n 条（快速模式用）。"""
        return SFTData(self.seqs[:n], self.prompt_lengths[:n], self.kept[:n], dict(self.skipped))


def eot_id_of(tokenizer: Any) -> int:
    """结束词元 <|endoftext|> 的 id（也用作补齐词元）；分词器没有它时报错。"""
    eot = getattr(tokenizer, "eot_id", None)
    if eot is None:
        raise TokenizerError("分词器没有结束词元 <|endoftext|>：指令微调需要它来标记回答的结束")
    return int(eot)


def encode_entries(
    entries: Sequence[dict[str, Any]],
    tokenizer: Any,
    lang: str = "zh",
    max_length: int | None = None,
    on_bad: str = "skip",
    name: str = "指令数据",
    log: TextIO | None = None,
) -> SFTData:
    """提示与回答分别分词后拼接（生成时模型看到的提示与训练时逐词元相同）。

    max_length：输入的最大长度（一般取模型的 context_length）。序列 + 结束词元比它多 1 个以上时放不下：
    on_bad="skip" 跳过并计数（写进 log，缺省 stderr），"error" 报错写出第几条；回答分词后为空同样处理。
    """
    if on_bad not in ("skip", "error"):
        raise UsageError(f"on_bad 只能是 'skip' 或 'error'，收到 {on_bad!r}")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise UsageError(f"max_length 应是 ≥ 2 的整数，收到 {max_length!r}")
    seqs: list[list[int]] = []
    plens: list[int] = []
    kept: list[int] = []
    skipped = {"empty": 0, "too_long": 0}
    for i, e in enumerate(entries):
        prompt = tokenizer.encode(format_prompt(e, lang))
        answer = tokenizer.encode(e["output"]) if e["output"].strip() else []
        if not answer:
            if on_bad == "error":
                raise DataError(f"{name} 第 {i + 1} 条的回答为空：{e['output']!r}")
            skipped["empty"] += 1
            continue
        n = len(prompt) + len(answer)
        if max_length is not None and n > max_length:  # 输入长 n（含结束词元的序列长 n+1，移位后各 n 个）
            if on_bad == "error":
                raise DataError(
                    f"{name} 第 {i + 1} 条有 {n} 个词元（提示 {len(prompt)} + 回答 {len(answer)}），"
                    f"超过上限 max_length={max_length}：{e['instruction'][:20]!r}…"
                )
            skipped["too_long"] += 1
            continue
        seqs.append(prompt + answer)
        plens.append(len(prompt))
        kept.append(i)
    if sum(skipped.values()):
        print(f"{name}：跳过回答为空的 {skipped['empty']} 条、超长的 {skipped['too_long']} 条", file=log or sys.stderr)
    return SFTData(seqs, plens, kept, skipped)


def collate(
    batch: Sequence[Sequence[int]],
    pad_id: int,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
    prompt_lengths: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """把一批序列（不含结束词元）变成 (inputs, targets)，形状都是 (B, T)，int64。

    每条加一个结束词元 pad_id 后右侧补齐；目标是输入左移一位；补齐位置（第一个结束词元之后）的目标为
    ignore_index；给出 prompt_lengths 时提示部分的目标也为 ignore_index；最后截断到 allowed_max_length。
    """
    if not batch:
        raise UsageError("collate 收到空的批次")
    if prompt_lengths is not None and len(prompt_lengths) != len(batch):
        raise UsageError(f"prompt_lengths 有 {len(prompt_lengths)} 个，批次有 {len(batch)} 条")
    width = max(len(s) for s in batch)  # 输入长 = 最长序列的长度（加结束词元后移位）
    inputs = np.full((len(batch), width), pad_id, dtype=np.int64)
    targets = np.full((len(batch), width), ignore_index, dtype=np.int64)
    for r, seq in enumerate(batch):
        n = len(seq)
        if n == 0:
            raise UsageError(f"collate：第 {r + 1} 条序列为空")
        inputs[r, :n] = seq
        targets[r, : n - 1] = seq[1:]
        targets[r, n - 1] = pad_id  # 最后一个真实词元的目标是结束词元
        if prompt_lengths is not None:
            p = int(prompt_lengths[r])
            if not 0 <= p <= n:
                raise UsageError(f"collate：第 {r + 1} 条的提示长度 {p} 不在 0..{n} 之间")
            targets[r, : max(p - 1, 0)] = ignore_index
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs, targets


def iter_batches(
    data: SFTData,
    batch_size: int,
    pad_id: int,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    mask_prompt: bool = False,
    allowed_max_length: int | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """逐批产出 (inputs, targets)。"""
    if batch_size < 1:
        raise UsageError(f"batch_size 应为正整数，收到 {batch_size!r}")
    n = len(data)
    order = (rng or np.random.default_rng()).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for s in range(0, stop, batch_size):
        idx = order[s : s + batch_size]
        plens = [data.prompt_lengths[i] for i in idx] if mask_prompt else None
        yield collate([data.seqs[i] for i in idx], pad_id, IGNORE_INDEX, allowed_max_length, plens)


__all__ = ["IGNORE_INDEX", "SFTData", "collate", "encode_entries", "eot_id_of", "iter_batches"]
