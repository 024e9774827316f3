# %% [markdown]
# # 第 3 章 注意力机制：让每个词元看见上下文
#
# 上一章我们把文本切成了词元 (token)，又把每个词元变成了一个嵌入 (embedding) 向量。
# 可这些向量彼此孤立：“苹果”在“吃苹果”和“苹果手机”里拿到的是同一个向量。
# 语言模型真正需要的，是**结合上下文之后**的表示。注意力 (attention) 就是做这件事的机制：
# 对序列中的每一个位置，它从所有（允许看到的）位置收集信息，按“相关程度”加权求和，
# 得到一个新的向量，我们叫它**上下文向量** (context vector)。
#
# 本章从最朴素的写法出发，一步一步走到 GPT 里真正使用的多头因果注意力：
#
# 1. 不带可训练权重的自注意力：先用循环一个一个算，再写成矩阵运算；
# 2. 可训练的查询 (query)、键 (key)、值 (value) 投影：`SelfAttentionV1`（`nn.Parameter`）→ `SelfAttentionV2`（`nn.Linear`），
#    以及为什么要除以 √hs；
# 3. 因果掩码 (causal mask) 和注意力权重上的 dropout：`CausalAttention`；
# 4. 多头注意力：先写成“若干个单头并排”的 `MultiHeadAttentionWrapper`，再改写成“一次投影、拆成多头”的
#    `MultiHeadAttention`，并证明两者相等。
#
# 每个类都在页面上亲手写出来，用的是我们自己的自动求导引擎 `tinytensor`（记作 `tt`，纯 NumPy）；
# 两条轨道有值得一看的差别时，旁边再放一份 PyTorch 写法。写好之后，把同一份权重装进库里的版本——
# `gpt_numpy/attention_steps.py`、`gpt_numpy/attention.py` 和 `gpt_torch` 里的同名类——
# 在 float64 下比较输出、输入的梯度和每个参数的梯度。页面上的代码与库只要有一处不同，核对就会报错，
# 这个 notebook 也就跑不通。标着 `# 章内实现` 的单元还会被测试 `tests/test_chapter_ch02_ch03.py` 单独取出来再核对一遍。
#
# 代码注释中的形状字母与 README 一致：`B` 批大小，`T` 词元数，`C` 嵌入维度，`nh` 头数，`hs` 每个头的维度。

# %% [markdown]
# ## 3.0 准备
#
# 除了导入，这里先写好两个核对用的小工具：`assert_same` 比较两个数组；`check_same` 把我们写的模块的权重
# 按参数名复制给库里的同名模块，对同一个输入做前向，再用同一个随机的上游梯度做反向，
# 比较输出、输入的梯度和每个参数的梯度。两条轨道的 `state_dict` 键完全一样，所以权重可以直接按名字复制。

# %%
import copy
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import tinytensor as tt
from gpt_numpy import attention_steps as NA  # 库：NumPy 轨道（tinytensor）
from gpt_torch import attention_steps as TA  # 库：PyTorch 轨道
from llmcore.plotting import use_cjk_font

use_cjk_font()  # 图里的中文：字体来自 pip 包 noto-cjk-sans-otc，全项目在 llmcore/plotting.py 一处注册
QUICK = os.environ.get("LLMZH_QUICK") == "1"  # 测试时为快速模式
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


def numpy_of(t) -> np.ndarray:
    """tinytensor 或 torch 张量 → NumPy 数组。"""
    return t.detach().numpy()


def forward_backward(module, xb: np.ndarray, upstream: np.ndarray):
    """float64 前向 + 以 upstream 为上游梯度反向；返回 (输出, 输入梯度, {参数名: 梯度})。"""
    lib = torch if isinstance(module, torch.nn.Module) else tt
    module.zero_grad()
    x_in = lib.tensor(xb, requires_grad=True)
    y = module(x_in)
    (y * lib.tensor(upstream)).sum().backward()
    grads = {n: numpy_of(p.grad) for n, p in module.named_parameters()}
    return numpy_of(y), numpy_of(x_in.grad), grads


def check_same(name: str, ours, lib, xb: np.ndarray, atol: float = 1e-12, verbose: bool = True) -> tuple[float, float, float]:
    """把 ours 的权重复制给 lib（两者都转成 float64、eval 模式），比较输出、输入梯度和全部参数梯度。"""
    ours = copy.deepcopy(ours).double().eval()  # 复制一份，不改动调用者手里的模块
    lib = lib.double().eval()
    state = {k: np.array(numpy_of(v), dtype=np.float64) for k, v in ours.state_dict().items()}
    if isinstance(lib, torch.nn.Module):
        lib.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    else:
        lib.load_state_dict(state)
    as_tensor = torch.tensor if isinstance(ours, torch.nn.Module) else tt.tensor
    upstream = np.random.default_rng(1).standard_normal(tuple(ours(as_tensor(xb)).shape))  # 同一个上游梯度
    y1, gx1, gp1 = forward_backward(ours, xb, upstream)
    y2, gx2, gp2 = forward_backward(lib, xb, upstream)
    if sorted(gp1) != sorted(gp2):
        raise AssertionError(f"{name}：参数名不同 {sorted(gp1)} vs {sorted(gp2)}")
    d_y = assert_same(f"{name} 输出", y1, y2, atol)
    d_x = assert_same(f"{name} 输入梯度", gx1, gx2, atol)
    d_p = max(assert_same(f"{name} 参数 {n} 的梯度", gp1[n], gp2[n], atol) for n in gp1)
    if verbose:
        print(f"✓ {pad(name, 52)} 输出差 {d_y:.1e}，输入梯度差 {d_x:.1e}，参数梯度差 {d_p:.1e}")
    return d_y, d_x, d_p


print("tinytensor", tt.__version__, "| torch", torch.__version__, "| 快速模式" if QUICK else "| 完整模式")

# %% [markdown]
# ## 3.1 输入：一句中文的嵌入
#
# 为了让每一个数字都能看清，我们用一句很短的话，用第 2 章的 `CharTokenizer` 按字切分（每个汉字就是一个词元），
# 嵌入维度只取 `C = 4`。真实的 GPT-2 用的是 BPE 词元和 `C = 768`，但计算过程一模一样。
#
# 注意这句话里“天”出现了两次：同一个词元 id，查到的是同一行嵌入。这一点后面还会用到。

# %%
from llmcore.tokenizers import CharTokenizer  # 第 2 章的字符级分词器

text = "今天天气真好"
char_tok = CharTokenizer.train(text)  # 词表：两个特殊词元 + 这句话里的 5 个字
ids = char_tok.encode(text)
print("词表:", char_tok.vocab)
print("词元 id:", ids)

