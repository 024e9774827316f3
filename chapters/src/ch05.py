# %% [markdown]
# # 第 5 章 预训练：让 GPT 学会写中文
#
# 上一章搭好的 GPT 结构完整，却只会吐出随机的词元——它的几百万个权重还都是随机数。
# 这一章让它真正学起来。训练的目标只有一个：**在每个位置上，给真正出现的下一个词元尽量高的概率**。
# 语料本身就是答案，不需要任何人工标注，这就是预训练 (pretraining)。
#
# 本章的路线：
#
# 1. 先量一量未训练模型的损失，弄清楚它为什么恰好在 $\ln V$ 附近；
# 2. 手算交叉熵 (cross-entropy) 与困惑度 (perplexity)，再让两条轨道各算一遍；
# 3. 把文本切成词元窗口、组成批次；
# 4. 写一个最简的训练循环，两条轨道从**同一份初始权重**出发，打印出同一条损失曲线；
# 5. 换上正式的训练器 `python -m gpt_numpy train`：学习率调度、评估、检查点、进度与曲线；
# 6. 用训练好的模型生成文本：贪心、温度 (temperature)、top-k、top-p；
# 7. 保存与加载检查点，在 NumPy 轨道上训到一半，换到 PyTorch 轨道接着训；
# 8. 加载 OpenAI 发布的 GPT-2 权重；
# 9. 原书的实验：在短篇小说 *The Verdict* 上训练 GPT-2 small，与原书的曲线对照。
#
# 和前两章一样，每个要讲的零件——损失、训练的一步、训练循环、抽样、保存与加载——都先在页面上写出来，
# 再与库里的实现核对。标着 `# 章内实现` 的单元会被测试 `tests/test_chapter_ch04_ch05.py` 单独取出来再核对一遍。
#
# 形状字母：`B` 批大小，`T` 词元数，`C` 嵌入维度，`V` 词表大小。

# %% [markdown]
# ## 5.0 准备
#
# 语料沿用第 2 章的 1998 年 1 月《人民日报》，分词用字符级分词器 `CharTokenizer`：一个汉字一个词元，
# 这也是 `python -m gpt_numpy train` 的默认设置。本章的训练输出都写在一个临时目录里（下文记作 `$WORK`）。
#
# 设置环境变量 `LLMZH_QUICK=1` 时（测试就是这样运行的），模型和训练步数都会缩小，整章很快就能跑完；
# 本文件保存的输出来自完整运行。

# %%
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import PowerNorm  # 5.5 节注意力热力图的颜色刻度

import gpt_numpy
import tinytensor as tt
from gpt_numpy import model as NM  # NumPy 轨道（tinytensor）
from llmcore.config import RECIPES, GPTConfig, TrainConfig
from llmcore.datasets import load_default_corpus
from llmcore.weight_init import init_arrays
from llmcore.tokenizers import CharTokenizer
from gpt_torch import model as TM  # PyTorch 轨道
from llmcore.plotting import use_cjk_font
from llmcore.tokenizers import load_tokenizer
from tinytensor.nn import functional as F

use_cjk_font()  # 图里的中文：字体来自 pip 包 noto-cjk-sans-otc，全项目在 llmcore/plotting.py 一处注册
QUICK = os.environ.get("LLMZH_QUICK") == "1"
if QUICK:
    os.environ["LLMZH_OFFLINE"] = "1"  # 快速模式不联网：需要下载的文件只从缓存里取
ROOT = Path(gpt_numpy.__file__).resolve().parent.parent  # 仓库根目录
WORK = Path(tempfile.mkdtemp(prefix="llmzh-ch05-"))
np.set_printoptions(precision=4, suppress=True, linewidth=110)
torch.set_printoptions(precision=4, sci_mode=False)


def pad(s: object, width: int) -> str:
    """按显示宽度补空格（一个汉字占两格），用来打印对齐的表格。"""
    s = str(s)
    return s + " " * max(0, width - sum(2 if ord(ch) > 0x2E7F else 1 for ch in s))


print("快速模式" if QUICK else "完整模式", "| torch", torch.__version__)

# %%
train_text, val_text = load_default_corpus()
tok = CharTokenizer.train(train_text)
V = tok.vocab_size
train_ids = np.array(tok.encode(train_text), dtype=np.int64)
val_ids = np.array(tok.encode(val_text), dtype=np.int64)
print(f"词表大小 V = {V:,}；训练集 {len(train_ids):,} 个词元，验证集 {len(val_ids):,} 个词元")

# %% [markdown]
# 本章前半部分用一个小模型：tiny 预设（4 层、`C = 128`），上下文缩短为 64 个字。
# 两条轨道的初始权重都由 `llmcore.weight_init.init_arrays(形状, 配置, 种子)` 生成——同一个种子给出同一组 NumPy 数组，
# 再按参数名分别装进 tinytensor 模型和 torch 模型。

# %%
if QUICK:
    cfg = GPTConfig.preset("tiny", vocab_size=V, context_length=32, emb_dim=64, n_layers=2)
else:
    cfg = GPTConfig.preset("tiny", vocab_size=V, context_length=64)
print(cfg)


def make_pair(cfg: GPTConfig, seed: int = 123, scheme: str = "gpt2"):
    """同一份初始权重的两个模型：(tinytensor 模型, torch 模型, 初始权重数组)。"""
    m_np = NM.GPTModel(cfg)
    shapes = {k: v.shape for k, v in m_np.state_dict().items()}
    init = init_arrays(shapes, cfg, seed, scheme)
    m_np.load_arrays(init)
    m_torch = TM.GPTModel(cfg)
    m_torch.load_arrays(init)
    return m_np, m_torch, init


model_np, model_torch, init0 = make_pair(cfg)
print(f"参数个数：tinytensor {model_np.num_parameters():,}，torch {model_torch.num_parameters():,}")

# %% [markdown]
# ## 5.1 未训练的模型：损失从 ln V 起步
#
# 语言模型的损失是“正确答案的概率取负对数”，对所有位置求平均。在动手训练之前，先把验证集切成一批批窗口，
# 量一量这个随机模型的损失：

# %%
from llmcore.batches import eval_batches

val_batches = eval_batches(val_ids, n_batches=4, batch_size=8, context_length=cfg.context_length)


def mean_loss_np(model, batches) -> float:
    """tinytensor 模型在若干批次上的平均交叉熵（按词元平均）。"""
    total, n = 0.0, 0
    with tt.no_grad():
        for x, y in batches:
            logits = model(x)  # (B, T, V)
            total += F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum").item()
            n += y.size
    return total / n


model_np.eval()
loss0 = mean_loss_np(model_np, val_batches)
print(f"未训练模型在验证集上的损失 {loss0:.4f}")
print(f"ln V = ln {V} = {math.log(V):.4f}")

# %% [markdown]
# 两个数几乎一样，这不是巧合。如果模型对 V 个词元一视同仁，每个都给 $1/V$ 的概率，那么不管正确答案是谁，
# 损失都是 $-\ln(1/V) = \ln V$。随机初始化的 GPT 就很接近这种“一视同仁”：权重取自 $N(0, 0.02^2)$，
# 最后一层 LayerNorm 的输出每个分量方差约为 1，于是每个 logit 是 C 项小随机数之和，标准差约 $0.02\sqrt{C}$，
# 远小于 1——softmax 之后几乎是均匀分布。看一眼 logits 和概率：

# %%
with tt.no_grad():
    logits = model_np(val_batches[0][0]).data  # (B, T, V)
probs = np.exp(logits - logits.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)
sigma = logits.std(-1).mean()
print(f"logits 的标准差 {sigma:.4f}（估算 0.02·√C = {0.02 * math.sqrt(cfg.emb_dim):.4f}）")
print(f"每个位置概率最大的词元平均只有 {probs.max(-1).mean():.2e}，均匀分布是 1/V = {1 / V:.2e}")
print(f"ln V + σ²/2 = {math.log(V) + sigma**2 / 2:.4f}（实测 {loss0:.4f}）")

# %% [markdown]
# 最后一行更精确一点：logits 有一点点随机起伏时，$\log\sum e^{z}$ 比 $\ln V$ 多出约 $\sigma^2/2$，
# 而正确答案的 logit 平均为 0，所以损失约为 $\ln V + \sigma^2/2$。这个小公式也解释了原书的数字：
# 原书的 GPT-2 用 PyTorch 默认初始化，输出层 logits 的方差约为 1/3，未训练时损失约
# $\ln 50257 + 1/6 \approx 10.99$（附录 D 会比较两种初始化）。
#
# **记住 ln V 这个起点**：训练开始时损失若明显高于它，多半是初始化或损失函数写错了；
# 训练中损失若回到它附近，说明模型把学到的东西“忘光”了。

# %% [markdown]
# ## 5.2 交叉熵与困惑度：手算一遍
#
# 取一句话，输入是前 T 个字，目标是向右错开一位的 T 个字。模型在每个位置输出 V 个 logits，
# softmax 变成概率，取出**目标词元**的那一个概率 $p_t$，交叉熵就是
#
# $$L = -\frac{1}{T}\sum_{t=1}^{T} \ln p_t .$$

# %%
sentence = "新华社北京一月一日电"
ids = np.array([tok.encode(sentence)])  # (1, T+1)
inputs, targets = ids[:, :-1], ids[:, 1:]  # (1, T)：目标是输入向右错开一位
with tt.no_grad():
    logits = model_np(inputs).data[0]  # (T, V)
p = np.exp(logits - logits.max(-1, keepdims=True))
p /= p.sum(-1, keepdims=True)  # (T, V) softmax
p_target = p[np.arange(len(p)), targets[0]]  # (T,)：每个位置上正确答案的概率
print(pad("已看到", 22) + pad("目标", 6) + pad("p(目标)", 12) + "-ln p")
for t in range(len(p_target)):
    print(pad(sentence[: t + 1], 22) + pad(sentence[t + 1], 6) + pad(f"{p_target[t]:.3e}", 12) + f"{-np.log(p_target[t]):.4f}")
loss_by_hand = -np.log(p_target).mean()
print(f"平均：手算的交叉熵 {loss_by_hand:.6f}")

# %% [markdown]
# 实际代码不会先算 softmax 再取对数：概率很小时会下溢成 0，取对数就成了 $-\infty$。
# 换成对数域计算，`log_softmax(z) = z - max - log Σ exp(z - max)`，先减去每行的最大值，`exp` 就不会上溢；
# 再按目标取出每行的一个数、取负、求平均。把 `(B, T, V)` 的 logits 展平成 `(B·T, V)`，目标展平成 `(B·T,)`，就是：

# %%
# 章内实现
import math

import numpy as np

import tinytensor as tt


def cross_entropy(logits: tt.Tensor, targets: np.ndarray) -> tt.Tensor:
    """logits (N, V)、目标 (N,) 整数 → 平均交叉熵（标量）。"""
    m = logits.max(dim=-1, keepdim=True)[0].detach()  # (N, 1)：每行的最大值，只为数值稳定，不参与求导
    shifted = logits - m
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()  # (N, V)：log_softmax
    picked = log_probs[np.arange(len(targets)), targets]  # (N,)：每行取出目标词元的对数概率
    return -picked.mean()


