"""指令基准的离线评分（与框架无关）：从生成文本里取出回答，按任务算完全匹配 (EM) 与 F1。

各任务的判分：
- sentiment：回答（去掉首尾空白与句末标点）等于“正面”/“负面”；F1 = EM；
- segment：EM = 词序列完全相同；F1 = 按字符区间 (起, 止) 比较的词级 F1（标准的分词评测）；
- entity：回答按“、”（也接受，、和空白）拆成名字集合，“无”是空集；EM = 集合相同；F1 = 集合 F1（都为空记 1）；
- pinyin：EM = 音节序列相同（不分大小写）；F1 = 音节的多重集合 F1；
- t2s：EM = 字符串相同；F1 = 字符的多重集合 F1；
- 其它（如原书的英文数据）：EM = 规范化后相同；F1 = 空白分词的词袋 F1（SQuAD 的做法）。
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import UsageError
from .instruct_data import HEADERS

EOT_TEXT = "<|endoftext|>"
_TRAIL = "。．.!！?？;；，,、 \t\n"
_NAME_SEP = re.compile(r"[、，,；;\s]+")


def extract_response(text: str, lang: str = "zh", first_line: bool = False) -> str:
    """从“提示 + 生成”的文本里取出回答：最后一个回答标题之后、结束词元或下一个“###”之前，去掉首尾空白。

    没有回答标题时把整段当作回答（只给了生成部分的情形）。first_line=True 时只取第一行（基准的答案都是一行）。
    """
    if lang not in HEADERS:
        raise UsageError(f"提示模板语言 {lang!r} 不支持：应为 {' 或 '.join(HEADERS)}")
    header = HEADERS[lang][2]
    k = text.rfind(header)
    out = text[k + len(header) :] if k >= 0 else text
    for stop in (EOT_TEXT, "\n###", "###"):
        j = out.find(stop)
        if j >= 0:
            out = out[:j]
    out = out.strip()
    if first_line:
        out = out.split("\n", 1)[0].strip()
    return out


def _bag_f1(pred: Iterable[Any], gold: Iterable[Any]) -> float:
    p, g = Counter(pred), Counter(gold)
    if not p and not g:
        return 1.0
    common = sum((p & g).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


def word_spans(words: Sequence[str]) -> set[tuple[int, int]]:
    """分词结果 → 各词的字符区间 [起, 止)。"""
    spans = set()
    pos = 0
    for w in words:
        spans.add((pos, pos + len(w)))
        pos += len(w)
    return spans


def entity_set(answer: str, none_answer: str = "无") -> set[str]:
    """实体题的回答 → 名字集合；“无”（或空）是空集。"""
    a = answer.strip().strip(_TRAIL)
    if a in ("", none_answer):
        return set()
    return {x for x in _NAME_SEP.split(a) if x}


def score(task: str, prediction: str, reference: str) -> tuple[float, float]:
    """一题的 (EM, F1)，都在 [0, 1]。"""
    pred, ref = prediction.strip(), reference.strip()
    if task == "sentiment":
        em = float(pred.rstrip(_TRAIL) == ref)
        return em, em
    if task == "segment":
        pw, rw = pred.split(), ref.split()
        return float(pw == rw), _bag_f1(word_spans(pw), word_spans(rw))
    if task == "entity":
        ps, rs = entity_set(pred), entity_set(ref)
        return float(ps == rs), _bag_f1(ps, rs)
    if task == "pinyin":
        psyl, rsyl = pred.lower().rstrip(_TRAIL).split(), ref.lower().split()
        return float(psyl == rsyl), _bag_f1(psyl, rsyl)
    if task == "t2s":
        return float(pred == ref), _bag_f1(pred, ref)
    pn, rn = " ".join(pred.lower().split()), " ".join(ref.lower().split())
    return float(pn == rn), _bag_f1(pn.split(), rn.split())


def is_correct(entry: Mapping[str, Any], prediction: str) -> bool:
    """回答是否完全正确（DPO 用它挑出模型自己答错的样本作为 rejected）。"""
    return score(str(entry.get("task", "")), prediction, entry["output"])[0] == 1.0


def evaluate(entries: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, dict[str, float]]:
    """逐题打分后按任务汇总：{任务: {"n", "exact", "f1"}}，另有 "all"（各题平均）。"""
    if len(entries) != len(predictions):
        raise UsageError(f"条目 {len(entries)} 条，回答 {len(predictions)} 条，数量不一致")
    sums: dict[str, list[float]] = {}
    for e, p in zip(entries, predictions):
        em, f1 = score(str(e.get("task", "")), p, e["output"])
        for key in (str(e.get("task", "") or "other"), "all"):
            s = sums.setdefault(key, [0.0, 0.0, 0.0])
            s[0] += 1
            s[1] += em
            s[2] += f1
    return {k: {"n": int(s[0]), "exact": s[1] / s[0], "f1": s[2] / s[0]} for k, s in sums.items()}


def results_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str = "exact") -> str:
    """多个模型的结果 → Markdown 表：行是任务，列是模型（如 基座 / SFT / SFT+DPO），数值为百分比。"""
    if metric not in ("exact", "f1"):
        raise UsageError(f"metric 只能是 'exact' 或 'f1'，收到 {metric!r}")
    names = list(results)
    tasks: list[str] = []
    for r in results.values():
        tasks += [t for t in r if t not in tasks and t != "all"]
    tasks.append("all")
    label = "EM" if metric == "exact" else "F1"
    lines = [f"| 任务 ({label} %) | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for t in tasks:
        n = next((int(r[t]["n"]) for r in results.values() if t in r), 0)
        cells = [f"{100 * results[m][t][metric]:.1f}" if t in results[m] else "—" for m in names]
        lines.append(f"| {'全部' if t == 'all' else t} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_tasks(results: Mapping[str, Any]) -> list[str]:
    """一行结果里的任务列：基准的五个任务按固定顺序在前，其它任务按出现顺序，最后是 "all"。"""
    from .instruct_bench import TASKS

    known = [t for t in TASKS if t in results]
    return known + [t for t in results if t not in known and t != "all"] + ["all"]


def results_header(tasks: Sequence[str]) -> str:
    """单行结果表的表头（两行）：模型 | 各任务 EM / F1 (%) | 全部。"""
    names = ["全部" if t == "all" else t for t in tasks]
    return ("| 模型 | " + " | ".join(f"{n} EM / F1" for n in names) + " |\n"
            + "|---|" + "---:|" * len(names))


def results_row(name: str, results: Mapping[str, Mapping[str, float]], tasks: Sequence[str] | None = None) -> str:
    """一个模型的结果 → 一行 Markdown：每格是“EM / F1”（百分比，一位小数）；没有这个任务的格写 —。"""
    cols = row_tasks(results) if tasks is None else list(tasks)
    cells = [f"{100 * results[t]['exact']:.1f} / {100 * results[t]['f1']:.1f}" if t in results else "—" for t in cols]
    return f"| {name} | " + " | ".join(cells) + " |"


__all__ = ["EOT_TEXT", "entity_set", "evaluate", "extract_response", "is_correct", "results_header", "results_row",
           "results_table", "row_tasks", "score", "word_spans"]