tt.manual_seed(123)
embedding = tt.nn.Embedding(char_tok.vocab_size, 4)  # 随机初始化的嵌入表，形状 (词表大小, C)
x = embedding(ids).detach()  # (T, C) = (6, 4)
print("x 的形状 (T, C):", x.shape)
print(x)

# %% [markdown]
# ## 3.2 不带可训练权重的自注意力
#
# 先别管任何参数。想让第 `i` 个词元“看看”别的词元，最直接的办法是：
#
# 1. **打分**：用点积衡量它和每个词元的相似程度，`ω_ij = x_i · x_j`；
# 2. **归一化**：对这一行分数做 softmax，得到注意力权重 `α_ij`，它们非负、和为 1；
# 3. **加权求和**：上下文向量 `z_i = Σ_j α_ij x_j`。
#
# 照着定义，用两层循环一个一个地算：

# %%
# 章内实现
import tinytensor as tt


def simple_self_attention_loops(x: tt.Tensor) -> tt.Tensor:
    """x：(T, C)。逐个位置、逐个点积地计算上下文向量。"""
    n = x.shape[0]
    contexts = []
    for i in range(n):
        scores_i = tt.stack([(x[i] * x[j]).sum() for j in range(n)])  # (T,)：ω_ij = x_i · x_j
        weights_i = scores_i.softmax(dim=0)  # (T,)：α_ij，和为 1
        contexts.append(sum(weights_i[j] * x[j] for j in range(n)))  # (C,)：z_i = Σ_j α_ij x_j
    return tt.stack(contexts)  # (T, C)


# %% [markdown]
# 以第 2 个字“天”（下标 1）为例，看看三步各得到什么：

# %%
query = x[1]  # (C,)：第 2 个词元的嵌入当作“查询”
scores_1 = tt.stack([(query * x[j]).sum() for j in range(x.shape[0])])  # (T,)
weights_1 = scores_1.softmax(dim=0)  # (T,)：和为 1
context_1 = simple_self_attention_loops(x)[1]  # (C,)
print("分数  ω:", scores_1.data)
print("权重  α:", weights_1.data, " 和 =", round(weights_1.sum().item(), 6))
print("上下文 z:", context_1.data)

# %% [markdown]
# 点积越大，说明两个向量方向越接近，softmax 之后分到的权重也越大。
# softmax 用指数把分数变成正数再归一化；实现时会先减去这一行的最大值，结果不变（分子分母同乘一个常数），
# 却能避免 `exp` 溢出——`tinytensor/ops/softmax.py` 就是这样写的。
#
# 循环写法一目了然，但慢。对所有位置同时做，就是三次矩阵运算。形状的变化是
# `(T, C) @ (C, T) → (T, T)`，softmax 不改形状，`(T, T) @ (T, C) → (T, C)`。写成 `transpose(-2, -1)`，
# 同一个函数也能处理带批维度的 `(B, T, C)`：

# %%
# 章内实现
def simple_self_attention(x: tt.Tensor) -> tt.Tensor:
    """x：(T, C) 或 (B, T, C)。"""
    scores = x @ x.transpose(-2, -1)  # (B, T, T)：第 i 行是词元 i 对所有词元的分数
    weights = scores.softmax(dim=-1)  # (B, T, T)：每一行和为 1
    return weights @ x  # (B, T, C)


# %%
weights = (x @ x.T).softmax(dim=-1)
print("注意力权重 (T, T):\n", weights.data)
print("每行之和:", weights.sum(dim=-1).data)
contexts = simple_self_attention(x)
print("矩阵写法与循环写法的最大差:", assert_same("循环 vs 矩阵", contexts.data, simple_self_attention_loops(x).data, atol=1e-6))

# %% [markdown]
# 对角线上的权重往往最大：一个向量和自己的点积就是它长度的平方，通常比和别人的点积都大。
# 只靠原始嵌入做点积，“相关”几乎等于“相同”——下一节的可训练投影就是来打破这一点的。
#
# 第 2、3 两行（两个“天”）一模一样：它们的嵌入相同，看到的又是同一句话，自然得到同一个上下文向量。
# 注意力本身不知道词元的先后顺序——所以第 2 章（2.11 节）在词元嵌入上加了**位置嵌入**；
# 本章为了把注意力本身看清楚，只用词元嵌入。
#
# 库里两条轨道各有一份 `simple_self_attention`。同样的输入，三者的输出和对输入的梯度都应相同：

# %%
g = np.random.default_rng(0).standard_normal(x.shape)  # 随便一个上游梯度
results = {}
for name, fn in [("循环写法", simple_self_attention_loops), ("矩阵写法", simple_self_attention), ("库 NA", NA.simple_self_attention)]:
    xi = tt.tensor(x.data.astype(np.float64), requires_grad=True)
    y = fn(xi)
    (y * tt.tensor(g)).sum().backward()
    results[name] = (y.data, xi.grad.data)
xi = torch.tensor(x.data.astype(np.float64), requires_grad=True)
y = TA.simple_self_attention(xi)
(y * torch.from_numpy(g)).sum().backward()
results["库 TA"] = (y.detach().numpy(), xi.grad.numpy())
for name in ["循环写法", "矩阵写法", "库 TA"]:
    d_y = assert_same(f"{name} 输出", results[name][0], results["库 NA"][0])
    d_g = assert_same(f"{name} 梯度", results[name][1], results["库 NA"][1])
    print(f"✓ {pad(name, 10)} 与 gpt_numpy 的输出差 {d_y:.1e}，输入梯度差 {d_g:.1e}")

# %% [markdown]
# ## 3.3 可训练的查询、键、值
#
# 上面的做法有个根本问题：它没有任何可以学习的东西，“相关程度”完全由嵌入本身决定。
# 真实的注意力给每个词元准备三个不同的“角色”，分别由三个可训练矩阵投影出来：
#
# - **查询** `q = x W_q`：我在找什么；
# - **键** `k = x W_k`：我能被怎样找到；
# - **值** `v = x W_v`：被选中之后，我贡献什么内容。
#
# 分数变成 `q_i · k_j`，加权求和的对象变成 `v_j`。投影后的维度 `d_out` 不必等于输入维度 `d_in`；
# 单头注意力里，`d_out` 就是头的维度 `hs`。下面取 `d_in = 4`，`d_out = 2`，先手工算一遍：

