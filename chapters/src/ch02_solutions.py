# %% [markdown]
# # 第 2 章 练习答案
#
# 先在第 2 章末尾自己做一遍，再来对照。每道题的最后都有一行检查：答案与库的行为不符时会报错。

# %%
import os
from collections import Counter

import numpy as np
import regex

from llmcore.datasets import SlidingWindowDataset, load_default_corpus
from llmcore.tokenizers import ZH_PATTERN, BPETokenizer, get_gpt2_tokenizer
from llmcore.tokenizers.bpe_train import count_chunks, train_bpe

QUICK = os.environ.get("LLMZH_QUICK") == "1"
print("快速模式" if QUICK else "完整模式")

# %% [markdown]
# ## 练习 1：最少次数
#
# 在第 2 章的 `train_bpe_naive` 里加一个判断：选出的一对出现次数不到 `min_count` 就停下。
# 其余部分与正文相同。

# %%
def get_pair_counts(words: Counter) -> Counter:
    counts: Counter = Counter()
    for ids, n in words.items():
        for pair in zip(ids, ids[1:]):
            counts[pair] += n
    return counts


def merge_pair(ids: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def train_bpe_min_count(text: str, n_tokens: int, pattern: str, min_count: int = 1):
    words: Counter = Counter(tuple(c.encode("utf-8")) for c in regex.findall(pattern, text))
    vocab = [bytes([b]) for b in range(256)]
    merges = []
    while len(vocab) < n_tokens:
        counts = get_pair_counts(words)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        if counts[pair] < min_count:  # 新增的一行：最常见的一对也太少见了，停止
            break
        merged = vocab[pair[0]] + vocab[pair[1]]
        new = vocab.index(merged) if merged in vocab else len(vocab)
        if new == len(vocab):
            vocab.append(merged)
        merges.append((pair[0], pair[1], new))
        words = Counter({merge_pair(ids, pair, new): n for ids, n in words.items()})
    return vocab, merges


toy = "四是四，十是十，十四是十四，四十是四十。"
vocab, merges = train_bpe_min_count(toy, 256 + 100, ZH_PATTERN, min_count=2)
def show(token: bytes) -> str:
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return "<" + token.hex(" ") + ">"


print(f"min_count=2：学到 {len(vocab) - 256} 个词元：", " ".join(show(vocab[new]) for _, _, new in merges))
print("最后学到的：", vocab[merges[-1][2]].decode("utf-8"))

# 检查：min_count=1 时与库的训练完全相同；min_count=2 的结果是它的前缀
full_vocab, full_merges = train_bpe(count_chunks([toy], ZH_PATTERN), 256 + 100)
assert train_bpe_min_count(toy, 256 + 100, ZH_PATTERN, min_count=1) == (full_vocab, full_merges)
assert merges == full_merges[: len(merges)]
print(f"不设下限时能合并 {len(full_merges)} 次，直到每一块都只剩一个词元")

# %% [markdown]
# 出现 2 次及以上的对只够合并 10 次：字节拼成“十”“四”“是”“，”，再加上“十四”“十是”两个双字词元。
# 之后剩下的相邻对都只出现一次——为只出现一次的组合专门占一个词元，对压缩几乎没有帮助，
# 这正是设下限的理由（Hugging Face 的 `tokenizers` 库里对应的选项叫 `min_frequency`）。

# %% [markdown]
# ## 练习 2：窗口个数的公式
#
# 起点是 `0, S, 2S, …`，且必须满足 `起点 + L + 1 ≤ n`（目标也要放得下），即 `起点 ≤ n - L - 1`。
# 所以 `n ≥ L + 1` 时窗口个数是 `⌊(n - L - 1) / S⌋ + 1`，否则一个也没有（库会报错）。

# %%
def n_windows(n: int, length: int, stride: int) -> int:
    return (n - length - 1) // stride + 1 if n >= length + 1 else 0


checked = 0
for n in range(1, 60):
    for length in range(1, 12):
        for stride in range(1, 12):
            if n < length + 1:
                continue  # 库在这种情况下报错，不构造数据集
            assert n_windows(n, length, stride) == len(SlidingWindowDataset(np.arange(n), length, stride))
            checked += 1
print(f"在 {checked} 组 (n, L, S) 上与 SlidingWindowDataset 一致")
print("例：n=20, L=6：", {s: n_windows(20, 6, s) for s in (1, 3, 6)})

# %% [markdown]
# ## 练习 3：一字一块的预分词
#
# 把 `ZH_PATTERN` 里的 `\p{Han}+` 换成 `\p{Han}`，每个汉字就单独成块。块内最多 3 个字节，
# BPE 最多只能把一个字的字节拼完整，多字词元不可能出现。

# %%
PER_CHAR = ZH_PATTERN.replace(r"\p{Han}+", r"\p{Han}")
print(regex.findall(PER_CHAR, "经济发展，GDP增长8%"))

train_text, val_text = load_default_corpus()
text = train_text[: 200_000 if QUICK else 600_000]
probe = val_text[:50_000]
vocab_size = 2500 if QUICK else 5000
results = {}
for name, pattern in [("汉字串成块 ZH_PATTERN", ZH_PATTERN), ("一字一块", PER_CHAR)]:
    tok = BPETokenizer.train(text, vocab_size=vocab_size, special_tokens=["<|endoftext|>"], pattern=pattern)
    words = [tok.token_bytes(i).decode("utf-8", "replace") for i in range(256, tok.vocab_size - 1)]
    multi = [w for w in words if len(w) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in w)]
    ratio = len(probe) / len(tok.encode(probe))
    results[name] = (tok.vocab_size, len(multi), ratio)
    print(f"{name}：{tok.vocab_size} 个词元，多字汉语词元 {len(multi)} 个，验证集前 {len(probe):,} 字上 {ratio:.2f} 字/词元")