def perplexity(loss: float) -> float:
    """困惑度：交叉熵（奈特）取指数。"""
    return math.exp(loss)


# %% [markdown]
# PyTorch 有现成的 `torch.logsumexp`，一行就能写出 log_softmax；其余相同：

# %%
# 章内实现
import torch


def cross_entropy_torch(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, V)
    return -log_probs[torch.arange(len(targets)), targets].mean()


# %% [markdown]
# 两条轨道的库函数 `F.cross_entropy` 同名同参数，tinytensor 的那个是融合算子（前向一次算完，反向直接用
# $p - \mathrm{onehot}$）。把手算、我们写的两个函数和两个库函数放在一起：

# %%
model_torch.eval()
logits_np = model_np(inputs).reshape(-1, V)  # (T, V)
logits_torch = model_torch(torch.tensor(inputs)).flatten(0, 1)  # (T, V)
tgt = targets.reshape(-1)
print(f"手算                       {loss_by_hand:.6f}")
print(f"cross_entropy（我们写的）  {cross_entropy(logits_np, tgt).item():.6f}")
print(f"F.cross_entropy（库）      {F.cross_entropy(logits_np, tgt).item():.6f}")
print(f"cross_entropy_torch        {cross_entropy_torch(logits_torch, torch.tensor(tgt)).item():.6f}")
print(f"torch 的 F.cross_entropy   {torch.nn.functional.cross_entropy(logits_torch, torch.tensor(tgt)).item():.6f}")
loss_tt = F.cross_entropy(logits_np, tgt)

# %% [markdown]
# 损失要拿来求梯度，所以还要核对梯度。在 float64 的随机 logits 上比较我们写的与库里的损失和 $\partial L/\partial z$：

# %%
rng = np.random.default_rng(0)
z64, t64 = rng.standard_normal((6, 11)) * 3, rng.integers(0, 11, size=6)
grads = {}
for name, fn in [("我们写的", cross_entropy), ("库 F.cross_entropy", F.cross_entropy)]:
    z = tt.tensor(z64, requires_grad=True)
    loss = fn(z, t64)
    loss.backward()
    grads[name] = (loss.item(), z.grad.numpy())
zt = torch.tensor(z64, requires_grad=True)
cross_entropy_torch(zt, torch.tensor(t64)).backward()
(l1, g1), (l2, g2) = grads.values()
print(f"损失之差 {abs(l1 - l2):.1e}；梯度最大差：与 tinytensor 库 {np.abs(g1 - g2).max():.1e}，"
      f"与 cross_entropy_torch {np.abs(g1 - zt.grad.numpy()).max():.1e}")

# %% [markdown]
# 交叉熵以“奈特” (nat) 为单位，不太直观。把它取指数，就得到**困惑度** (perplexity)：
# $\mathrm{PPL} = e^{L}$。它的含义是：模型的不确定程度，相当于每一步在多少个候选里**均匀地**瞎猜。
# 未训练的模型困惑度约等于词表大小——它确实是在全部 V 个字里乱猜：

# %%
for name, value in [("这一句", loss_tt.item()), ("验证集 4 个批次", loss0)]:
    print(f"{pad(name, 16)} 损失 {value:.4f}  困惑度 {perplexity(value):8.1f}   （V = {V}）")

# %% [markdown]
# 训练就是把这个数往下压。压到多少才算“学到了东西”？先算一个参照：**一元模型** (unigram)，
# 它只知道每个字在训练集里出现的频率，完全不看上下文。它在验证集上的交叉熵是一条很有用的参照线：

# %%
counts = np.bincount(train_ids, minlength=V) + 0.5  # 加 0.5 平滑，免得验证集里没见过的字概率为 0
unigram = float(-np.log(counts[val_ids] / counts.sum()).mean())
top = np.argsort(-counts)[:8]
print("训练集里最常见的字：", "  ".join(f"{tok.decode([int(i)])!r} {counts[i] / counts.sum():.1%}" for i in top))
print(f"一元模型：验证集交叉熵 {unigram:.4f}，困惑度 {math.exp(unigram):.0f}；对照 ln V = {math.log(V):.4f}，V = {V}")

# %% [markdown]
# 只靠字频，就能把损失从 $\ln V$ 压下一截（上面两个数之差）：常见的标点和虚词占了很大的比例，猜它们总不会错得太离谱。
# 但要降到一元模型这条线**以下**，模型就必须真正利用前文——这才是我们想让 GPT 学会的东西。

# %% [markdown]
# ## 5.3 从文本到批次
#
# 第 2 章讲过滑动窗口：把长长的词元序列切成长度 T 的窗口，输入 `x = ids[s : s+T]`，目标 `y = ids[s+1 : s+T+1]`。
# 一个窗口同时包含 T 道“猜下一个字”的题。训练器用 `llmcore.batches.StepBatches` 取批次，它有两种方式：
#
# - `random`（默认，nanoGPT 的做法）：每个批次随机取 B 个起点。语料很长、训练步数远不到一轮时，这样最简单。
# - `epoch`（原书的做法）：按步幅切出全部窗口，每一轮打乱一次依次取完。5.9 节原书的实验用它。
#
# 两种方式有一个共同点：**第 i 个批次完全由 (种子, i) 决定**。所以续训时只要记住“已经走到第几步”，
# 就能接着取出一模一样的数据，不必保存数据加载器的状态。

# %%
from llmcore.batches import StepBatches

batches = StepBatches(train_ids, batch_size=4, context_length=12, mode="random", seed=1)
x, y = batches.get(0)  # 第 0 个批次
print("x", x.shape, x.dtype, "  y", y.shape)
for row_x, row_y in zip(x[:2], y[:2]):
    print("  输入:", tok.decode(row_x.tolist()), "  目标:", tok.decode(row_y.tolist()))
x_again, _ = StepBatches(train_ids, batch_size=4, context_length=12, mode="random", seed=1).get(0)
print("换一个对象再取第 0 个批次，结果相同:", np.array_equal(x, x_again))

ep = StepBatches(train_ids, batch_size=16, context_length=128, mode="epoch", seed=1)
print(f"epoch 方式（T=128、步长 128、B=16）：每轮 {len(ep.starts):,} 个窗口、{ep.batches_per_epoch:,} 个批次")

# %% [markdown]
# 评估用的批次则是**固定**的一组（`eval_batches`）：每次评估都在同一批数据上算损失，曲线的起伏才反映模型的变化，
# 而不是抽样的运气。random 方式下，训练集上随机取固定的起点，验证集上等距取；epoch 方式下两者都取按步幅对齐的窗口，与原书相同。

# %% [markdown]
# ## 5.4 一个手写的训练循环，两条轨道并排
#
# 训练的一步只有五件事：取一个批次、前向算 logits、算交叉熵、反向求梯度、优化器更新参数。
# 优化器用 AdamW（Adam 加上“解耦的”权重衰减 (weight decay)），它的更新规则在附录 D §D.3 里逐行写出。
# 先把“一个批次的损失”和“一步”写出来，再写一个在固定批次上求平均损失的评估函数：

# %%
# 章内实现
def calc_loss_batch(model, x: np.ndarray, y: np.ndarray) -> tt.Tensor:
    """一个批次的平均交叉熵：x、y 都是 (B, T)。"""
    logits = model(x)  # (B, T, V)
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def train_step(model, opt, x: np.ndarray, y: np.ndarray) -> float:
    """训练的一步：前向、损失、清零旧梯度、反向、更新。返回这一步的损失。"""
    loss = calc_loss_batch(model, x, y)
    opt.zero_grad()  # 梯度是累加的，先清掉上一步的
    loss.backward()
    opt.step()
    return loss.item()


def evaluate(model, batches) -> float:
    """在一组固定批次上的平均损失（按词元平均）。评估时关掉 dropout，也不建计算图。"""
    model.eval()
    total, n = 0.0, 0
    with tt.no_grad():
        for x, y in batches:
            total += calc_loss_batch(model, x, y).item() * y.size
            n += y.size
    model.train()
    return total / n


# %% [markdown]
# 训练循环把这一步重复很多次。每隔 `eval_every` 步，它在训练集和验证集的固定批次上各评估一次，
# 再让模型用第 4 章的贪心生成续写一句话——看着损失往下走的同时，也能读到模型“写”出来的东西：

# %%
# 章内实现
from gpt_numpy.generate import generate_text_simple  # 第 4 章写过的贪心生成


def sample_text(model, tokenizer, prompt: str, n_new: int) -> str:
    """用贪心生成续写 prompt，返回整段文字。"""
    model.eval()
    ids = generate_text_simple(model, np.array([tokenizer.encode(prompt)]), n_new, model.cfg.context_length)
    model.train()
    return tokenizer.decode(ids[0].tolist())


def train_model_simple(model, opt, batches, eval_train, eval_val, steps: int, eval_every: int,
                       tokenizer=None, prompt: str = "", n_new: int = 20) -> dict:
    """最简的训练循环：第 i 步用第 i 个批次；每 eval_every 步（以及最后一步）评估并生成一段样例。"""
    history = {"loss": [], "eval_step": [], "train_loss": [], "val_loss": [], "samples": []}
    model.train()
    for step in range(steps):
        x, y = batches.get(step)  # (B, T) 两个
        history["loss"].append(train_step(model, opt, x, y))
        if (step + 1) % eval_every == 0 or step == steps - 1:
            tr, va = evaluate(model, eval_train), evaluate(model, eval_val)
            history["eval_step"].append(step + 1)
            history["train_loss"].append(tr)
            history["val_loss"].append(va)
            line = f"第 {step + 1:>3} 步  训练损失 {tr:.4f}  验证损失 {va:.4f}"
            if tokenizer is not None:
                text = sample_text(model, tokenizer, prompt, n_new)
                history["samples"].append(text)
                line += f"  | {text}"
            print(line)
    return history


# %% [markdown]
# PyTorch 轨道的一步几乎逐行相同，只是损失用 torch 的函数、`loss.item()` 之前不用 `.data`：