# %%
d_in, d_out = 4, 2
tt.manual_seed(7)
W_query = tt.nn.Parameter(tt.rand(d_in, d_out))  # (C, hs)
W_key = tt.nn.Parameter(tt.rand(d_in, d_out))  # (C, hs)
W_value = tt.nn.Parameter(tt.rand(d_in, d_out))  # (C, hs)

queries = x @ W_query  # (T, hs)
keys = x @ W_key  # (T, hs)
values = x @ W_value  # (T, hs)
print("q, k, v 的形状:", queries.shape, keys.shape, values.shape)

attn_scores = queries @ keys.T  # (T, T)
attn_weights = (attn_scores / math.sqrt(keys.shape[-1])).softmax(dim=-1)  # (T, T)
context = attn_weights @ values  # (T, hs)
print("注意力权重:\n", attn_weights.data)
print("上下文向量 (T, hs):\n", context.data)

# %% [markdown]
# 这里多了一个 `/ √hs`，3.4 节专门解释。把这几行包进一个模块，就是 `SelfAttentionV1`：
# 三个 `nn.Parameter`，形状 `(d_in, d_out)`，用 `x @ W` 做投影。

# %%
# 章内实现
import math

from tinytensor import nn


class SelfAttentionV1(nn.Module):
    """可训练的自注意力：三个 (d_in, d_out) 的参数矩阵，按 x @ W 投影。"""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.W_query = nn.Parameter(tt.rand(d_in, d_out))
        self.W_key = nn.Parameter(tt.rand(d_in, d_out))
        self.W_value = nn.Parameter(tt.rand(d_in, d_out))

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        q = x @ self.W_query  # (B, T, hs)
        k = x @ self.W_key  # (B, T, hs)
        v = x @ self.W_value  # (B, T, hs)
        scores = q @ k.transpose(-2, -1)  # (B, T, T)
        weights = (scores / math.sqrt(k.shape[-1])).softmax(dim=-1)  # (B, T, T)
        return weights @ v  # (B, T, hs)


# %% [markdown]
# 把刚才的矩阵原样放进去，结果与手算相同；再把同一份权重交给库里两条轨道的 `SelfAttentionV1` 核对
# （输入取一个随机的批 `(B, T, C) = (2, 5, 4)`）：

# %%
sa_v1 = SelfAttentionV1(d_in, d_out)
sa_v1.load_state_dict({"W_query": W_query, "W_key": W_key, "W_value": W_value})
print(sa_v1(x).data)
print("与手算的差:", assert_same("V1 vs 手算", sa_v1(x).data, context.data, atol=1e-6))

xb = np.random.default_rng(0).standard_normal((2, 5, 4))  # (B, T, C)，float64
check_same("SelfAttentionV1 vs gpt_numpy", sa_v1, NA.SelfAttentionV1(d_in, d_out), xb)
check_same("SelfAttentionV1 vs gpt_torch", sa_v1, TA.SelfAttentionV1(d_in, d_out), xb);

# %% [markdown]
# 实践中更常用 `nn.Linear` 做投影，这就是 `SelfAttentionV2`。只有投影那三行变了：
#
# - `Linear` 的权重形状是 `(out, in)`，计算的是 `x Wᵀ (+ b)`。所以 V1 的矩阵就是 V2 权重的**转置**；
# - `Linear` 的初始化是 `U(-1/√in, 1/√in)`，比 V1 的 `U(0, 1)` 更利于训练，还可以选择带偏置 (`qkv_bias`)。

# %%
# 章内实现
class SelfAttentionV2(nn.Module):
    """与 V1 相同的计算，投影改用 nn.Linear（weight 形状 (d_out, d_in)，可选偏置）。"""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        q = self.W_query(x)  # (B, T, hs)
        k = self.W_key(x)  # (B, T, hs)
        v = self.W_value(x)  # (B, T, hs)
        scores = q @ k.transpose(-2, -1)  # (B, T, T)
        weights = (scores / math.sqrt(k.shape[-1])).softmax(dim=-1)  # (B, T, T)
        return weights @ v  # (B, T, hs)


# %% [markdown]
# 把 V2 的权重转置后装进 V1，两者的输出逐位相同；再和库核对（带偏置的版本也核对一次）：

# %%
sa_v2 = SelfAttentionV2(d_in, d_out)
for name in ["W_query", "W_key", "W_value"]:
    print(f"{name}.weight 形状 (d_out, d_in) = {getattr(sa_v2, name).weight.shape}")
sa_v1.load_state_dict({n: getattr(sa_v2, n).weight.T for n in ["W_query", "W_key", "W_value"]})
print("V1（装入转置权重）与 V2 的最大差:", assert_same("V1 vs V2", sa_v1(x).data, sa_v2(x).data, atol=1e-6))

check_same("SelfAttentionV2 vs gpt_numpy", sa_v2, NA.SelfAttentionV2(d_in, d_out), xb)
check_same("SelfAttentionV2 vs gpt_torch", sa_v2, TA.SelfAttentionV2(d_in, d_out), xb)
sa_v2b = SelfAttentionV2(d_in, d_out, qkv_bias=True)
check_same("SelfAttentionV2(qkv_bias) vs gpt_torch", sa_v2b, TA.SelfAttentionV2(d_in, d_out, qkv_bias=True), xb);

# %% [markdown]
# ## 3.4 为什么要除以 √hs
#
# 设 `q` 和 `k` 的每个分量独立、均值 0、方差 1，那么点积 `q·k = Σ q_m k_m` 是 `hs` 项之和，
# **方差就是 `hs`**，标准差是 `√hs`。头的维度越大，分数的数值范围越宽。
# 用随机数验证一下：

# %%
rng = np.random.default_rng(0)
n_pairs = 2000 if QUICK else 20000
print(pad("hs", 8) + pad("q·k 的标准差", 16) + pad("√hs", 10) + "q·k/√hs 的标准差")
for hs in [4, 16, 64, 256, 1024]:
    q = rng.standard_normal((n_pairs, hs))
    k = rng.standard_normal((n_pairs, hs))
    dots = (q * k).sum(-1)
    print(pad(hs, 8) + pad(f"{dots.std():.2f}", 16) + pad(f"{math.sqrt(hs):.2f}", 10) + f"{(dots / math.sqrt(hs)).std():.3f}")

# %% [markdown]
# 分数范围变宽有什么坏处？softmax 对大的输入非常“尖”：分数差几十，指数差就是天文数字，
# 权重几乎全部压到最大的那一项上，变成近似 one-hot。这时 softmax 的梯度趋近于 0，
# 注意力学不动。下面对同一组随机 `q, k`，比较不缩放和缩放后的最大权重，以及反向传播回分数的梯度大小
# （用 tinytensor 的自动求导来算）：