assert results["一字一块"][1] == 0
assert results["汉字串成块 ZH_PATTERN"][2] > results["一字一块"][2]

# %% [markdown]
# 一字一块时，中文部分的压缩率最多只能到 1 字/词元（每个字一个词元），词表里多出的位置只能用来存
# 标点、数字、字母组合；让汉字串成块，BPE 才能把“经济”“发展”这样的常见组合学成一个词元，
# 词表越大，两者的差距越明显。代价是训练要慢得多：块更长、不重复的块更多。

# %% [markdown]
# ## 练习 4：把乱码拼回去
#
# 逐个累积词元的字节，一旦累积的字节能按 UTF-8 严格解码（没有残缺的字），就结束一组。

# %%
gpt2 = get_gpt2_tokenizer()


def group_by_char(tok, ids: list[int]) -> list[list[int]]:
    groups, cur, buf = [], [], b""
    for i in ids:
        cur.append(i)
        buf += tok.decode_bytes([i])
        try:
            buf.decode("utf-8")  # 默认 errors="strict"：残缺的字会报错
        except UnicodeDecodeError:
            continue
        groups.append(cur)
        cur, buf = [], b""
    if cur:
        groups.append(cur)  # 结尾残缺（只可能在输入本身被截断时出现）
    return groups


ids = gpt2.encode("今天的天气真好")
groups = group_by_char(gpt2, ids)
for g in groups:
    print(f"{gpt2.decode(g)}  ←  {' + '.join(gpt2.token_str(i) for i in g)}")
assert "".join(gpt2.decode(g) for g in groups) == "今天的天气真好"
assert all("\ufffd" not in gpt2.decode(g) for g in groups)

# %% [markdown]
# ## 练习 5：嵌入的梯度就是矩阵乘法的梯度
#
# `E = one_hot(ids) @ W`，其中 `one_hot(ids)` 的形状是 `(N, V)`。矩阵乘法对 `W` 的梯度是
# `one_hot(ids)ᵀ @ G`（`G` 是上游梯度）：第 k 行等于所有“id 为 k 的位置”的上游梯度之和。
# 一个 id 出现几次，就加几份——查表的反向必须“分散累加”，原因就在这里。

# %%
import tinytensor as tt

rng = np.random.default_rng(0)
V, C = 10, 3
w0 = rng.standard_normal((V, C))
ids = np.array([4, 1, 4, 4, 7])
G = rng.standard_normal((len(ids), C))

W_a = tt.tensor(w0, requires_grad=True)
(W_a[tt.tensor(ids)] * tt.tensor(G)).sum().backward()  # 查表

W_b = tt.tensor(w0, requires_grad=True)
one_hot = np.eye(V)[ids]  # (N, V)
(tt.tensor(one_hot) @ W_b * tt.tensor(G)).sum().backward()  # 独热向量乘权重

print("两种写法对 W 的梯度之差：", np.abs(W_a.grad.numpy() - W_b.grad.numpy()).max())
print("第 4 行梯度 = 三个位置的上游梯度之和：", np.allclose(W_a.grad.numpy()[4], G[[0, 2, 3]].sum(0)))
assert np.allclose(W_a.grad.numpy(), one_hot.T @ G)
assert np.allclose(W_b.grad.numpy(), one_hot.T @ G)
