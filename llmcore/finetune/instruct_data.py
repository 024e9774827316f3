"""指令数据（第 7 章）：条目格式、Alpaca 风格的提示模板、读写与校验、原书的英文 instruction-data.json。

一条指令数据是一个字典 {"instruction": 指令, "input": 输入（可为空串）, "output": 标准回答}，
与原书的 instruction-data.json 相同；我们的中文基准（instruct_bench.py）另带 "task" 字段。

提示模板（Alpaca 风格；英文版与原书逐字相同）：

    下面是一条描述任务的指令。请写出恰当完成该请求的回答。

    ### 指令：
    {instruction}

    ### 输入：            ← input 为空时整段省略
    {input}

    ### 回答：
    {output}

坏输入：缺字段或字段不是字符串 → DataError，写出第几条、缺哪个字段；指令或回答为空 → 按 on_bad
跳过并计数（"skip"），或报错（"error"）。
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from ..errors import DataError, UsageError

Entry = dict[str, str]
FIELDS = ("instruction", "input", "output")
LANGS = ("zh", "en")

PREAMBLE = {
    "zh": "下面是一条描述任务的指令。请写出恰当完成该请求的回答。",
    "en": "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
}
HEADERS = {
    "zh": ("### 指令：", "### 输入：", "### 回答："),
    "en": ("### Instruction:", "### Input:", "### Response:"),
}
BOOK_FRACTIONS = (0.85, 0.10)  # 原书：前 85% 训练、接着 10% 测试、余下 5% 验证（不打乱）


class InstructSplits(NamedTuple):
    """训练、验证、测试三个条目列表。"""

    train: list[Entry]
    val: list[Entry]
    test: list[Entry]


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise UsageError(f"提示模板语言 {lang!r} 不支持：应为 {' 或 '.join(LANGS)}")


def format_input(entry: dict[str, Any], lang: str = "zh") -> str:
    """指令与输入部分（原书的 format_input）：不含回答的标题与内容。"""
    _check_lang(lang)
    head_inst, head_input, _ = HEADERS[lang]
    text = f"{PREAMBLE[lang]}\n\n{head_inst}\n{entry['instruction']}"
    if entry.get("input"):
        text += f"\n\n{head_input}\n{entry['input']}"
    return text


def response_header(lang: str = "zh") -> str:
    """回答的标题，前面空一行、后面换行：模型在它之后开始写回答。"""
    _check_lang(lang)
    return f"\n\n{HEADERS[lang][2]}\n"


def format_prompt(entry: dict[str, Any], lang: str = "zh") -> str:
    """生成时喂给模型的提示：format_input + 回答标题（到换行为止）。"""
    return format_input(entry, lang) + response_header(lang)


def format_example(entry: dict[str, Any], lang: str = "zh") -> str:
    """训练用的完整文本：提示 + 标准回答。"""
    return format_prompt(entry, lang) + entry["output"]


def validate_entries(
    raw: Any, name: str = "指令数据", on_bad: str = "skip", log: TextIO | None = None
) -> list[Entry]:
    """检查并规范化条目：必须是字典列表，三个字段都在且是字符串；多出的字段（如 task）原样保留。

    指令或回答为空（只有空白）的条目：on_bad="skip" 时跳过并在 log（缺省 stderr）里报数，"error" 时报错。
    """
    if on_bad not in ("skip", "error"):
        raise UsageError(f"on_bad 只能是 'skip' 或 'error'，收到 {on_bad!r}")
    if not isinstance(raw, list):
        raise DataError(f"{name} 应是条目的列表（JSON 数组），实际是 {type(raw).__name__}")
    out: list[Entry] = []
    empty = 0
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise DataError(f"{name} 第 {i} 条应是对象（字典），实际是 {type(item).__name__}：{str(item)[:40]!r}")
        for key in FIELDS:
            if key not in item:
                raise DataError(f"{name} 第 {i} 条缺少字段 {key!r}（应有 {', '.join(FIELDS)}）")
            if not isinstance(item[key], str):
                raise DataError(f"{name} 第 {i} 条的字段 {key!r} 应是字符串，实际是 {type(item[key]).__name__}")
        if not item["instruction"].strip() or not item["output"].strip():
            which = "instruction" if not item["instruction"].strip() else "output"
            if on_bad == "error":
                raise DataError(f"{name} 第 {i} 条的字段 {which!r} 为空")
            empty += 1
            continue
        out.append(dict(item))
    if empty:
        print(f"{name}：跳过指令或回答为空的条目 {empty} 条", file=log or sys.stderr)
    return out


def read_instruction_file(path: str | Path, on_bad: str = "skip") -> list[Entry]:
    """读指令数据文件：`.json`（条目的数组，原书格式）或 `.jsonl`（每行一个条目），并校验。"""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"找不到指令数据文件 {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"指令数据文件 {p} 不是 UTF-8 文本：{e}") from None
    if p.suffix.lower() == ".jsonl":
        raw: list[Any] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{p} 第 {n} 行不是合法的 JSON：{e}") from None
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{p} 不是合法的 JSON：{e}") from None
    return validate_entries(raw, name=str(p), on_bad=on_bad)


def write_instruction_file(path: str | Path, entries: Sequence[dict[str, Any]]) -> Path:
    """写指令数据：`.jsonl` 每行一条，其它后缀写成 JSON 数组（缩进 1，与原书文件相同）。"""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".jsonl":
        p.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    else:
        p.write_text(json.dumps(list(entries), ensure_ascii=False, indent=1), encoding="utf-8")
    return p


def load_book_instruction_data(path: str | Path | None = None) -> list[Entry]:
    """原书第 7 章的英文指令数据（1,100 条）：path 为空时经下载助手获取（sha256 校验并缓存）。"""
    if path is None:
        from ..datasets.remote import fetch

        path = fetch("instruction-data.json")
    return read_instruction_file(path)


def split_book_data(
    entries: Sequence[Entry], fractions: tuple[float, float] = BOOK_FRACTIONS
) -> InstructSplits:
    """原书的划分（不打乱）：前 85% 训练，接着 10% 测试，余下的验证。"""
    train_frac, test_frac = fractions
    if not (0 < train_frac < 1 and 0 <= test_frac < 1 and train_frac + test_frac <= 1):
        raise UsageError(f"划分比例 {fractions} 不合法：应为 (训练, 测试)，都在 [0, 1) 内且和不超过 1")
    n_train = int(len(entries) * train_frac)
    n_test = int(len(entries) * test_frac)
    items = list(entries)
    return InstructSplits(
        train=items[:n_train], val=items[n_train + n_test :], test=items[n_train : n_train + n_test]
    )


__all__ = [
    "BOOK_FRACTIONS", "Entry", "FIELDS", "HEADERS", "InstructSplits", "LANGS", "PREAMBLE", "format_example",
    "format_input", "format_prompt", "load_book_instruction_data", "read_instruction_file", "response_header",
    "split_book_data", "validate_entries", "write_instruction_file",
]