# %%
def softmax_stats(hs: int, scale: bool, n_keys: int = 8, seed: int = 0) -> tuple[float, float]:
    """返回 (一行权重中的最大值, 分数梯度的 L2 范数)。"""
    r = np.random.default_rng(seed)
    q = r.standard_normal(hs)
    k = r.standard_normal((n_keys, hs))
    s = tt.tensor(k @ q / (math.sqrt(hs) if scale else 1.0), dtype=tt.float64, requires_grad=True)
    w = s.softmax(dim=-1)
    (w * tt.tensor(r.standard_normal(n_keys))).sum().backward()  # 随便一个下游损失
    return w.max().item(), float(np.linalg.norm(s.grad.data))


print(pad("", 8) + pad("不缩放", 24) + "除以 √hs")
print(pad("hs", 8) + (pad("最大权重", 12) + pad("梯度范数", 12)) * 2)
for hs in [4, 64, 512]:
    w0, g0 = softmax_stats(hs, scale=False)
    w1, g1 = softmax_stats(hs, scale=True)
    print(pad(hs, 8) + pad(f"{w0:.4f}", 12) + pad(f"{g0:.2e}", 12) + pad(f"{w1:.4f}", 12) + f"{g1:.2e}")

# %% [markdown]
# `hs` 越大，不缩放时的最大权重越接近 1、梯度越接近 0；除以 `√hs` 之后，分数的尺度不再随 `hs` 变化，
# 权重分布和梯度都保持在正常范围。这就是“缩放点积注意力” (scaled dot-product attention) 名字里“缩放”的由来。

# %% [markdown]
# ## 3.5 因果掩码：不许偷看后面
#
# GPT 的任务是根据前文预测下一个词元。训练时整句话一次性送进模型，如果位置 `i` 能看到位置 `i+1`，
# 它就能直接“抄答案”。所以位置 `i` 只允许看位置 `0..i`——注意力权重矩阵的**对角线以上必须全是 0**。
# 这就是因果掩码 (causal mask)。
#
# 有两种写法。**写法一**：照常 softmax，再用下三角矩阵把未来位置乘成 0，最后每行重新归一化：

# %%
T = x.shape[0]
scores = queries @ keys.T  # (T, T)，沿用 3.3 节的 q、k
weights = (scores / math.sqrt(d_out)).softmax(dim=-1)

lower = tt.tril(tt.ones(T, T))  # (T, T)：对角线及以下为 1
masked = weights * lower  # 未来位置变成 0，但每行之和不再是 1
weights_a = masked / masked.sum(dim=-1, keepdim=True)  # 重新归一化
print("写法一（tril 后重新归一化）:\n", weights_a.data)

# %% [markdown]
# **写法二**：在 softmax **之前**，把未来位置的分数填成 `-inf`。`exp(-inf) = 0`，
# softmax 自然只在允许的位置上归一化：

# %%
future = tt.triu(tt.ones(T, T), diagonal=1).bool()  # (T, T)：对角线以上为 True
print("要遮住的位置:\n", future.data.astype(int))
scores_b = scores.masked_fill(future, float("-inf"))
weights_b = (scores_b / math.sqrt(d_out)).softmax(dim=-1)
print("写法二（softmax 前填 -inf）:\n", weights_b.data)
print("两种写法的最大差:", np.abs(weights_a.data - weights_b.data).max())

# %% [markdown]
# 为什么相等？记 `e_j = exp(s_j)`。写法一第 `i` 行先得到 `e_j / Σ_全部 e`，乘掩码后只留下 `j ≤ i`，
# 再除以这些留下项之和 `Σ_{j≤i} e / Σ_全部 e`——分母里的 `Σ_全部 e` 正好约掉，剩下 `e_j / Σ_{j≤i} e`，
# 这恰好是写法二的结果。两者数学上相同，写法二少做一次归一化，也不需要先算出未来位置的权重，
# 所以实际代码都用它。
#
# 顺带看一眼：因果掩码之后，两个“天”（第 2、3 行）终于不同了——它们能看到的前文不一样长。
# 但这只是掩码带来的副作用，词序信息仍要靠位置嵌入来提供。
#
# 数字矩阵不如画成热力图 (heatmap) 直观。把掩码前后的两个 `(T, T)` 权重矩阵并排画出来，
# 行是查询（正在计算上下文向量的字），列是键（被看的字），格子越深，权重越大：

# %%
def plot_attention(ax, w: np.ndarray, labels: list[str], title: str):
    """在 ax 上画 (T, T) 注意力权重的热力图：行、列标上词元，格子里写出权重；返回图像对象（给颜色条用）。"""
    im = ax.imshow(w, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("键：被看的词元 (key)")
    ax.set_ylabel("查询：正在看的词元 (query)")
    ax.set_title(title)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if w[i, j] > 0.6 else "black")
    return im


chars = [char_tok.decode([i]) for i in ids]  # 每个词元对应的字
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
plot_attention(axes[0], weights.data, chars, "不加掩码：每个字看整句话")
im = plot_attention(axes[1], weights_b.data, chars, "因果掩码：只看自己和前文")
fig.colorbar(im, ax=axes, shrink=0.8, label="注意力权重")
plt.show()

# %% [markdown]
# 左图里，第一个字“今”的权重大多落在它后面的字上——它在“偷看”还没出现的内容，这正是训练时要禁止的。
# 右图对角线以上整片留白：第一行只能把全部权重给自己，每一行都只在前文里重新分配，和仍然是 1；
# 最后一行能看到整句话，所以两张图的最后一行完全一样。左图中两个“天”的两行一模一样，右图里就不同了。
# 这里的投影矩阵是随机的，谁看谁多少并没有语言上的含义；第 5 章会画出训练好的模型里每个头的热力图，
# 那时才能看到有意义的模式。

# %% [markdown]
# ## 3.6 注意力权重上的 dropout
#
# dropout 是一种正则化：训练时随机把一部分数置 0，剩下的乘以 `1/(1-p)`，使期望保持不变；
# 推理 (`eval()`) 时什么都不做。GPT 把它用在注意力权重上——相当于每次训练随机切断一些“谁看谁”的连线。
# 先在全 1 矩阵上看清它的效果（`p = 0.5`，留下的数变成 2）：

# %%
tt.manual_seed(123)
dropout = tt.nn.Dropout(0.5)
print(dropout(tt.ones(T, T)).data)

# %% [markdown]
# 作用在因果注意力权重上：被留下的权重翻倍，其余为 0；未来位置本来就是 0，仍然是 0。
# 有时一整行都会被丢光——这个位置在这一步什么都没看到。听起来粗暴，但它只发生在训练时，
# 而且第 4 章的残差连接会把原来的信息保留下来。切换到 `eval()` 后，dropout 原样返回输入：

