"""字节级 BPE 的训练：从 256 个单字节词元出发，反复把最常见的相邻词元对合并成新词元。

朴素做法每次合并后都要重新数一遍全部相邻对，复杂度是 (合并次数 × 语料长度)。这里用增量做法：

1. 预分词后只保留**不重复的块**及其出现次数（语料里“的”出现几万次，只存一份、记次数）；
2. `pair_counts[(a, b)]`：相邻对 (a, b) 在全部块中的加权出现次数；
   `where[(a, b)]`：含有这个对的块的编号集合（可能含过期编号，处理时会跳过）；
3. 最大堆里放 (-次数, 对)，取出时若次数已过期就按当前次数放回（惰性删除）；
4. 合并 (a, b) → n 时只访问 `where[(a, b)]` 里的块，只在合并位置附近增减相邻对计数。

次数相同时取 id 字典序最小的对，所以结果完全确定。若新词元的字节串与已有词元重复
（如 "a"+"bc" 与 "ab"+"c"），就复用已有 id，不新增词元。
"""

from __future__ import annotations

import gc
import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import regex


def count_chunks(texts: Iterable[str], pattern: str) -> Counter[str]:
    """用预分词正则切分每段文本，统计每个块出现的次数。"""
    pat = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(pat.findall(text))
    return counts


def train_bpe(
    chunk_counts: Mapping[str, int], n_tokens: int, verbose: bool = False
) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    """在 {块: 次数} 上训练，直到词表有 n_tokens 个（含 256 个单字节）或再没有可合并的对。

    返回 (vocab, merges)：vocab[id] 是词元的字节串；merges 按顺序列出 (左 id, 右 id, 结果 id)。
    """
    if n_tokens < 256:
        raise ValueError(f"字节级 BPE 的词表至少要有 256 个词元（每个字节一个），实际要求 {n_tokens}")
    # 训练中会新建数百万个小列表、元组和集合，它们之间没有循环引用；
    # 关掉循环垃圾回收可省去它反复扫描这些对象的时间（实测训练快将近一倍），结束后恢复原状。
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _train(chunk_counts, n_tokens, verbose)
    finally:
        if gc_was_enabled:
            gc.enable()


def _train(
    chunk_counts: Mapping[str, int], n_tokens: int, verbose: bool
) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    t0 = time.perf_counter()
    words: list[list[int]] = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    counts: list[int] = list(chunk_counts.values())

    pair_counts: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
    for ci, w in enumerate(words):
        c = counts[ci]
        for pair in zip(w, w[1:]):
            pair_counts[pair] += c
            where[pair].add(ci)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    vocab: list[bytes] = [bytes([b]) for b in range(256)]
    bytes_to_id: dict[bytes, int] = {b: i for i, b in enumerate(vocab)}
    merges: list[tuple[int, int, int]] = []

    while len(vocab) < n_tokens and heap:
        neg, pair = heapq.heappop(heap)
        cur = pair_counts.get(pair, 0)
        if cur <= 0:
            continue
        if -neg != cur:  # 过期的堆条目：按当前次数放回
            heapq.heappush(heap, (-cur, pair))
            continue
        a, b = pair
        merged = vocab[a] + vocab[b]
        new = bytes_to_id.get(merged)
        if new is None:
            new = len(vocab)
            vocab.append(merged)
            bytes_to_id[merged] = new
        merges.append((a, b, new))
        changed = _apply_merge(words, counts, pair_counts, where, a, b, new)
        pair_counts.pop(pair, None)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
        if verbose and len(merges) % 1000 == 0:
            dt = time.perf_counter() - t0
            print(f"  已合并 {len(merges)} 次，词表 {len(vocab)}，用时 {dt:.1f} s", flush=True)
    return vocab, merges


def _apply_merge(
    words: list[list[int]],
    counts: list[int],
    pair_counts: defaultdict[tuple[int, int], int],
    where: defaultdict[tuple[int, int], set[int]],
    a: int,
    b: int,
    new: int,
) -> set[tuple[int, int]]:
    """在含 (a, b) 的块里把它替换为 new，增量更新计数；返回计数增加了的相邻对。"""
    changed: set[tuple[int, int]] = set()
    for ci in where.pop((a, b), ()):
        w = words[ci]
        n = len(w)
        # 从左到右找出不重叠的 (a, b) 出现位置；list.index 在 C 里扫描，很快
        pos: list[int] = []
        j = 0
        while True:
            try:
                j = w.index(a, j)
            except ValueError:
                break
            if j + 1 < n and w[j + 1] == b:
                pos.append(j)
                j += 2
            else:
                j += 1
        if not pos:  # where 里的过期条目
            continue
        c = counts[ci]
        # 旧词里受影响的相邻对：每个出现位置的左邻对、自身、右邻对（相邻出现共享的对只减一次）
        gone: set[int] = set()
        for q in pos:
            if q > 0:
                gone.add(q - 1)
            gone.add(q)
            if q + 2 < n:
                gone.add(q + 1)
        for k in gone:
            pair_counts[(w[k], w[k + 1])] -= c
        out: list[int] = []
        prev = 0
        for q in pos:
            out.extend(w[prev:q])
            out.append(new)
            prev = q + 2
        out.extend(w[prev:])
        m = len(out)
        # 新词里第 i 个合并位置在 q - i；加上它的左邻对与右邻对
        for i, q in enumerate(pos):
            qq = q - i
            if qq > 0:
                p = (out[qq - 1], new)
                pair_counts[p] += c
                where[p].add(ci)
                changed.add(p)
            next_is_merged = i + 1 < len(pos) and pos[i + 1] - (i + 1) == qq + 1
            if qq + 1 < m and not next_is_merged:  # 紧挨着的下一处合并会把这一对算作它的左邻对
                p = (new, out[qq + 1])
                pair_counts[p] += c
                where[p].add(ci)
                changed.add(p)
        words[ci] = out
    return changed