# %%
# 章内实现
def train_step_torch(model, opt, x: np.ndarray, y: np.ndarray) -> float:
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    logits = model(x)  # (B, T, V)
    loss = cross_entropy_torch(logits.flatten(0, 1), y.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# %% [markdown]
# 两条轨道从 5.0 节的同一份初始权重出发、取同样的批次（同一个 `StepBatches`），数据只用训练集的前一小段。
# tinytensor 这边用完整的 `train_model_simple`（带评估和样例），torch 那边只用 `train_step_torch` 循环，比较每一步的训练损失：

# %%
n_slice = 50_000 if QUICK else 300_000
steps = 12 if QUICK else 60
B, lr = 16, 1e-3
slice_batches = StepBatches(train_ids[:n_slice], batch_size=B, context_length=cfg.context_length, seed=0)
eval_train = eval_batches(train_ids[:n_slice], n_batches=4, batch_size=8, context_length=cfg.context_length)

t0 = time.time()
trained_np = NM.GPTModel(cfg)
trained_np.load_arrays(init0)
opt_np = tt.optim.AdamW(trained_np.parameters(), lr=lr, weight_decay=0.1)
hist = train_model_simple(trained_np, opt_np, slice_batches, eval_train, val_batches, steps,
                          eval_every=max(1, steps // 4), tokenizer=tok, prompt="新华社北京", n_new=15)
losses_np = hist["loss"]
t1 = time.time()
trained_torch = TM.GPTModel(cfg)
trained_torch.load_arrays(init0)
trained_torch.train()
opt_torch = torch.optim.AdamW(trained_torch.parameters(), lr=lr, weight_decay=0.1)
losses_torch = [train_step_torch(trained_torch, opt_torch, *slice_batches.get(i)) for i in range(steps)]
t2 = time.time()
print()
print(f"{steps} 步，每步 {B}×{cfg.context_length} 个词元；用时 tinytensor {t1 - t0:.1f} 秒（含评估与样例），torch {t2 - t1:.1f} 秒")
print(pad("步", 6) + pad("tinytensor", 14) + pad("torch", 14) + "差")
for s in sorted({0, 1, 2, 4, steps // 4, steps // 2, steps - 1}):
    print(pad(s + 1, 6) + pad(f"{losses_np[s]:.6f}", 14) + pad(f"{losses_torch[s]:.6f}", 14) + f"{abs(losses_np[s] - losses_torch[s]):.1e}")
print(f"全部 {steps} 步的最大差：{np.abs(np.array(losses_np) - np.array(losses_torch)).max():.1e}")

# %% [markdown]
# 这两个函数与库里训练器做的是同一件事：`tests/test_chapter_ch04_ch05.py` 在 float64 下核对了
# `train_step` 与 NumPy 轨道训练后端的一步（`forward_backward` + `optimizer_step`，不裁剪、学习率不变）更新后的每个参数，
# `evaluate` 与后端的 `eval_loss`，以及 `train_model_simple` 记下的每个损失。库里的后端用的损失是下面会讲的融合版本 `model.loss`。

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(range(1, steps + 1), losses_np, "o-", ms=3, label="tinytensor")
ax.plot(range(1, steps + 1), losses_torch, "--", lw=2, label="torch")
ax.axhline(math.log(V), color="gray", ls=":", label="ln V（均匀猜）")
ax.axhline(unigram, color="green", ls=":", label="一元模型 (unigram) 参照线")
ax.set_title("手写训练循环：两条轨道的训练损失")
ax.set_xlabel("步数 (step)")
ax.set_ylabel("训练损失（交叉熵）")
ax.grid(alpha=0.3)
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# 两条曲线重合在一起：同样的初始权重、同样的数据、同样的运算。剩下的差别来自 float32 的舍入
# （两个框架求和的顺序不同），它会随步数慢慢累积，但比损失本身的变化小得多。
# 损失一开始下降得很快，那是模型在学字频——也就是在向 5.2 节的一元模型靠拢；再往下就要靠上下文，进展会慢下来。
# 训练中打印的样例也说明了这一点：贪心生成每一步都挑最可能的字，而这时模型眼里最可能的总是逗号
# （训练集里最常见的字），于是续写成一串逗号。5.5 节的训练器训练得更久，生成样例时还用了温度和 top-k 抽样（5.6 节）。
# 训练前后，在验证集的那几个固定批次上比一比：

# %%
trained_np.eval()
trained_torch.eval()
with torch.no_grad():
    val_torch = np.mean([
        torch.nn.functional.cross_entropy(trained_torch(torch.from_numpy(x)).flatten(0, 1), torch.from_numpy(y).flatten()).item()
        for x, y in val_batches
    ])
val_np = evaluate(trained_np, val_batches)
print(f"训练前 {loss0:.4f} → 训练 {steps} 步后：tinytensor {val_np:.4f}，torch {val_torch:.4f}（困惑度 {math.exp(val_np):.0f}）")
print(f"一元模型的参照线 {unigram:.4f}：手写循环的验证损失{'已经低于' if val_np < unigram else '还高于'}它（差 {val_np - unigram:+.4f}）")

# %% [markdown]
# **训练器里的一处优化。** 上面的循环先算出完整的 logits `(B, T, V)`，再求交叉熵。词表一大，这个张量（以及反向时
# 同样大的梯度）就是整个模型里最大的一块激活。NumPy 轨道的训练器改用 `model.loss(x, y)`：它调用
# `F.linear_cross_entropy`，把输出层和交叉熵融合在一起**按行分块**计算——每块先算出这几行的 logits，
# 立刻得到损失和对 logits 的梯度 $p - \mathrm{onehot}$，再乘回输出层的权重，然后就丢掉，整块的 logits 从不保存。
# （torch 轨道的 `loss` 仍是先算 logits 再求交叉熵，PyTorch 没有同名的融合函数。）两种算法结果相同：

# %%
x, y = slice_batches.get(0)  # (B, T) 两个
with tt.no_grad():
    separate = F.cross_entropy(trained_np(x).reshape(-1, V), y.reshape(-1)).item()
    fused = trained_np.loss(x, y).item()
print(f"先算 logits 再求交叉熵 {separate:.6f}；model.loss 融合计算 {fused:.6f}；差 {abs(separate - fused):.1e}")
print(f"不必保存的 logits：{B}×{cfg.context_length}×{V} 个 float32，约 {B * cfg.context_length * V * 4 / 2**20:.1f} MiB")

# %% [markdown]
# ## 5.5 正式的训练器：`python -m gpt_numpy train`
#
# 上面的循环能用，但离“放心地训几个小时”还差很多东西。`llmcore/trainer.py` 里的 `Trainer` 是两条轨道共用的
# 训练循环（框架相关的部分由各自的后端提供），它在五步之外加上了：
#
# | 功能 | 作用 | 细节在 |
# |---|---|---|
# | 学习率预热 (warmup) + 余弦退火 (cosine decay) | 开头小步试探，结尾小步收敛 | 附录 D |
# | 梯度裁剪 (gradient clipping) | 个别批次的梯度特别大时按比例缩小，防止一步走飞 | 附录 D |
# | AdamW 的参数分组 | 只对二维以上的权重做权重衰减（`--decay_all` 可改为全部参数）；更新规则本身 | 附录 D §D.3 |
# | 梯度累积 (gradient accumulation) | 内存不够大批次时，分几次算完再更新 | 附录 D |
# | 定期评估 | 每隔 `eval_interval` 步在固定批次上算训练/验证损失 | 5.3 节 |
# | 记录与可视化 | `metrics.jsonl`、`loss.png`、`samples.txt`，进度条显示损失、词元/秒、剩余时间 | 本节 |
# | 检查点 | `ckpt_last` 与验证损失最低的 `ckpt_best`，原子写入；Ctrl-C 时先保存再退出 | 5.7 节 |
# | 精确续训 | 检查点里有优化器状态、步数、随机数状态；中断再续与一口气训完逐位相同 | 附录 D |
# | NaN 检测 | 损失变成 NaN/inf 时立刻停下，保留上一个正常的检查点 | 附录 D |
#
# 命令行的每个训练参数都是 `TrainConfig` 的一个字段，用 `--key=value` 覆盖；模型结构的字段（如 `--n_layers=2`）也可以。
# 默认值就是项目的“主任务”：人民日报语料、字符级分词、tiny 模型，训练 2000 步（完整运行的真实记录在本节末尾读出）。

# %%
defaults = TrainConfig()
for k in ("data", "tokenizer", "preset", "batch_size", "max_steps", "lr", "min_lr", "warmup_steps", "schedule",
          "weight_decay", "grad_clip", "eval_interval", "out_dir"):
    print(f"  --{k}={getattr(defaults, k)}")

# %% [markdown]
# 这里跑一个缩短的版本：模型与默认任务相同，只是步数少一些，预热和余弦退火也按比例缩短。
# 训练器在子进程里运行，就和你在终端里敲命令一样：

# %%
def run_cli(track: str, *args: str) -> subprocess.CompletedProcess:
    """在子进程里运行 python -m <track> ...，打印命令、用时与输出（临时目录显示为 $WORK）。"""
    print("$ python -m", track, " ".join(a.replace(str(WORK), "$WORK") for a in args))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", track, *args], cwd=ROOT, capture_output=True, text=True)
    out = (proc.stderr + proc.stdout).replace(str(WORK), "$WORK").strip()
    print(out)
    print(f"[退出码 {proc.returncode}，用时 {time.time() - t0:.0f} 秒]")
    return proc


run_dir = WORK / "zh-tiny"
if QUICK:
    cli_args = ["--max_steps=20", "--n_layers=2", "--emb_dim=64", "--context_length=64", "--warmup_steps=5",
                "--eval_interval=10", "--eval_batches=2", "--log_interval=2", "--sample_tokens=30"]
else:
    cli_args = ["--max_steps=800", "--warmup_steps=80", "--eval_interval=100", "--eval_batches=10", "--log_interval=10"]
proc = run_cli("gpt_numpy", "train", *cli_args, "--progress=false", f"--out_dir={run_dir}")
assert proc.returncode == 0

# %% [markdown]
# （在终端里运行时，`--progress` 默认打开，你会看到一行 tqdm 进度条，实时显示损失、学习率、词元/秒和剩余时间；
# 这里为了输出整洁把它关掉了。）
#
# 输出目录里有这些东西：

# %%
for p in sorted(run_dir.iterdir()):
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    print(pad(p.name + ("/" if p.is_dir() else ""), 16), f"{size / 1024:>9,.1f} KB")

# %% [markdown]
# `metrics.jsonl` 每行一条 JSON 记录：`type` 为 `train` 的是训练时每隔 `log_interval` 步的损失、学习率、
# 梯度范数和吞吐；`type` 为 `eval` 的是评估时在固定批次上的训练/验证损失。训练器自己会把它画成 `loss.png`；
# 我们在这里直接读记录重画一遍，顺便把学习率和梯度范数也画出来：

# %%
records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
train_rec = [r for r in records if r["type"] == "train"]
eval_rec = [r for r in records if r["type"] == "eval"]
print("第一条训练记录:", train_rec[0])
print("最后一条评估记录:", eval_rec[-1])

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
axes[0].plot([r["step"] for r in train_rec], [r["loss"] for r in train_rec], color="#9ecae1", label="训练（每步的批次）")
axes[0].plot([r["step"] for r in eval_rec], [r["train_loss"] for r in eval_rec], "o-", ms=4, label="训练集（评估）")
axes[0].plot([r["step"] for r in eval_rec], [r["val_loss"] for r in eval_rec], "s-", ms=4, label="验证集（评估）")
axes[0].axhline(math.log(V), color="gray", ls=":", label="ln V")
axes[0].set_title("损失")
axes[0].set_ylabel("交叉熵损失")
axes[0].legend()
axes[1].plot([r["step"] for r in train_rec], [r["lr"] for r in train_rec])
axes[1].set_title("学习率：预热 + 余弦退火")
axes[1].set_ylabel("学习率 (learning rate)")
axes[2].plot([r["step"] for r in train_rec], [r["grad_norm"] for r in train_rec])
axes[2].axhline(TrainConfig().grad_clip, color="red", ls="--", label="裁剪上限")
axes[2].set_title("梯度范数（裁剪前）")
axes[2].set_ylabel("梯度范数 (grad norm)")
axes[2].legend()
for ax in axes:
    ax.set_xlabel("步数 (step)")
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %%
last = eval_rec[-1]
speeds = [r["tokens_per_sec"] for r in train_rec if r.get("tokens_per_sec")]
print(f"第 {last['step']} 步：训练损失 {last['train_loss']:.4f}，验证损失 {last['val_loss']:.4f}，"
      f"验证困惑度 {math.exp(last['val_loss']):.1f}")
print(f"共 {last['tokens']:,} 个训练词元，墙钟时间 {last['time']:.0f} 秒，中位吞吐 {np.median(speeds):,.0f} 词元/秒")

# %% [markdown]
# 读这几张图和数字时抓住三点：
#
# - **损失**：验证损失早已离开 $\ln V$，并且落到了 5.2 节一元模型那条参照线以下——模型不只是在背字频，而是开始用前文来猜下一个字。
# - **训练与验证**：两条评估曲线贴得很近。语料有一百多万个字，这次训练见到的词元总量只与训练集本身相当（下面打印的比值），
#   大部分文本只见过一次左右，模型没有机会“背答案”，在训练集上学到的东西也就同样适用于验证集。5.9 节会看到相反的情形。
# - **学习率与梯度范数**：学习率先在预热阶段线性爬升，再沿余弦曲线降下来；梯度范数图上高出红线的点，就是被裁剪的步。
#
# 具体的数由下面这格从记录里算出来：

# %%
clip = TrainConfig().grad_clip
n_clipped = sum(r["grad_norm"] > clip for r in train_rec)
print(f"验证损失 {last['val_loss']:.4f}：比 ln V 低 {math.log(V) - last['val_loss']:.2f}；"
      f"比一元模型{'低' if last['val_loss'] < unigram else '高'} {abs(unigram - last['val_loss']):.2f}")
print(f"验证损失 − 训练损失 = {last['val_loss'] - last['train_loss']:+.4f}")
print(f"训练共见到 {last['tokens']:,} 个词元，是训练集大小的 {last['tokens'] / len(train_ids):.2f} 倍")
print(f"记录下的 {len(train_rec)} 个训练步里，有 {n_clipped} 个的梯度范数超过上限 {clip}（被裁剪）")

# %%
samples = (run_dir / "samples.txt").read_text(encoding="utf-8").strip().split("\n\n")
for s in (samples[0], samples[len(samples) // 2], samples[-1]):
    print(s, "\n")

# %% [markdown]
# `samples.txt` 记下了每次评估时的样例（温度 0.8、top-k 40，提示“新华社北京”），按时间顺序读，就是模型学会写字的过程：
#
# - **第 0 步**，模型还是随机的，输出是从几千个字里近乎均匀抽出的一串生僻字——正是损失约等于 $\ln V$ 的样子；
# - **训练到一半**，常用字占了上风，开始出现报道里的常用词（“领导”“人民法院”“记者说”），偶尔拼出完整的词；
# - **训练结束**，短的词和词组大多是对的，字与字之间的衔接像新闻稿，但一整句读下来并不通顺。
#
# 这个模型只有约两百万个参数、只训练了 800 步，一次最多看 128 个字。它学到的主要是“哪些字常挨在一起”，
# 还谈不上语义；要写出通顺的长句，需要更大的模型、更多的数据和更长的训练。

# %% [markdown]
# ### 训练后的注意力头在看哪里
#
# 第 3 章 §3.5 用因果掩码把注意力权重矩阵的右上三角清零：每个字只能看见自己和前面的字。当时的权重是随机的，
# 现在模型训练过了，可以看看它学会把注意力放在哪里。从验证集里取一句模型没训练过的话，送进刚训练好的检查点，
# 算出每一层每个头的注意力权重 `(B, nh, T, T)`，挑注意力最集中（每行的熵最低）的一层画出来。
# 库里的注意力层为了速度把“投影、打分、softmax、加权求和”融合成了一个算子，不把中间的权重交出来；
# 不过那一层的 `norm1`、`W_query`、`W_key`、`W_value` 都是模型里普通的模块，照第 3 章的公式在页面上重算一遍即可，
# 再用这一层自己的输出核对一下，确认算的正是模型实际用的权重：

# %%
trained_lm = NM.GPTModel.load(run_dir / "ckpt_best")  # 上面训练得到的验证损失最低的检查点
trained_lm.eval()
run_tok = load_tokenizer(run_dir / "tokenizer.json")


def attention_weights(model, ids: np.ndarray, layer: int) -> tuple[np.ndarray, float]:
    """第 layer 层每个头的注意力权重 (B, nh, T, T)，以及用它重算的注意力输出与该层真实输出的最大差。"""
    att = model.trf_blocks[layer].att
    b, t = ids.shape
    nh, hs = att.num_heads, att.head_dim
    with tt.no_grad():
        x = model.tok_emb(ids) + model.pos_emb(tt.arange(t))  # (B, T, C)
        for block in list(model.trf_blocks)[:layer]:  # 先走完前面的各层
            x = block(x)
        h = model.trf_blocks[layer].norm1(x)  # 注意力的输入：pre-norm

        def heads(lin) -> tt.Tensor:
            return lin(h).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)

        q, k, v = heads(att.W_query), heads(att.W_key), heads(att.W_value)
        scores = q @ k.transpose(2, 3) / math.sqrt(hs)  # (B, nh, T, T)
        future = np.triu(np.ones((t, t), dtype=bool), k=1)  # 第 3 章的因果掩码：右上三角是“未来”
        weights = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # (B, nh, T, T)，每行和为 1
        ctx = (weights @ v).transpose(1, 2).reshape(b, t, nh * hs)  # (B, T, C)
        diff = np.abs(att.out_proj(ctx).data - att(h).data).max()  # 与这一层自己的前向比较
    return weights.data, float(diff)


def row_entropy(w: np.ndarray) -> np.ndarray:
    """每一行注意力权重的熵（奈特），形状 (..., T)：越小，这一行越集中在少数几个字上。"""
    return -(w * np.log(w + 1e-12)).sum(-1)


att_sentence = next(s for s in re.findall(r"[^。？！\n]*[。？！]", val_text) if 14 <= len(s) <= 18)
att_ids = np.array([run_tok.encode(att_sentence)])  # (1, T)：字符级，一个字一个词元
T_att = att_ids.shape[1]
uniform_ent = np.mean(np.log(np.arange(1, T_att + 1)))  # 第 t 行平均分给 t 个可见的字时的熵，再对各行平均
print(f"验证集里的一句话（{T_att} 个字）：{att_sentence}")
per_layer = [attention_weights(trained_lm, att_ids, layer) for layer in range(trained_lm.cfg.n_layers)]
for layer, (w, diff) in enumerate(per_layer):
    print(f"第 {layer} 层：各头每行熵的平均 {row_entropy(w).mean():.2f}（平均分配时 {uniform_ent:.2f}）；"
          f"重算的注意力输出与该层输出的最大差 {diff:.1e}")
att_layer = int(np.argmin([row_entropy(w).mean() for w, _ in per_layer]))  # 注意力最集中的一层
att_w = per_layer[att_layer][0]  # (1, nh, T, T)
print(f"画第 {att_layer} 层：权重形状 (B, nh, T, T) = {att_w.shape}，每行之和 {att_w.sum(-1).min():.4f} ～ "
      f"{att_w.sum(-1).max():.4f}，右上三角（未来的位置）的最大权重 {np.triu(att_w[0], k=1).max():.1f}")

# %%
chars = [run_tok.decode([int(i)]) for i in att_ids[0]]
nh = att_w.shape[1]
ncols = math.ceil(math.sqrt(nh))
nrows = math.ceil(nh / ncols)
fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1, 4.2 * nrows), squeeze=False, layout="constrained")
norm = PowerNorm(gamma=0.5, vmin=0, vmax=1)  # 平方根刻度：0.05 这样的小权重也看得出颜色
for hd, ax in enumerate(axes.flat):
    if hd >= nh:
        ax.axis("off")
        continue
    im = ax.imshow(att_w[0, hd], cmap="Blues", norm=norm)
    ax.set_xticks(range(len(chars)), chars, fontsize=8)
    ax.set_yticks(range(len(chars)), chars, fontsize=8)
    ax.set_title(f"头 {hd}")
    ax.set_xlabel("被看的字（键 key）")
    ax.set_ylabel("当前的字（查询 query）")
fig.colorbar(im, ax=axes, shrink=0.6, label="注意力权重（平方根刻度）")
fig.suptitle(f"训练后的模型第 {att_layer} 层各头的注意力权重：“{att_sentence}”")
plt.show()

# %%
ent = row_entropy(att_w[0]).mean(-1)  # (nh,)
for hd in range(nh):
    prev = np.diagonal(att_w[0, hd], offset=-1).mean()  # 每个字分给前一个字的权重，平均
    own = np.diagonal(att_w[0, hd]).mean()  # 分给自己的权重
    top = np.argsort(-att_w[0, hd, -1])[:3]  # 句末标点最看重的三个字
    print(f"头 {hd}：每行熵的平均 {ent[hd]:.2f}（平均分配 {uniform_ent:.2f}）；"
          f"看前一个字 {prev:.2f}，看自己 {own:.2f}；“{chars[-1]}”最看重 "
          + "、".join(f"“{chars[i]}” {att_w[0, hd, -1, i]:.2f}" for i in top))

# %% [markdown]
# 每张小图只在对角线和它的左下方有颜色：这正是第 3 章 §3.5 的因果掩码，右上三角的权重恰好是 0（上面打印的最大值），
# 每个字只能把注意力分给自己和前面的字。第一行总是一个深色方块——句首的字只能看自己，权重只能是 1；越往下，
# 可看的字越多，权重也就摊得越薄，所以判断一个头是不是盯住了少数几个字，要拿它每行的熵与平均分配时的熵比，
# 低得越多越集中。画出的这一层里，各头已经有了不同的习惯（对照上面打印的熵和句末标点最看重的字）：
# 头 1 最集中（熵约为平均分配时的三分之一）：大多数字把权重压在句首的“到”上，逗号之后的字再分一份给“，”——
# 没什么特别要看的时候，就把注意力放在句首，这是训练过的注意力头常见的习惯；头 3 的很多字回头看年份的第一个数字“１”
# 和“的”，句末的“。”主要看自己；头 2 让逗号之后的字把注意力分给“，”和“云”；头 0 铺得最宽，句末的“。”看的是前面的“天”“日”。

# %% [markdown]
# ### 默认任务的完整运行
#
# 用默认设置（`python -m gpt_numpy train` 和 `python -m gpt_torch train`，各 2000 步）两条轨道各完整训练一次，
# 两份 `metrics.jsonl` 存在仓库里：`docs/results/default-numpy.jsonl` 和 `default-torch.jsonl`。下面读出它们：

# %%
RESULTS = ROOT / "docs" / "results"


def load_run(name: str) -> list[dict]:
    """读 docs/results/<name>.jsonl（格式与训练器写的 metrics.jsonl 相同）。"""
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


default_runs = {track: load_run(f"default-{track}") for track in ("numpy", "torch")}
for track, recs in default_runs.items():
    ev = [r for r in recs if r["type"] == "eval"]
    sp = [r["tokens_per_sec"] for r in recs if r["type"] == "train" and r.get("tokens_per_sec")]
    print(f"{pad(track + ' 轨道', 12)} {ev[-1]['step']} 步：验证损失 {ev[0]['val_loss']:.4f} → {ev[-1]['val_loss']:.4f}"
          f"（困惑度 {math.exp(ev[-1]['val_loss']):.1f}），训练损失 {ev[-1]['train_loss']:.4f}；"
          f"用时 {ev[-1]['time'] / 60:.1f} 分钟，中位吞吐 {np.median(sp) if sp else float('nan'):,.0f} 词元/秒")
fig, ax = plt.subplots(figsize=(7, 3.2))
for track, recs in default_runs.items():
    ev = [r for r in recs if r["type"] == "eval"]
    ax.plot([r["step"] for r in ev], [r["train_loss"] for r in ev], "o-", ms=3, label=f"{track}：训练集")
    ax.plot([r["step"] for r in ev], [r["val_loss"] for r in ev], "s--", ms=3, label=f"{track}：验证集")
ax.axhline(unigram, color="green", ls=":", label="一元模型 (unigram) 参照线")
ax.set_title(f"默认任务的完整运行（{ev[-1]['step']} 步）")
ax.set_xlabel("步数 (step)")
ax.set_ylabel("交叉熵损失")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
ev_np, ev_t = ({r["step"]: r["val_loss"] for r in recs if r["type"] == "eval"} for recs in default_runs.values())
common = sorted(set(ev_np) & set(ev_t))
print(f"两条轨道在 {len(common)} 个共同的评估点上，验证损失的最大差 {max(abs(ev_np[s] - ev_t[s]) for s in common):.1e}")

# %% [markdown]
# 两条轨道从同一个种子出发、用同样的数据和设置，差别只来自浮点舍入，所以曲线应当几乎重合（上面打印了实际的最大差）。
# 两次运行不是同时进行的，机器的负载可能不同，打印的速度只能作参考；两条轨道严格的速度对比见 `bench/`。

# %% [markdown]
# ## 5.6 解码策略：贪心、温度、top-k、top-p
#
# 模型每一步给出的是一个概率分布，“生成文本”就是反复从这个分布里选一个词元、接到末尾。**怎么选**，
# 对结果的影响和模型本身一样大。先把刚训练好的检查点装进两条轨道：

# %%
from gpt_numpy.generate import generate
from llmcore.sampling import filter_logits, softmax
from llmcore.tokenizers import load_tokenizer
from gpt_torch.generate import generate as generate_torch

ckpt = run_dir / "ckpt_best"
lm_np = NM.GPTModel.load(ckpt)
lm_torch = TM.GPTModel.load(ckpt)
lm_np.eval()
lm_torch.eval()
zh_tok = load_tokenizer(run_dir / "tokenizer.json")
print("检查点:", ckpt.name, "| 训练到第", json.loads((ckpt / "trainer_state.json").read_text())["step"], "步",
      "| 模型", lm_np.cfg.n_layers, "层，C =", lm_np.cfg.emb_dim)


def next_logits(text: str) -> np.ndarray:
    """给定前文，模型对下一个词元的 logits (V,)。"""
    with tt.no_grad():
        return lm_np(np.array([zh_tok.encode(text)])).data[0, -1]


def show_top(probs: np.ndarray, k: int = 8) -> str:
    top = np.argsort(-probs)[:k]
    return "  ".join(f"{zh_tok.decode([int(i)])!r}:{probs[i]:.3f}" for i in top)


prompt = "新华社北京"
z = next_logits(prompt)
print(f"“{prompt}”之后，概率最高的几个字：")
print("  ", show_top(softmax(z[None])[0]))

# %% [markdown]
# **贪心** (greedy)：每次都选概率最大的那个。它是确定的，但很容易陷进重复的循环——
# 一旦某个片段让自己成为最可能的后续，就会一遍遍地绕圈。
#
# **温度** (temperature)：先把 logits 除以温度 τ 再做 softmax。τ < 1 让分布更尖（更保守），τ > 1 让分布更平（更大胆），
# τ → 0 就退化成贪心。代码只有一行：

# %%
# 章内实现
def softmax_np(z: np.ndarray) -> np.ndarray:
    """沿最后一维的 softmax（先减最大值）。"""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """logits 除以温度：τ < 1 更尖，τ > 1 更平。"""
    return np.asarray(logits, dtype=np.float64) / temperature


# %% [markdown]
# 下面是同一个位置、三种温度下概率最高的 20 个词元：

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
order = np.argsort(-z)[:20]
for k, tau in enumerate((0.5, 1.0, 2.0)):
    pr = softmax_np(apply_temperature(z[None], tau))[0]
    ax.bar(np.arange(20) + (k - 1) * 0.27, pr[order], width=0.27, label=f"温度 τ = {tau}")
    ent = -(pr * np.log(pr + 1e-30)).sum()
    print(f"τ = {tau}：最大概率 {pr.max():.3f}，熵 {ent:.2f}（相当于在 {math.exp(ent):.0f} 个词元里均匀地选）")
ax.set_title(f"“{prompt}”之后的下一个字：三种温度")
ax.set_xticks(np.arange(20), [zh_tok.decode([int(i)]).replace("\n", "\\n") for i in order])
ax.set_xlabel("按 logit 从大到小排列的前 20 个字")
ax.set_ylabel("概率")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# 温度再低，也还是从全部 V 个词元里抽——总有很小的机会抽到一个完全不搭的字，一旦抽到，后文就跑偏了。
# 另外两个办法直接砍掉尾巴：
#
# - **top-k**：只保留 logits 最大的 k 个词元，其余设为 $-\infty$，再 softmax；
# - **top-p**（核采样，nucleus sampling）：按概率从大到小累加，保留刚好凑够 p 的最少几个词元。
#
# 两个过滤器都只是把不要的位置设成 $-\infty$（softmax 之后概率为 0）。top-p 先按 logits 从大到小排序，
# 算出每个词元**之前**的累计概率；前面已经凑够 p 的，就不要了——所以排第一的那个总会留下：

# %%
# 章内实现
def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """每行只保留最大的 k 个 logits（与第 k 大并列的也保留），其余设为 -inf。logits：(B, V)。"""
    kth = np.sort(logits, axis=-1)[:, -k][:, None]  # (B, 1)：每行第 k 大的值
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """每行保留累计概率刚好凑够 p 的最少几个词元，其余设为 -inf。"""
    order = np.argsort(-logits, axis=-1, kind="stable")  # (B, V)：从大到小的下标
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    probs = softmax_np(sorted_logits)
    before = np.cumsum(probs, axis=-1) - probs  # 排在它前面的累计概率
    sorted_logits = np.where(before >= p, -np.inf, sorted_logits)  # 前面已经够了：不要
    out = np.empty_like(sorted_logits)
    np.put_along_axis(out, order, sorted_logits, axis=-1)  # 放回原来的顺序
    return out


# %% [markdown]
# 把同样两个函数写成 PyTorch：`torch.topk` 直接给出前 k 个值，`masked_fill` 代替 `np.where`，
# 放回原顺序用 `scatter`（NumPy 里是 `put_along_axis`）。生成时抽样只在 NumPy 里做（两条轨道共用，见后文），
# 这两个函数是为了对照 API：

# %%
# 章内实现
def top_k_filter_torch(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter_torch(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(before >= p, float("-inf"))
    return torch.empty_like(logits).scatter(-1, order, sorted_logits)


# %% [markdown]
# top-p 的好处是**自适应**：模型越有把握，留下的候选越少；拿不准时留得多。在两个位置上比较：
# “新华社北”后面几乎只能是“京”，而一句话刚开头时可选的字很多。同时核对我们的过滤器与库里的
# `llmcore.sampling.filter_logits`、与 torch 写法给出同样的结果：

# %%
for text in ("新华社北", "今天"):
    zz = next_logits(text)[None].astype(np.float64)  # (1, V)
    print(f"前文“{text}”：")
    for name, ours, lib, twin in [
        ("top-k = 5", top_k_filter(zz, 5), filter_logits(zz, top_k=5), top_k_filter_torch(torch.from_numpy(zz), 5)),
        ("top-p = 0.9", top_p_filter(zz, 0.9), filter_logits(zz, top_p=0.9), top_p_filter_torch(torch.from_numpy(zz), 0.9)),
    ]:
        assert np.array_equal(ours, lib) and np.array_equal(ours, twin.numpy())  # 与库、与 torch 写法逐位相同
        kept = softmax_np(ours)[0]
        print(f"   {pad(name, 12)} 保留 {int((kept > 0).sum()):>4} 个词元：{show_top(kept, 5)}")

# %% [markdown]
# 实际用的时候常把几种办法组合起来：先除以温度，再做 top-k / top-p 过滤，最后按概率抽样。
# 抽样用逆变换：取一个 [0, 1) 的均匀随机数 u，在累积概率上找到第一个超过 u 的词元。
# 温度为 0 时直接取最大值。把它放进第 4 章的生成循环，就是完整的 `generate`：

# %%
# 章内实现
def sample_next(logits: np.ndarray, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """由最后一个位置的 logits (B, V) 选出下一个词元 (B,)。"""
    if temperature == 0.0:
        return np.argmax(logits, axis=-1)  # 贪心
    z = apply_temperature(logits, temperature)
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    probs = softmax_np(z)  # (B, V)
    u = rng.random(len(probs))[:, None]  # (B, 1)：每行一个均匀随机数
    cdf = np.cumsum(probs, axis=-1)
    cdf /= cdf[:, -1:]  # 消掉累加的舍入误差，让最后一个有效位置恰好是 1
    return (u >= cdf).sum(axis=-1)  # 第一个 cdf > u 的位置


def generate_simple(model, idx: np.ndarray, max_new_tokens: int, context_size: int, temperature: float = 0.0,
                    top_k: int | None = None, top_p: float | None = None, seed: int | None = None) -> np.ndarray:
    """第 4 章的生成循环，把 argmax 换成 sample_next（不用 KV 缓存，每步整段重算）。"""
    rng = np.random.default_rng(seed)
    for _ in range(max_new_tokens):
        with tt.no_grad():
            logits = model(idx[:, -context_size:]).data[:, -1, :]  # (B, V)
        idx_next = sample_next(logits, temperature, top_k, top_p, rng)[:, None]  # (B, 1)
        idx = np.concatenate([idx, idx_next], axis=1)
    return idx


# %% [markdown]
# 库里的 `generate` 的参数就是这几个，外加 `use_cache`（第 4 章 4.11 节的 KV 缓存，默认打开）和 `eos_id`（遇到结束符就停）。
# 抽样部分 `llmcore.sampling.sample_next` 与上面的写法相同。先核对两者给出同样的词元，再用同一段提示、几种设置各生成一段：

# %%
start = np.array([zh_tok.encode(prompt)])
n_check = 10 if QUICK else 30
for kw in (dict(temperature=0.0), dict(temperature=0.8, top_k=40), dict(temperature=1.0, top_p=0.9)):
    ours = generate_simple(lm_np, start, n_check, lm_np.cfg.context_length, seed=3, **kw)
    lib = generate(lm_np, start, n_check, seed=3, **kw)
    print(f"{str(kw):45s} 我们的 generate_simple 与库的 generate 生成的词元相同: {ours.tolist() == lib.tolist()}")

# %%
n_new = 30 if QUICK else 80
settings = [
    ("贪心", dict(temperature=0.0)),
    ("τ=0.8, top-k=40", dict(temperature=0.8, top_k=40)),
    ("τ=1.0, top-p=0.9", dict(temperature=1.0, top_p=0.9)),
    ("τ=1.5（不过滤）", dict(temperature=1.5)),
]


def repeat_rate(text: str, n: int = 4) -> float:
    """n 字片段里重复出现的比例：0 表示没有哪个片段出现两次，越接近 1 越是在原地打转。"""
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return 1 - len(set(grams)) / max(1, len(grams))


rates = {}
for name, kw in settings:
    out = generate(lm_np, start, max_new_tokens=n_new, seed=7, **kw)
    new_text = zh_tok.decode(out[0, start.shape[1]:].tolist())  # 只看新生成的部分
    rates[name] = repeat_rate(new_text)
    print(f"【{name}】（四字片段重复率 {rates[name]:.0%}）", zh_tok.decode(out[0].tolist()), "\n")
print("重复率最高的是：", max(rates, key=rates.get), "；最低的是：", min(rates, key=rates.get))

# %% [markdown]
# 把几段文字和重复率对照着看：
#
# - **贪心**没有任何随机性。一旦某个片段让自己成为最可能的后续，就会一遍遍地绕圈，所以它往往是重复率最高的那一段；
# - **τ = 1.5、不过滤**时，分布被压平，长尾里成千上万个不相干的字都有了可观的总概率，抽中一个就跑偏一次，
#   文字变成一串互不相干的字——重复率低，却不成句；
# - 中间两种设置（适中的温度加上 top-k 或 top-p）砍掉了长尾，又保留了随机性，在“通顺”与“多样”之间取了折中。
#
# 这些是小模型上常见的规律，具体到某一段文字还与种子有关（上面打印了这一次的实际情况）；练习 3 请你换几个种子数一数。
#
# **同一个种子，两条轨道生成同一段文字。** 抽样本身（`llmcore.sampling.sample_next`）只依赖 NumPy，
# 两条轨道共用：NumPy 的随机数生成器用种子初始化，每一步抽一个 [0, 1) 的均匀随机数，在累积概率上查出词元
# （逆变换抽样）。只要两边算出的 logits 一样（它们只差 float32 的舍入），抽到的词元就一样；
# 只有当舍入的差恰好跨过某个词元累积概率的分界点时，两边才会在那一步分岔，这种情况极少见。下面打印的是实际结果：

# %%
for seed in (1, 2):
    a = generate(lm_np, start, max_new_tokens=n_new, temperature=0.8, top_k=40, seed=seed)
    b = generate_torch(lm_torch, torch.from_numpy(start), max_new_tokens=n_new, temperature=0.8, top_k=40, seed=seed)
    same = a[0].tolist() == b[0].tolist()
    print(f"种子 {seed}：两条轨道的词元{'完全相同' if same else '不同'}")
    print("   ", zh_tok.decode(a[0].tolist()))

# %% [markdown]
# 命令行也是一样：`python -m gpt_numpy generate --ckpt=<输出目录> --prompt=新华社北京 --seed=1` 与
# `python -m gpt_torch generate ...` 打印同一段文字（流式输出，一个字一个字地出来）。
# `generate` 默认使用 KV 缓存（第 4 章 4.11 节：已算过的键和值不再重算），`--no-cache` 可以关掉它做对比。

# %% [markdown]
# ## 5.7 保存、加载与跨轨道续训
#
# 训练器写的检查点是一个目录：
#
# - `model.safetensors` + `config.json`：模型参数与结构。safetensors 只存数组和元数据，不像 pickle 那样能夹带代码；
# - `optimizer.safetensors`：AdamW 的两个动量 `exp_avg`、`exp_avg_sq`，每个参数各一份；
# - `trainer_state.json`：步数、数据位置、最优验证损失、完整的训练配置、随机数状态；
# - `tokenizer.json`：分词器，所以检查点可以单独拿去生成；
# - `manifest.json`：以上每个文件的 sha256 与字节数，最后写。读取时逐个核对，文件被截断、改动或缺失都会报错。
#
# 参数名在两条轨道上相同、`Linear` 的权重都存成 (out, in)，所以同一个目录两边都能直接读。

# %%
for f in sorted((run_dir / "ckpt_last").iterdir()):
    print(pad(f.name, 24), f"{f.stat().st_size / 1024:>9,.1f} KB")
state = json.loads((run_dir / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
print({k: state[k] for k in ("step", "optim_step", "data_index", "best_val", "track", "world_size")})

# %% [markdown]
# 只存模型、不打算续训时，需要的只是前两个文件。自己写一遍：参数按名字存进 safetensors，配置存成 JSON；
# 读的时候先按配置建一个空模型，再按名字把数组装回去。torch 的 `load_state_dict` 要张量，所以多一步 `torch.from_numpy`：

# %%
# 章内实现
import json
from pathlib import Path

from safetensors.numpy import load_file, save_file

from llmcore.config import GPTConfig


def save_weights(model, directory) -> Path:
    """把模型参数存成 model.safetensors，配置存成 config.json（与库的检查点同一格式，只是不写 manifest）。"""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.ascontiguousarray(t.detach().numpy()) for name, t in model.state_dict().items()}
    save_file(arrays, str(d / "model.safetensors"))
    meta = {"format": "llm-zh-gpt", "version": 1, "model": model.cfg.to_dict()}
    (d / "config.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return d


def load_weights(model_class, directory):
    """按 config.json 建模型，再按参数名装入 model.safetensors 里的数组。model_class 可以是任一轨道的 GPTModel。"""
    d = Path(directory)
    cfg = GPTConfig.from_dict(json.loads((d / "config.json").read_text(encoding="utf-8"))["model"])
    model = model_class(cfg)
    state = load_file(str(d / "model.safetensors"))  # {参数名: NumPy 数组}
    if isinstance(model, torch.nn.Module):
        state = {k: torch.from_numpy(v) for k, v in state.items()}
    model.load_state_dict(state)
    return model


# %% [markdown]
# 在 NumPy 轨道用我们的函数存，在 torch 轨道读回来，比较 logits；再用库的 `model.save` 存一份，
# 用我们的 `load_weights` 读——两种写法的文件可以互相读：

# %%
saved = save_weights(trained_np, WORK / "hand-loop-model")
back = load_weights(TM.GPTModel, saved)
back.eval()
trained_np.eval()
x, _ = val_batches[0]
with tt.no_grad(), torch.no_grad():
    d = np.abs(trained_np(x).data - back(torch.from_numpy(x)).numpy()).max()
print("我们保存的文件:", sorted(p.name for p in saved.iterdir()))
print(f"torch 读回后的 logits 与 tinytensor 的最大差 {d:.1e}")
lib_saved = trained_np.save(WORK / "hand-loop-model-lib")  # 库：多一个 manifest.json（校验和）
print("库保存的文件:  ", sorted(p.name for p in lib_saved.iterdir()))
again = load_weights(NM.GPTModel, lib_saved)
same = all(np.array_equal(a.data, b.data) for a, b in zip(again.state_dict().values(), trained_np.state_dict().values()))
print("用 load_weights 读库存的文件，参数逐位相同:", same)

# %% [markdown]
# 库的版本（`llmcore/checkpoint.py`）多做了几件保护性的事：先写临时文件再改名（写到一半被打断，不会留下半个文件）、
# 写 `manifest.json` 并在读取时核对、检查每个数组的形状和是否有限、权重共享时只存一份矩阵。

# %% [markdown]
# **跨轨道续训。** 训练检查点里有续训所需的一切，而且格式与框架无关。下面在 NumPy 轨道上训练 N 步后停下
# （`--stop_at=N`：存好检查点就退出，与按 Ctrl-C 的效果相同），再用 **PyTorch 轨道**、同样的命令接着训到 2N 步；
# 另外用 NumPy 轨道一口气训 2N 步作为参照。为了快，换一个更小的模型：

# %%
N = 5 if QUICK else 20
small = ["--n_layers=2", "--emb_dim=64", "--context_length=64", "--batch_size=8", "--warmup_steps=5",
         f"--max_steps={2 * N}", "--eval_interval=1000", "--eval_batches=2", "--log_interval=1", "--sample_tokens=10",
         "--progress=false"]
relay, ref = WORK / "relay", WORK / "reference"
first = run_cli("gpt_numpy", "train", *small, f"--stop_at={N}", f"--out_dir={relay}")
print()
second = run_cli("gpt_torch", "train", *small, f"--out_dir={relay}")

# %% [markdown]
# torch 轨道读到检查点后提示：随机数状态来自另一个框架，无法沿用——这个模型没有 dropout，所以不影响结果。
# 接下来是一口气训完的参照：

# %%
reference = run_cli("gpt_numpy", "train", *small, f"--out_dir={ref}")


def train_losses(out_dir: Path) -> dict[int, float]:
    lines = (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["type"] == "train"}


a, b = train_losses(ref), train_losses(relay)
print(pad("步", 6) + pad("NumPy 一口气", 16) + pad("NumPy→torch 接力", 20) + "差")
for s in sorted({1, N // 2, N - 1, N, N + 1, N + 2, (3 * N) // 2, 2 * N}):
    mark = "  ← 从这里开始是 torch" if s == N + 1 else ""
    print(pad(s, 6) + pad(f"{a[s]:.6f}", 16) + pad(f"{b[s]:.6f}", 20) + f"{abs(a[s] - b[s]):.1e}{mark}")
diff = max(abs(a[s] - b[s]) for s in range(1, 2 * N + 1))
print(f"全部 {2 * N} 步的最大差 {diff:.1e}")

# %% [markdown]
# 前 N 步两边都是 NumPy 轨道，损失逐位相同；从第 N+1 步起接力的是 torch，差别只有 float32 舍入那么大。
# 这就是“在笔记本上开始，到 GPU 上接着训”的基础：检查点里没有任何框架专属的东西。
# 在 NumPy 轨道上中断再续，结果与一口气训完**逐位**相同——附录 D 会演示并解释为什么。

# %% [markdown]
# ## 5.8 加载 OpenAI 的 GPT-2 权重
#
# 从零训练一个像样的大模型要花很多算力；OpenAI 公开了 GPT-2 的权重，我们的模型结构与它一致，可以直接装进去。
# `download_gpt2("124M")`（原版 GPT-2 small：qkv 带偏置、输出层与词元嵌入共享，124,439,808 个参数）从 Hugging Face 下载 `config.json` 和 `model.safetensors`（约 500 MB，缓存在
# `LLMZH_CACHE`，缺省 `~/.cache/llm-zh`；国内可设置 `HF_ENDPOINT` 指向镜像），`load_hf_gpt2` 把它装进模型。
#
# 装载时要处理三件事（代码在 `llmcore/hf_gpt2.py`，两条轨道共用）：
#
# 1. **改名**：`wte` → `tok_emb`，`h.0.ln_1.weight` → `trf_blocks.0.norm1.scale`，……
# 2. **转置**：GPT-2 的线性层是 `Conv1D`，计算 `x @ W + b`，权重存成 (in, out)；我们的 `Linear` 与 torch 一样存 (out, in)。
# 3. **切开 qkv**：GPT-2 把 Q、K、V 三个投影拼成一个 `c_attn`，权重 (C, 3C)，要切成三个 (C, C)；而且它带偏置，
#    所以载入后的配置是 `qkv_bias=True`；输出层与词元嵌入共享 (`tie_weights=True`)。
#
# 下面的单元先尝试下载（下载过的直接从缓存取）。没有网络时就退而求其次：按 GPT-2 的布局（同样的键名、
# 同样的 (in, out) 存法）写一个很小的随机检查点，只为把装载的路径完整地走一遍。本页保存的输出来自一台不联网的电脑，
# 走的正是这条路，所以后面生成的是乱码。

# %%
from safetensors.numpy import save_file

from llmcore.datasets import DownloadError, NotCachedError
from gpt_numpy.pretrained import download_gpt2, load_hf_gpt2
from llmcore.tokenizers import get_gpt2_tokenizer
from gpt_torch.pretrained import load_hf_gpt2 as load_hf_gpt2_torch


def write_tiny_gpt2(path: Path, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_positions: int = 128) -> Path:
    """按 Hugging Face GPT-2 的布局写一个随机的小检查点（键名与 Conv1D 的 (in, out) 存法都与真的一样）。"""
    rng = np.random.default_rng(0)
    C = n_embd

    def r(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    st = {"wte.weight": r(50257, C), "wpe.weight": r(n_positions, C)}
    for i in range(n_layer):
        h = f"h.{i}."
        st.update({
            h + "ln_1.weight": 1 + r(C, std=0.1), h + "ln_1.bias": r(C),
            h + "attn.c_attn.weight": r(C, 3 * C), h + "attn.c_attn.bias": r(3 * C),
            h + "attn.c_proj.weight": r(C, C), h + "attn.c_proj.bias": r(C),
            h + "ln_2.weight": 1 + r(C, std=0.1), h + "ln_2.bias": r(C),
            h + "mlp.c_fc.weight": r(C, 4 * C), h + "mlp.c_fc.bias": r(4 * C),
            h + "mlp.c_proj.weight": r(4 * C, C), h + "mlp.c_proj.bias": r(C),
        })
    st.update({"ln_f.weight": 1 + r(C, std=0.1), "ln_f.bias": r(C)})
    path.mkdir(parents=True, exist_ok=True)
    save_file(st, str(path / "model.safetensors"))
    config = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": n_positions, "n_embd": C, "n_layer": n_layer,
              "n_head": n_head, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "resid_pdrop": 0.1}
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def reason(e: Exception) -> str:
    """下载失败的原因（第一句），家目录写成 ~。"""
    return str(e).split("；")[0].replace(str(Path.home()), "~")


try:
    gpt2_dir = download_gpt2("124M", timeout=15, quiet=True)  # quiet：不往 stderr 打印下载进度
    real_gpt2 = True
    print("已取得 GPT-2 124M 的权重：", sorted(p.name for p in gpt2_dir.iterdir()))
except (DownloadError, NotCachedError, OSError) as e:
    real_gpt2 = False
    print("没能下载 GPT-2 的权重：")
    print("   ", reason(e))
    print("改用一个按 GPT-2 布局写出的随机小检查点来演示装载过程；联网后重新运行本单元，就会装载真正的 GPT-2。")
    gpt2_dir = write_tiny_gpt2(WORK / "tiny-gpt2-layout")

# %%
from safetensors.numpy import load_file

hf = load_file(str(gpt2_dir / "model.safetensors"))
print("检查点里第 0 层的键（Hugging Face 的命名与形状）：")
for k, v in hf.items():
    if k.startswith(("h.0.", "transformer.h.0.")):
        print("   ", pad(k, 32), v.shape)

gpt2_np = load_hf_gpt2(gpt2_dir)
gpt2_torch = load_hf_gpt2_torch(gpt2_dir)
print("\n装进 gpt_numpy 之后：", gpt2_np.cfg)
for name, t in gpt2_np.state_dict().items():
    if name.startswith("trf_blocks.0.att."):
        print("   ", pad(name, 36), t.shape)

# %% [markdown]
# 怎么确认转置和切分都做对了？不经过我们的模型，直接在 Hugging Face 布局的数组上写一个 GPT-2 前向
# （`Conv1D` 就是 `x @ W + b`），与装载后的两条轨道比较 logits：

# %%
def gpt2_forward_hf(st: dict, ids: np.ndarray, n_head: int) -> np.ndarray:
    """直接用 HF 布局的数组算 GPT-2 的 logits (B, T, V)，float64。"""
    g = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in st.items()}

    def ln(x, w, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    Bn, Tn = ids.shape
    C = g["wte.weight"].shape[1]
    x = g["wte.weight"][ids] + g["wpe.weight"][:Tn]  # (B, T, C)
    mask = np.triu(np.ones((Tn, Tn), dtype=bool), 1)
    i = 0
    while f"h.{i}.ln_1.weight" in g:
        h = lambda n, i=i: g[f"h.{i}.{n}"]  # noqa: E731
        qkv = ln(x, h("ln_1.weight"), h("ln_1.bias")) @ h("attn.c_attn.weight") + h("attn.c_attn.bias")  # (B, T, 3C)
        q, k, v = (a.reshape(Bn, Tn, n_head, -1).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // n_head)  # (B, nh, T, T)
        att = np.where(mask, -np.inf, att)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(Bn, Tn, C)
        x = x + y @ h("attn.c_proj.weight") + h("attn.c_proj.bias")
        f = gelu(ln(x, h("ln_2.weight"), h("ln_2.bias")) @ h("mlp.c_fc.weight") + h("mlp.c_fc.bias"))
        x = x + f @ h("mlp.c_proj.weight") + h("mlp.c_proj.bias")
        i += 1
    return ln(x, g["ln_f.weight"], g["ln_f.bias"]) @ g["wte.weight"].T  # 输出层与 wte 共享


gpt2_tok = get_gpt2_tokenizer()
en_ids = np.array([gpt2_tok.encode("Every effort moves you")])
ref_logits = gpt2_forward_hf(hf, en_ids, gpt2_np.cfg.n_heads)
with tt.no_grad(), torch.no_grad():
    l_np = gpt2_np(en_ids).data
    l_torch = gpt2_torch(torch.from_numpy(en_ids)).numpy()
print(f"参照前向 vs gpt_numpy 的最大差 {np.abs(l_np - ref_logits).max():.1e}")
print(f"参照前向 vs gpt_torch 的最大差 {np.abs(l_torch - ref_logits).max():.1e}")

# %%
n_gen = 10 if QUICK else 25
out_np = generate(gpt2_np, en_ids, max_new_tokens=n_gen, temperature=0.0)
out_torch = generate_torch(gpt2_torch, torch.from_numpy(en_ids), max_new_tokens=n_gen, temperature=0.0)
print("两条轨道贪心生成的词元相同:", out_np[0].tolist() == out_torch[0].tolist())
print(repr(gpt2_tok.decode(out_np[0].tolist())))
if not real_gpt2:
    print("（随机的小检查点只能生成乱码——这里演示的是装载路径；真正的 GPT-2 会接着写出通顺的英文。）")

# %% [markdown]
# 有网络时，把第一格里的 `"124M"` 换成 `"355M"`、`"774M"`、`"1558M"` 就能装载更大的 GPT-2；
# `gpt_torch.pretrained.load_hf_gpt2(目录, device="cuda")` 可以直接放到 GPU 上。
# GPT-2 是在英文网页上训练的，它的 BPE 词表对中文很不友好（第 2 章：平均每个汉字两个多词元），
# 所以本书的中文模型都是从零训练的；第 6、7 章做微调时会再用到它。

# %% [markdown]
# ## 5.9 原书的实验：在 *The Verdict* 上训练 GPT-2 small
#
# 原书第 5 章用一篇两万字符的英文短篇小说 *The Verdict* 从零训练一个 GPT-2 small 结构的模型。
# 我们把它的全部设置做成了一个配方 (recipe)，`--recipe=book-verdict`：

# %%
notes = {
    "data": "the-verdict.txt（首次使用时下载并校验 sha256）",
    "tokenizer": "GPT-2 的 BPE 词表，V = 50257",
    "preset": "GPT-2 small 的结构：12 层、12 头、C = 768",
    "context_length": "上下文缩短为 256",
    "sampling": "滑动窗口、步长 = 256、每轮打乱（原书的 DataLoader）",
    "init": "PyTorch 各层的默认初始化（原书没有改初始化）",
    "batch_size": "每批 2 个窗口",
    "epochs": "10 轮",
    "lr": "AdamW，学习率 4e-4，不预热、不衰减",
    "weight_decay": "0.1，对全部参数（decay_all）",
    "beta2": "torch 的默认值 0.999",
    "grad_clip": "不裁剪",
    "eval_interval": "每 5 步在 5 个批次上评估",
    "seed": "123",
}
recipe = RECIPES["book-verdict"]
for k, note in notes.items():
    print(f"  {pad(k + '=' + str(recipe[k]), 26)} {note}")

# %% [markdown]
# 命令如下（两条轨道各跑一次，输出分别写到 `runs/book-verdict` 和 `runs/book-verdict-torch`）：
#
# ```bash
# python -m gpt_numpy train --recipe=book-verdict
# python -m gpt_torch train --recipe=book-verdict --out_dir=runs/book-verdict-torch
# ```
#
# 数据很小，能算出一共要训多少步；模型却不小：

# %%
from llmcore.datasets.remote import fetch
from llmcore.prepare import split_text
from llmcore.trainer import total_steps_for

book = TrainConfig(**{k: v for k, v in recipe.items() if k in TrainConfig.__dataclass_fields__})
book_cfg = GPTConfig.preset(recipe["preset"], context_length=recipe["context_length"])
print(f"模型：{book_cfg.n_layers} 层、C = {book_cfg.emb_dim}、V = {book_cfg.vocab_size}，dropout {book_cfg.drop_rate}，"
      f"参数 {book_cfg.num_parameters():,} 个（输出层不与词元嵌入共享）")
try:
    verdict = fetch("the-verdict.txt", quiet=True).read_text(encoding="utf-8")  # 首次使用时下载并校验
except (DownloadError, NotCachedError, OSError) as e:
    verdict = None
    print("取不到 the-verdict.txt：", reason(e))
    print("联网运行一次 python -m gpt_numpy train --recipe=book-verdict 后，文件会留在缓存里，本单元就能算出总步数。")
if verdict is not None:
    tr_text, va_text = split_text(verdict, book.val_fraction)
    tr_ids, va_ids = gpt2_tok.encode(tr_text), gpt2_tok.encode(va_text)
    sb = StepBatches(np.array(tr_ids), book.batch_size, recipe["context_length"], "epoch", book.seed)
    total = total_steps_for(book, sb, world_size=1)
    print(f"全文 {len(verdict):,} 个字符 → 训练 {len(tr_ids):,} 个词元、验证 {len(va_ids):,} 个词元")
    print(f"每轮 {len(sb.starts)} 个窗口 → {sb.batches_per_epoch} 个批次；{book.epochs} 轮共 {total} 步，"
          f"每步 {book.batch_size * recipe['context_length']} 个词元")

# %% [markdown]
# 步数不多，但每一步都要对一个一亿六千万参数的模型做前向、反向和 AdamW 更新，在 CPU 上一条轨道要跑上好一阵
# （实际用时见下面读出的记录）。所以本章不现场训练，而是读取完整运行后存进仓库的两份记录：
# `docs/results/book-verdict-numpy.jsonl` 和 `docs/results/book-verdict-torch.jsonl`，它们就是上面两条命令
# 各自输出目录里的 `metrics.jsonl`。对照的是原书给出的数字：开始时训练/验证损失约 9.82 / 9.92，
# 10 轮后约 0.57 / 6.37，验证损失最低约 6.1。
#
# 注意三处口径差别：
#
# - 原书的第一个点是在**第一次更新之后**评估的，而我们的训练器在第 0 步（更新之前）就评估一次，
#   那时损失应当约为 $\ln 50257 + 1/6 \approx 10.99$（5.1 节的公式）；我们的下一个评估点在第 5 步之后。
# - 原书的 x 轴是轮数，我们按“步数 ÷ 每轮步数”换算。
# - 这个模型有 dropout（0.1）。两条轨道的初始权重相同，但 dropout 的随机掩码来自各自框架的随机数，
#   所以两条曲线不会逐点重合，只应大致相同。

# %%
BOOK = {"start": (9.82, 9.92), "end": (0.57, 6.37), "val_min": 6.1}  # 原书给出的数字（训练, 验证）


def cell(ev: list[dict], i: int) -> str:
    """第 i 次评估的“训练 / 验证”损失。"""
    return f"{ev[i]['train_loss']:.2f} / {ev[i]['val_loss']:.2f}"


verdict_runs = {t: [r for r in load_run(f"book-verdict-{t}") if r["type"] == "eval"] for t in ("numpy", "torch")}
per_epoch = {t: ev[-1]["step"] / recipe["epochs"] for t, ev in verdict_runs.items()}  # 最后一次评估在最后一步
tracks = list(verdict_runs)
print(pad("训练 / 验证损失", 30) + "".join(pad(f"{t} 轨道", 26) for t in tracks) + "原书")
print(pad("开始（我们：第 0 步，更新前）", 30) + "".join(pad(cell(verdict_runs[t], 0), 26) for t in tracks)
      + f"{BOOK['start'][0]} / {BOOK['start'][1]}（第 1 次更新后）")
print(pad("下一个评估点", 30) + "".join(
    pad(cell(verdict_runs[t], 1) + f"（第 {verdict_runs[t][1]['step']} 步）", 26) for t in tracks))
print(pad("最后（10 轮）", 30) + "".join(pad(cell(verdict_runs[t], -1), 26) for t in tracks)
      + f"{BOOK['end'][0]} / {BOOK['end'][1]}")
row = ""
for t in tracks:
    vals = [r["val_loss"] for r in verdict_runs[t]]
    b = int(np.argmin(vals))
    row += pad(f"{vals[b]:.2f}（第 {verdict_runs[t][b]['step'] / per_epoch[t]:.1f} 轮）", 26)
print(pad("验证损失最低", 30) + row + f"约 {BOOK['val_min']}")
print(pad("用时", 30) + "".join(pad(f"{verdict_runs[t][-1]['time'] / 60:.1f} 分钟", 26) for t in tracks))
print()
for t, ev in verdict_runs.items():
    vals = np.array([r["val_loss"] for r in ev])
    b = int(np.argmin(vals))
    print(f"{t} 轨道：训练损失降了 {ev[0]['train_loss'] - ev[-1]['train_loss']:.2f}，验证损失降了 "
          f"{ev[0]['val_loss'] - ev[-1]['val_loss']:.2f}；最后 验证 − 训练 = {ev[-1]['val_loss'] - ev[-1]['train_loss']:.2f}；"
          f"验证损失在第 {ev[b]['step'] / per_epoch[t]:.1f} 轮最低，"
          + (f"之后回升了 {vals[-1] - vals[b]:.2f}" if b < len(vals) - 1 else "直到最后都没有回升"))
    print(f"    与原书相比，最后的训练损失差 {ev[-1]['train_loss'] - BOOK['end'][0]:+.2f}，"
          f"验证损失差 {ev[-1]['val_loss'] - BOOK['end'][1]:+.2f}")

# %%
fig, ax = plt.subplots(figsize=(8, 4))
colors = {"numpy": ("#08519c", "#e6550d"), "torch": ("#6baed6", "#fdae6b")}
for t, ev in verdict_runs.items():
    ep = [r["step"] / per_epoch[t] for r in ev]
    c_tr, c_va = colors[t]
    ax.plot(ep, [r["train_loss"] for r in ev], "-", color=c_tr, label=f"{t}：训练集")
    ax.plot(ep, [r["val_loss"] for r in ev], "-", color=c_va, label=f"{t}：验证集")
pe = next(iter(per_epoch.values()))
ax.plot([1 / pe, 10], [BOOK["start"][0], BOOK["end"][0]], "k^", ms=9, label="原书：训练集（开始 / 结束）")
ax.plot([1 / pe, 10], [BOOK["start"][1], BOOK["end"][1]], "rv", ms=9, label="原书：验证集（开始 / 结束）")
ax.axhline(BOOK["val_min"], color="red", ls=":", lw=1, label=f"原书：验证损失最低 ≈ {BOOK['val_min']}")
ax.set_xlabel("轮 (epoch)")
ax.set_ylabel("交叉熵损失")
ax.set_title(f"the-verdict.txt 上训练 GPT-2 small（上下文 {recipe['context_length']}）")
sec = ax.secondary_xaxis("top", functions=(lambda e: e * pe, lambda s: s / pe))
sec.set_xlabel("步数 (step)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# 原书的数字本身就说明了问题：训练损失从将近 10 一路降到 0.57，验证损失却停在 6 以上，最低点约 6.1，到最后反而回到 6.37。
# 一亿多个参数面对只有几千个词元的训练文本，模型完全可以把它背下来（过拟合 overfitting）：训练损失 0.57 意味着
# 训练集上正确词元的（几何平均）概率超过一半，换一段没见过的文字就不灵了。上面的表格和曲线显示我们的两条轨道是否重现了这个形状：看“验证 − 训练”的差有多大，
# 验证损失在第几轮见底、之后是否回升。
#
# 对付过拟合，办法不是训练更久，而是更多的数据（或者更小的模型、更强的正则化）。5.5 节正是反过来的情形：
# 小模型、一百多万字的语料，训练见到的词元量与语料相当，验证损失与训练损失一起下降。

# %% [markdown]
# ## 小结
#
# - 语言模型的损失是正确的下一个词元的负对数概率，对所有位置取平均（交叉熵）；困惑度是它的指数，
#   可以读作“相当于在多少个候选里均匀地猜”。
# - 随机初始化的模型输出接近均匀分布，损失约为 $\ln V$（更精确地，$\ln V + \sigma^2/2$）。这是检查训练代码的第一个路标。
# - 训练数据是错开一位的词元窗口；第 i 个批次只由 (种子, i) 决定，续训只需记住步数。
# - 训练的一步只有五件事：取批次、前向、交叉熵、反向、更新；训练循环再加上定期评估和生成样例。
#   两条轨道从同一份初始权重出发，损失曲线重合。
# - 正式的训练器在此之外加上学习率调度、梯度裁剪与累积、定期评估、记录与曲线、检查点与精确续训、NaN 检测。
# - 解码策略决定文字的样子：贪心容易重复，温度调节大胆程度，top-k / top-p 砍掉不靠谱的尾巴；
#   它们都只是在 logits 上做的几行 NumPy。同一个种子，两条轨道生成同一段文字。
# - 检查点（safetensors + JSON）与框架无关：NumPy 轨道训到一半，PyTorch 轨道可以接着训。
# - GPT-2 的权重要改名、转置（Conv1D 存 (in, out)）、切开 qkv 才能装进我们的模型。
# - 在很小的数据上训练大模型会严重过拟合（原书的实验）。
#
# ## 练习
#
# 答案在 `ch05_solutions.ipynb`，先自己动手再看。
#
# 1. **交叉熵的梯度。** 证明平均交叉熵对 logits 的梯度是 $(\mathrm{softmax}(z) - \mathrm{onehot}(y)) / N$，
#    再用本章的 `cross_entropy` 在 float64 的随机 logits 上让自动求导算一遍来验证。为什么每行梯度之和总是 0？
# 2. **换一种分词器，损失还能比吗？** 字符级模型的损失是“每个字”的，GPT-2 BPE 模型的损失是“每个词元”的。
#    在验证集的一段文字上数一数两种分词各有多少个词元，把一元模型（5.2 节）的每词元损失换算成每个汉字的损失再比较。
# 3. **温度的两个极限。** 取 5.6 节的一组 logits，画出熵随温度 τ 的变化（τ 从 0.05 到 20）。
#    τ 很小和很大时，分布各自趋向什么？用 `sample_next` 在 τ = 0.01 时抽 1000 次验证你的回答。
# 4. **top-p 留下几个？** 给定一个分布，top-p 留下恰好 k 个词元的 p 在什么区间？写出用前 k-1 个和前 k 个概率之和表示的答案，
#    用本章的 `top_p_filter` 在区间两端验证。
# 5. **存成 float16。** 把一个模型（比如 5.4 节训练出的）的参数转成 float16 存进 safetensors，文件变成多大？读回（转回 float32）后，
#    logits 和验证损失变了多少？