# %%
tt.manual_seed(123)
print("训练模式:\n", dropout(weights_b).data)
dropout.eval()
print("eval 模式与原权重的差:", np.abs(dropout(weights_b).data - weights_b.data).max())

# %% [markdown]
# 两条轨道的随机数发生器不同，同一个种子得到的 dropout 掩码并不相同。所以后面做两条轨道的数值对照时，
# 都在 `eval()` 模式或 `dropout=0` 下进行。

# %% [markdown]
# ## 3.7 CausalAttention：一次处理一批
#
# 把投影、掩码、缩放、softmax、dropout 收进一个模块，就是 `CausalAttention`。相比前面，
# 它多了一个批维度：输入 `(B, T, C)`，输出 `(B, T, hs)`。掩码用 `register_buffer` 存成一个
# `(context_length, context_length)` 的布尔矩阵——它不是参数，不参与训练，也不进 `state_dict`
# （`persistent=False`），前向时只取左上角 `T × T` 的一块。

# %%
# 章内实现
def causal_mask(context_length: int) -> tt.Tensor:
    """(T_max, T_max) 的布尔矩阵：对角线以上为 True，表示“未来”，要遮住。"""
    return tt.triu(tt.ones(context_length, context_length), diagonal=1).bool()


class CausalAttention(nn.Module):
    """单头因果自注意力：位置 i 只看位置 ≤ i；dropout 作用在注意力权重上。"""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        b, t, _ = x.shape
        q = self.W_query(x)  # (B, T, hs)
        k = self.W_key(x)  # (B, T, hs)
        v = self.W_value(x)  # (B, T, hs)
        scores = q @ k.transpose(1, 2)  # (B, T, T)
        scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))  # 未来位置 → -inf
        weights = (scores / math.sqrt(k.shape[-1])).softmax(dim=-1)  # (B, T, T)，未来位置权重为 0
        weights = self.dropout(weights)  # 训练时随机丢掉一些权重，其余放大 1/(1-p)
        return weights @ v  # (B, T, hs)


# %% [markdown]
# PyTorch 写法几乎逐行相同。差别只在几处 API：softmax 是函数 `torch.softmax(…)` 而不是张量方法，
# 掩码用 `torch.triu(…, diagonal=1)` 直接生成布尔矩阵。

# %%
# 章内实现
import torch


class CausalAttentionTorch(torch.nn.Module):
    """CausalAttention 的 PyTorch 写法，参数名相同，权重可以按名字互相复制。"""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False) -> None:
        super().__init__()
        self.W_query = torch.nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = torch.nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = torch.nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = torch.nn.Dropout(dropout)
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # 各 (B, T, hs)
        scores = q @ k.transpose(1, 2)  # (B, T, T)
        scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))
        weights = torch.softmax(scores / math.sqrt(k.shape[-1]), dim=-1)  # (B, T, T)
        weights = self.dropout(weights)
        return weights @ v  # (B, T, hs)


# %% [markdown]
# 库里两条轨道的 `CausalAttention` 也是这样一对。把两份源码逐行 diff：真正不同的只有类型标注和 softmax 那一行，
# 其余几行只是注释不同（库的掩码由类外的小函数 `_causal_mask` 生成，所以不在 diff 里）。
# 库的版本比我们多一个长度检查：输入超过 `context_length` 时给出清楚的报错。

# %%
import difflib
import inspect

diff = difflib.unified_diff(
    inspect.getsource(NA.CausalAttention).splitlines(),
    inspect.getsource(TA.CausalAttention).splitlines(),
    "gpt_numpy/attention_steps.py",
    "gpt_torch/attention_steps.py",
    n=0,
    lineterm="",
)
print("\n".join(line for line in diff if not line.startswith("@@")))

# %% [markdown]
# 我们把同一句话复制两份组成一个批，跑一遍我们写的 `CausalAttention`，再在随机的批上与库核对——
# 我们的 tinytensor 版对 `gpt_numpy`，我们的 PyTorch 版对 `gpt_torch`，再交叉对一次：

# %%
batch = tt.stack([x, x])  # (B, T, C) = (2, 6, 4)
T = x.shape[0]
tt.manual_seed(123)
ca = CausalAttention(d_in, d_out, context_length=T, dropout=0.0)
ctx_vecs = ca(batch)
print("输入", batch.shape, "→ 输出", ctx_vecs.shape)
print(ctx_vecs.data[0])

ca_torch = CausalAttentionTorch(d_in, d_out, context_length=8, dropout=0.1)
check_same("CausalAttention vs gpt_numpy", CausalAttention(d_in, d_out, 8, dropout=0.1), NA.CausalAttention(d_in, d_out, 8, dropout=0.1), xb)
check_same("CausalAttentionTorch vs gpt_torch", ca_torch, TA.CausalAttention(d_in, d_out, 8, dropout=0.1), xb)
check_same("CausalAttentionTorch vs 我们的 tinytensor 版", ca_torch, CausalAttention(d_in, d_out, 8, dropout=0.1), xb);

# %% [markdown]
# “因果”可以直接验证：把最后一个字换成别的向量，前 5 个位置的输出应该一点都不变，只有最后一个位置改变：

# %%
changed = batch.data.copy()
changed[:, -1] = np.random.default_rng(1).standard_normal(4)
diff = np.abs(ca(tt.tensor(changed)).data - ctx_vecs.data).max(axis=(0, 2))  # 每个位置的最大变化
print("各位置输出的最大变化:", diff)

# %% [markdown]
# ## 3.8 多头注意力
#
# 一个头只能学到一种“看”的方式。多头注意力让 `nh` 个头各自投影、各自计算注意力，再把结果拼起来——
# 有的头也许关注相邻的字，有的头关注更远的搭配。
#
# ### 写法一：把单头堆起来
#
# `MultiHeadAttentionWrapper` 就是字面意思：`ModuleList` 里放 `nh` 个 `CausalAttention`，
# 每个头输出 `(B, T, hs)`，沿最后一维拼接成 `(B, T, nh·hs)`。（我们让 `d_out` 表示拼接后的总维度，
# 每个头 `hs = d_out // nh`，与高效版的参数含义一致。）

# %%
# 章内实现
class MultiHeadAttentionWrapper(nn.Module):
    """nh 个独立的 CausalAttention 头，输出沿最后一维拼接；d_out 是总维度，每头 hs = d_out // nh。"""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} 必须能被 num_heads={num_heads} 整除")
        hs = d_out // num_heads
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, hs, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        return tt.cat([head(x) for head in self.heads], dim=-1)  # nh 个 (B, T, hs) → (B, T, nh·hs)


# %%
d_out, num_heads = 4, 2
tt.manual_seed(123)
mha_wrapper = MultiHeadAttentionWrapper(d_in, d_out, context_length=T, dropout=0.0, num_heads=num_heads)
out_wrapper = mha_wrapper(batch)
print("头的个数:", len(mha_wrapper.heads), "| 每个头的输出:", mha_wrapper.heads[0](batch).shape)
print("拼接后:", out_wrapper.shape)
print([name for name, _ in mha_wrapper.named_parameters()])
check_same("MultiHeadAttentionWrapper vs gpt_numpy", MultiHeadAttentionWrapper(4, 4, 8, 0.1, num_heads=2), NA.MultiHeadAttentionWrapper(4, 4, 8, 0.1, num_heads=2), xb)
check_same("MultiHeadAttentionWrapper vs gpt_torch", MultiHeadAttentionWrapper(4, 4, 8, 0.1, num_heads=2), TA.MultiHeadAttentionWrapper(4, 4, 8, 0.1, num_heads=2), xb);

# %% [markdown]
# ### 写法二：一次投影，再拆成多头
#
# 写法一要做 `nh` 次小的矩阵乘法，一个头一个头地串行计算。高效写法只用**一个**
# `(d_out, d_in)` 的 `W_query` 投影一次，然后把最后一维切成 `nh` 段，每段就是一个头；
# 之后所有头在一次批量矩阵乘法里并行算完。`MultiHeadAttention`（也就是 GPT 模型里用的那个类）
# 还在最后加了一个输出投影 `out_proj`，把各头的结果再混合一次。

# %%
# 章内实现
class MultiHeadAttention(nn.Module):
    """一次投影出所有头的 Q/K/V，拆成 nh 个头并行计算因果注意力，合并后再做输出投影。"""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} 必须能被 num_heads={num_heads} 整除")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # 混合各头的输出
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        b, t, _ = x.shape
        nh, hs = self.num_heads, self.head_dim
        # 投影 (B, T, d_out) → 最后一维切成 nh 段 (B, T, nh, hs) → 头维挪到前面 (B, nh, T, hs)
        q = self.W_query(x).reshape(b, t, nh, hs).transpose(1, 2)
        k = self.W_key(x).reshape(b, t, nh, hs).transpose(1, 2)
        v = self.W_value(x).reshape(b, t, nh, hs).transpose(1, 2)
        scores = q @ k.transpose(2, 3)  # (B, nh, T, T)：所有头的分数一次算完
        scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))
        weights = (scores / math.sqrt(hs)).softmax(dim=-1)  # (B, nh, T, T)
        weights = self.dropout(weights)
        ctx = weights @ v  # (B, nh, T, hs)
        ctx = ctx.transpose(1, 2).reshape(b, t, self.d_out)  # (B, T, nh, hs) → (B, T, d_out)：拼回去
        return self.out_proj(ctx)  # (B, T, d_out)


# %% [markdown]
# PyTorch 版的差别：拆头用 `view`（要求内存连续；投影的输出是连续的，可以用），合并前 `transpose` 之后不再连续，
# 所以那一步用 `reshape`。此外，PyTorch 自带融合的 `F.scaled_dot_product_attention`：一个调用做完打分、掩码、
# softmax、dropout 和加权求和，在 GPU 上会选 FlashAttention 一类的内核。我们把两种写法都放进来，用 `attn_impl` 选：

# %%
# 章内实现
class MultiHeadAttentionTorch(torch.nn.Module):
    """MultiHeadAttention 的 PyTorch 写法；attn_impl="explicit" 显式计算，"sdpa" 用融合算子。"""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        attn_impl: str = "explicit",
    ) -> None:
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out={d_out} 必须能被 num_heads={num_heads} 整除")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.attn_impl = attn_impl
        self.W_query = torch.nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = torch.nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = torch.nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = torch.nn.Linear(d_out, d_out)
        self.dropout = torch.nn.Dropout(dropout)
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        nh, hs = self.num_heads, self.head_dim
        q = self.W_query(x).view(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.W_key(x).view(b, t, nh, hs).transpose(1, 2)
        v = self.W_value(x).view(b, t, nh, hs).transpose(1, 2)
        if self.attn_impl == "sdpa":
            p = self.dropout.p if self.training else 0.0
            ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        else:
            scores = (q @ k.transpose(2, 3)).masked_fill(self.mask[:t, :t], float("-inf"))  # (B, nh, T, T)
            weights = self.dropout(torch.softmax(scores / math.sqrt(hs), dim=-1))
            ctx = weights @ v  # (B, nh, T, hs)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, self.d_out))  # (B, T, d_out)


# %% [markdown]
# 下面用我们写的 `MultiHeadAttention` 的权重，把它的前向一步一步手工展开，每一步都打印形状，
# 最后与 `mha(batch)` 比较：

# %%
tt.manual_seed(123)
mha = MultiHeadAttention(d_in, d_out, context_length=T, dropout=0.0, num_heads=num_heads)
b, t, _ = batch.shape
nh, hs = num_heads, d_out // num_heads

q = mha.W_query(batch)  # (B, T, d_out)
print("1. 投影            q:", q.shape)
q = q.reshape(b, t, nh, hs)  # (B, T, nh, hs)：最后一维切成 nh 段
print("2. 拆头            q:", q.shape)
q = q.transpose(1, 2)  # (B, nh, T, hs)：把头挪到前面，当作“批”的一部分
print("3. 头维前移        q:", q.shape)
k = mha.W_key(batch).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
v = mha.W_value(batch).reshape(b, t, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
s = q @ k.transpose(2, 3)  # (B, nh, T, T)：所有头的分数一次算完
print("4. 分数            s:", s.shape)
s = s.masked_fill(tt.triu(tt.ones(t, t), diagonal=1).bool(), float("-inf"))
w = (s / math.sqrt(hs)).softmax(dim=-1)  # (B, nh, T, T)
ctx = w @ v  # (B, nh, T, hs)
print("5. 各头上下文    ctx:", ctx.shape)
ctx = ctx.transpose(1, 2).reshape(b, t, d_out)  # (B, T, nh, hs) → (B, T, d_out)：拼回去
print("6. 合并各头      ctx:", ctx.shape)
out = mha.out_proj(ctx)  # (B, T, d_out)
print("7. 输出投影      out:", out.shape)
print("与 mha(batch) 的最大差:", assert_same("逐步展开 vs mha", out.data, mha(batch).data, atol=1e-6))

# %% [markdown]
# 现在与库核对。`gpt_numpy/attention.py` 里的 `MultiHeadAttention`（GPT 模型真正用的类，`attention_steps` 只是重新导出它）
# 默认把投影、拆头、注意力、合并融合成**一个**计算图节点（`F.causal_self_attention`），反向也是手写的一个公式；
# `gpt_torch` 的版本默认走 `sdpa`。算法都和我们逐步写的不同，在同样的权重上结果却必须一致：

# %%
from gpt_numpy.attention import MultiHeadAttention as NumpyMHA
from gpt_torch.attention import MultiHeadAttention as TorchMHA

mha_torch = MultiHeadAttentionTorch(4, 4, 8, 0.1, num_heads=2)
check_same("MultiHeadAttention vs gpt_numpy（融合算子）", MultiHeadAttention(4, 4, 8, 0.1, num_heads=2), NumpyMHA(4, 4, 8, 0.1, num_heads=2), xb)
check_same("MultiHeadAttention vs gpt_torch（sdpa）", MultiHeadAttention(4, 4, 8, 0.1, num_heads=2), TorchMHA(4, 4, 8, 0.1, num_heads=2), xb)
check_same("MultiHeadAttentionTorch vs gpt_torch（explicit）", mha_torch, TorchMHA(4, 4, 8, 0.1, num_heads=2, attn_impl="explicit"), xb)
mha_torch_sdpa = MultiHeadAttentionTorch(4, 4, 8, 0.1, num_heads=2, attn_impl="sdpa")
check_same("MultiHeadAttentionTorch(sdpa) vs 我们的 explicit", mha_torch_sdpa, MultiHeadAttentionTorch(4, 4, 8, 0.1, num_heads=2), xb)
check_same("MultiHeadAttention(qkv_bias) vs gpt_numpy", MultiHeadAttention(4, 4, 8, 0.1, 2, qkv_bias=True), NumpyMHA(4, 4, 8, 0.1, 2, qkv_bias=True), xb);

# %% [markdown]
# ### 两种写法为什么相等
#
# 关键在于 `Linear` 的权重形状 `(out, in)`：输出的第 `m` 个分量只由权重的第 `m` 行决定。
# 所以高效版投影结果的第 `h` 段（第 `h·hs` 到 `(h+1)·hs-1` 个分量），只由 `W_query.weight` 的这几行决定。
# 如果把 wrapper 里各个头的 `W_query.weight`（每个 `(hs, d_in)`）**按行依次拼接**成 `(nh·hs, d_in)`，
# 那么一次投影再切段得到的第 `h` 段，就恰好等于第 `h` 个头自己算出来的 `q`。`K`、`V` 同理。
# 后面的打分、掩码、softmax 都是每个头各算各的，自然也相同；最后“转置再 reshape”正是按头的顺序拼接。
# wrapper 没有输出投影，那就把 `out_proj` 设成恒等映射。照这个思路，把我们的 wrapper 转成等价的高效版本：

# %%
# 章内实现
import numpy as np


def multihead_from_wrapper(wrapper: MultiHeadAttentionWrapper, context_length: int) -> MultiHeadAttention:
    """各头的投影权重按行拼接，out_proj 取恒等映射，得到与 wrapper 等价的 MultiHeadAttention。"""
    heads = list(wrapper.heads)
    hs, d_in = heads[0].W_query.weight.shape
    d_out, has_bias = hs * len(heads), heads[0].W_query.bias is not None
    mha = MultiHeadAttention(d_in, d_out, context_length, heads[0].dropout.p, len(heads), qkv_bias=has_bias)
    state = {}
    for name in ("W_query", "W_key", "W_value"):
        state[f"{name}.weight"] = np.concatenate([getattr(h, name).weight.data for h in heads], axis=0)  # (nh·hs, C)
        if has_bias:
            state[f"{name}.bias"] = np.concatenate([getattr(h, name).bias.data for h in heads], axis=0)
    state["out_proj.weight"] = np.eye(d_out, dtype=state["W_query.weight"].dtype)
    state["out_proj.bias"] = np.zeros(d_out, dtype=state["W_query.weight"].dtype)
    mha.load_state_dict(state)
    return mha


# %%
for i, head in enumerate(mha_wrapper.heads):
    print(f"头 {i} 的 W_query.weight (hs, d_in):\n", head.W_query.weight.data)
mha_equiv = multihead_from_wrapper(mha_wrapper, context_length=T)
print("拼接后的 W_query.weight (nh·hs, d_in):\n", mha_equiv.W_query.weight.data)
print("out_proj.weight:\n", mha_equiv.out_proj.weight.data)
print("wrapper 与高效版输出的最大差:", assert_same("wrapper vs 高效版", mha_equiv(batch).data, out_wrapper.data, atol=1e-6))

lib_wrapper = NA.MultiHeadAttentionWrapper(4, 4, T, 0.0, num_heads=2)
lib_wrapper.load_state_dict(mha_wrapper.state_dict())
assert_same("multihead_from_wrapper 的权重", mha_equiv.W_query.weight.data, NA.multihead_from_wrapper(lib_wrapper).W_query.weight.data)
print("✓ 与库里的 multihead_from_wrapper 拼出的权重相同")

# %% [markdown]
# 反过来，如果把各头的顺序拼错（比如倒过来），输出就对不上了——这说明上面的相等不是巧合：

# %%
wrong = multihead_from_wrapper(mha_wrapper, context_length=T)
wq = wrong.W_query.weight.data
wrong.W_query.weight.data = np.concatenate([wq[hs:], wq[:hs]])  # 交换两个头的查询权重
print("顺序拼错时的最大差:", np.abs(wrong(batch).data - out_wrapper.data).max())

# %% [markdown]
# ## 3.9 两条轨道并排：同样的权重，同样的数
#
# 上面每写一个类都核对过了。这里把本章所有版本放进一张表，看看差异到底有多小：
# 对每个版本，先建好我们写的 tinytensor 版，按**参数名**把权重复制给库里 `gpt_numpy` 和 `gpt_torch` 的同名类，
# 然后对同一个输入做前向，再用同一个随机的上游梯度做反向，比较输出、输入的梯度，以及**每个参数**的梯度。
# float64 下差异在 1e-16 量级。库里两条轨道之间再用 float32 比一次，差异在 1e-7 量级——这是单精度的舍入，不是错误。

# %%
def compare_lib_tracks(make, dtype: str, seed: int = 0) -> tuple[float, float, float]:
    """库里两条轨道：同样的模块、同样的前向与反向（float32 时不做断言，只返回最大差）。"""
    tt.manual_seed(seed)
    m_tt = make(NA).to(np.dtype(dtype)).eval()
    m_torch = make(TA).to(getattr(torch, dtype)).eval()
    m_torch.load_state_dict({k: torch.from_numpy(v.data.copy()) for k, v in m_tt.state_dict().items()})
    xb32 = np.random.default_rng(seed).standard_normal((2, 5, 4)).astype(dtype)  # (B, T, C)
    g32 = np.random.default_rng(seed + 1).standard_normal(m_tt(tt.tensor(xb32)).shape).astype(dtype)
    y1, gx1, gp1 = forward_backward(m_tt, xb32, g32)
    y2, gx2, gp2 = forward_backward(m_torch, xb32, g32)
    d = lambda a, b: float(np.abs(a - b).max())  # noqa: E731
    return d(y1, y2), d(gx1, gx2), max(d(gp1[n], gp2[n]) for n in gp1)


variants = {
    "SelfAttentionV1": (lambda: SelfAttentionV1(4, 2), lambda m: m.SelfAttentionV1(4, 2)),
    "SelfAttentionV2": (lambda: SelfAttentionV2(4, 2, qkv_bias=True), lambda m: m.SelfAttentionV2(4, 2, qkv_bias=True)),
    "CausalAttention": (lambda: CausalAttention(4, 2, 8, dropout=0.1), lambda m: m.CausalAttention(4, 2, 8, dropout=0.1)),
    "MultiHeadAttentionWrapper": (
        lambda: MultiHeadAttentionWrapper(4, 4, 8, dropout=0.1, num_heads=2),
        lambda m: m.MultiHeadAttentionWrapper(4, 4, 8, dropout=0.1, num_heads=2),
    ),
    "MultiHeadAttention": (
        lambda: MultiHeadAttention(4, 4, 8, dropout=0.1, num_heads=2),
        lambda m: m.MultiHeadAttention(4, 4, 8, dropout=0.1, num_heads=2),
    ),
}
rows = []
for name, (ours, make_lib) in variants.items():
    for track, mod in [("gpt_numpy", NA), ("gpt_torch", TA)]:
        d = check_same(f"{name} vs {track}", ours(), make_lib(mod), xb, verbose=False)  # 不一致就报错
        rows.append((name, f"本章 vs {track}", "float64", d))
    rows.append((name, "gpt_numpy vs gpt_torch", "float32", compare_lib_tracks(make_lib, "float32")))

print("\n最大绝对差")
print(pad("版本", 28) + pad("对照", 26) + pad("精度", 10) + pad("输出", 10) + pad("输入梯度", 10) + "参数梯度")
for name, pair, dtype, d in rows:
    print(pad(name, 28) + pad(pair, 26) + pad(dtype, 10) + "".join(pad(f"{v:.1e}", 10) for v in d))

# %% [markdown]
# ## 3.10 GPT-2 规模的注意力层
#
# GPT-2 small 每个 Transformer 块里有一个这样的层：`d_in = d_out = 768`，`nh = 12`，所以 `hs = 64`，
# 上下文长度 1024。它有多少参数？三个投影各 `768 × 768`，输出投影 `768 × 768` 加偏置 768：

# %%
gpt2_attn = MultiHeadAttention(768, 768, context_length=1024, dropout=0.0, num_heads=12)
n = sum(p.numel() for p in gpt2_attn.parameters())
print(f"参数个数: {n:,}   （4 × 768² + 768 = {4 * 768**2 + 768:,}）")
assert n == sum(p.numel() for p in NumpyMHA(768, 768, 1024, 0.0, num_heads=12).parameters())
tokens = 16 if QUICK else 64
xg = tt.randn(1, tokens, 768)  # (B, T, C)
print("输入", xg.shape, "→ 输出", gpt2_attn(xg).shape)

# %% [markdown]
# ## 小结
#
# - 注意力的骨架只有三步：点积打分、softmax 归一化、加权求和；两层循环和三次矩阵运算算的是同一件事。
# - 可训练的 `W_q`、`W_k`、`W_v` 让模型自己学会“找什么、怎样被找到、提供什么”；`nn.Linear` 的权重是 `(out, in)`，
#   所以 `SelfAttentionV1` 的矩阵是 `SelfAttentionV2` 权重的转置。
# - 点积的方差随 `hs` 线性增长，除以 `√hs` 把它拉回常数尺度，避免 softmax 饱和、梯度消失。
# - 因果掩码让位置 `i` 只看 `0..i`；“softmax 前填 -inf”与“softmax 后乘下三角再归一化”数学上相同。
# - dropout 作用在注意力权重上，只在训练时生效。
# - 多头注意力的两种写法等价：把各头的投影权重按行拼接，就得到一次投影的高效版本。
# - 本章写的每个类，与库里两条轨道的同名类在同样的权重上输出和全部梯度都一致。
#
# 下一章我们把 `MultiHeadAttention` 和层归一化、前馈网络、残差连接组装成完整的 GPT 模型。
#
# ## 练习
#
# 答案在 `ch03_solutions.ipynb`，先自己动手再看。
#
# 1. **把缩放折进权重。** 证明：把 `W_query` 的权重（和偏置）乘以 `1/√hs`，再去掉 softmax 前的 `/ √hs`，
#    注意力的输出不变。用本章的 `SelfAttentionV2` 写一个不缩放的变体来验证。
# 2. **用梯度检查因果性。** 对 `MultiHeadAttention` 的输出位置 `i` 求和再反向，输入的梯度在位置 `j > i` 上应全为 0。
#    对每个 `i` 都检查一遍；再把掩码去掉（换成 `SelfAttentionV2`），看看梯度变成什么样。
# 3. **dropout 的期望。** 训练模式下 `CausalAttention(dropout=0.5)` 的输出是随机的。对同一个输入跑很多次取平均，
#    平均值应接近 `eval()` 模式的输出。为什么？误差大约怎样随次数减小？
# 4. **从高效版拆回单头。** 写 `multihead_from_wrapper` 的逆：给定一个 `out_proj` 是恒等映射的 `MultiHeadAttention`，
#    构造一个输出相同的 `MultiHeadAttentionWrapper`。如果 `out_proj` 不是恒等映射，还能拆吗？
# 5. **数参数。** 写出 `MultiHeadAttention(d, d, …, num_heads=nh, qkv_bias=b)` 的参数个数公式，
#    对 GPT-2 的四种规模（768/12、1024/16、1280/20、1600/25）与实际模块核对。参数个数和 `nh` 有关吗？
