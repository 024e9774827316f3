# %% [markdown]
# # 第 8 章 在实践中使用大语言模型（上）：从零实现 Qwen3，在 CPU 上量化推理
#
# 前七章的 GPT 是 2019 年的结构。今天人们在笔记本电脑上真正拿来聊天的开源模型，骨架没有变——
# 仍是“嵌入 → 一串 Transformer 块 → 输出层”，仍是一次预测一个词元——但几乎每个零件都换了新的写法。
# 这一章选通义千问 Qwen3（中文能力强、权重公开，最小的 0.6B 在 CPU 上也跑得动），做四件事：
#
# 1. **逐个零件对照**：RMSNorm、RoPE、分组查询注意力 (GQA)、SwiGLU、QK-norm。每一个都先在页面上用
#    几行 NumPy 写出来，放在我们 GPT 的对应零件旁边，再和 Hugging Face transformers 里的实现逐位比对；
# 2. **整模型**：两条轨道（`gpt_numpy/qwen3.py`、`gpt_torch/qwen3.py`）读取 Hugging Face 格式的权重，
#    logits 与 transformers 的 `Qwen3ForCausalLM` 一致；再读 Qwen 的分词器 `tokenizer.json`、套上对话模板；
# 3. **抽样**：温度、top-k、top-p、重复惩罚、停止串，在我们自己训练的中文 GPT 上看效果；
# 4. **量化**：int8 与 bf16 权重，numba 内核直接读紧凑的权重（int8 时激活也量化，点积在整数里做）；
#    测速度，也在训练过的模型上测质量。
#
# **关于权重**：构建本章的机器不能下载 Qwen3 的真实权重。所以凡是需要“一个 Qwen3”的地方，本章都用
# transformers 现场写出的**随机权重**检查点——文件布局、键名、数据类型与真实的 Qwen3 完全相同，只是数值随机。
# 随机权重的模型说不出人话，本章因此不展示它的“回答”；需要看生成质量的地方（抽样、量化的影响）
# 改用我们自己在《人民日报》语料上训练的小 GPT。在能联网的电脑上，`python -m gpt_numpy chat`
# 会经 huggingface_hub 下载真实的 Qwen3-0.6B（国内可设 `HF_ENDPOINT` 镜像），本章的代码原样适用。
#
# 设置 `LLMZH_QUICK=1` 时（测试这样运行）模型与步数缩小；本文件保存的输出来自完整运行。

# %%
import contextlib
import io
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import TqdmWarning

import gpt_numpy
from gpt_numpy import qwen3 as NQ  # NumPy 轨道的 Qwen3
from gpt_torch import qwen3 as TQ  # PyTorch 轨道的 Qwen3
from llmcore.qwen3 import Qwen3Config, open_checkpoint, render_chat
from llmcore.qwen3.weights import bf16_to_float32, float32_to_bf16

QUICK = os.environ.get("LLMZH_QUICK") == "1"
ROOT = Path(gpt_numpy.__file__).resolve().parent.parent
WORK = Path(tempfile.mkdtemp(prefix="llmzh-ch08-"))
np.set_printoptions(precision=4, suppress=True, linewidth=110)
torch.manual_seed(0)
rng = np.random.default_rng(0)
# transformers 用 tqdm.auto 画进度条；在没装 ipywidgets 的 Jupyter 里，导入它时 tqdm 会退回文字进度条，
# 同时发出一条 “IProgress not found” 的 TqdmWarning。这条提示与本章无关，只把它关掉：
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
import transformers  # noqa: E402
from transformers.models.qwen3 import modeling_qwen3 as HF  # noqa: E402

transformers.utils.logging.disable_progress_bar()  # 存取小检查点只要一瞬间，不需要 transformers 的进度条

print("快速模式" if QUICK else "完整模式", "| torch", torch.__version__, "| transformers", transformers.__version__)


def max_diff(a, b) -> float:
    """两组数的最大绝对差（torch 张量先转成 NumPy）。"""
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# %% [markdown]
# ## 8.1 从 GPT-2 到 Qwen3：一张表
#
# | 零件 | 我们的 GPT（GPT-2 结构） | Qwen3 |
# |---|---|---|
# | 归一化 | LayerNorm：减均值、除标准差、乘 scale、加 shift | RMSNorm：只除均方根、乘权重 |
# | 位置 | 学到的位置嵌入表，加在输入上 | RoPE：在每层注意力里按位置旋转 q、k |
# | 注意力头 | 每个查询头各有一组 k、v | GQA：每 2 个查询头共用一组 k、v（0.6B：16 个查询头、8 组键值） |
# | q、k | 直接点积 | 每个头先做 RMSNorm（QK-norm），再旋转、点积 |
# | 前馈 | C → 4C → GELU → C | SwiGLU：down(silu(gate(x)) · up(x))，F = 3C |
# | 偏置 | 线性层都有 | 一个也没有 |
# | 输出层 | 与嵌入共享 | 与嵌入共享（0.6B / 1.7B / 4B） |
#
# Qwen3-0.6B 的结构参数就在它的 `config.json` 里。不需要权重，我们就能按结构数出参数个数：

# %%
cfg06 = Qwen3Config()  # 默认值就是 Qwen3-0.6B
print(cfg06)
n_all = cfg06.num_parameters()
n_emb = cfg06.vocab_size * cfg06.hidden_size
print(f"参数 {n_all:,}（其中嵌入表 {n_emb:,}，占 {n_emb / n_all:.0%}；输出层与嵌入共享，不另计）")
print(f"bf16 存盘约 {n_all * 2 / 1e9:.2f} GB，float32 约 {n_all * 4 / 1e9:.2f} GB，int8 约 {n_all / 1e9:.2f} GB")

# %% [markdown]
# 0.6B 的“0.6”里有四分之一是嵌入表：15 万词元的词表 × 1024 维。词表大，是为了多语言（中文、代码、各种文字）
# 都能压缩得好；代价是小模型的相当一部分参数花在了查表上。
#
# 下面逐个零件来看。比对的对象是 transformers 的 `modeling_qwen3`（Hugging Face 的参考实现），
# 为了逐位比较都在 float64 下进行。

# %% [markdown]
# ## 8.2 RMSNorm 与 LayerNorm
#
# LayerNorm 做两件事：把向量平移到均值 0（减均值），再缩放到方差 1（除标准差），最后乘 scale、加 shift。
# RMSNorm 认为平移那一步没什么用，只保留缩放：
#
# $$\mathrm{RMSNorm}(x) = \frac{x}{\sqrt{\frac{1}{C}\sum_i x_i^2 + \epsilon}} \odot w$$
#
# 少算一个均值、少一组参数（shift），效果相当。我们的 GPT 里的 LayerNorm 与 RMSNorm 写在一起：

# %%
def layer_norm(x, scale, shift, eps=1e-5):  # 我们的 GPT（第 4 章）
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + shift


def rms_norm(x, w, eps=1e-6):  # Qwen3
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w


C = 64
x = rng.standard_normal((3, 5, C)) + 2.0  # 故意让均值不为 0
w = 1 + 0.1 * rng.standard_normal(C)
hf_norm = HF.Qwen3RMSNorm(C, eps=1e-6).double()
with torch.no_grad():
    hf_norm.weight.copy_(torch.from_numpy(w))
print("RMSNorm 与 transformers 的最大差：", max_diff(rms_norm(x, w), hf_norm(torch.from_numpy(x))))
print("与我们 NumPy 轨道 qwen3.rms_norm 的最大差：", max_diff(rms_norm(x, w), NQ.rms_norm(x, w, 1e-6)))
ln = torch.nn.LayerNorm(C, eps=1e-5).double()
print("LayerNorm 与 torch 的最大差：", max_diff(layer_norm(x, 1.0, 0.0), ln(torch.from_numpy(x))))
y_ln, y_rms = layer_norm(x, 1.0, 0.0), rms_norm(x, 1.0)
print(f"输出的均值：LayerNorm {y_ln.mean():+.4f}，RMSNorm {y_rms.mean():+.4f}（RMSNorm 不把均值拉回 0）")

# %% [markdown]
# ## 8.3 RoPE：把位置写进旋转角度
#
# GPT-2 给每个位置学一个向量，加在词元嵌入上。问题是：上下文长度在训练时就定死了（位置表只有那么多行），
# 而且注意力要从“绝对位置”里自己推算出“两个词元相隔多远”。
#
# RoPE（rotary position embedding，旋转位置编码）换了个思路：不改输入，而是在每一层算注意力之前，
# 把第 m 个位置的 q 和 k 按角度 $m\theta_i$ 旋转（每个头的维度两两配成一对，第 i 对的角速度是
# $\theta_i = \text{base}^{-2i/d}$，Qwen3 的 base 是 100 万）。旋转有个好性质：
# 位置 m 的 q 与位置 n 的 k 旋转后的点积，只取决于 **m − n**，于是注意力天然看到的是相对距离。
#
# Qwen（与 Llama 一样）把前一半维度与后一半维度配对：$(x_j, x_{j+d/2})$ 当作一个复数旋转。

# %%
def rope(x, positions, base=10_000.0):
    """x (..., T, d)：第 j 维与第 j + d/2 维配对，按 positions·θ_j 旋转。"""
    d = x.shape[-1]
    theta = base ** (-np.arange(0, d, 2) / d)  # (d/2,)
    ang = positions[:, None] * theta[None, :]  # (T, d/2)
    cos, sin = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


hd, T = 16, 7
cfg_hf = transformers.Qwen3Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=hd,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})
q = rng.standard_normal((1, 4, T, hd))
k = rng.standard_normal((1, 4, T, hd))
pos = np.arange(T)
cos, sin = HF.Qwen3RotaryEmbedding(cfg_hf)(torch.zeros(1, dtype=torch.float64), torch.arange(T)[None])
q_hf, k_hf = HF.apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(k), cos.double(), sin.double())
print("RoPE 与 transformers 的最大差：", max_diff(rope(q, pos), q_hf), max_diff(rope(k, pos), k_hf))

# 只看相对距离：同一对向量放在 (m, n) = (2, 0) 与 (102, 100)，旋转后的点积相同
a, b = rng.standard_normal(hd), rng.standard_normal(hd)
def dot_at(m, n):
    return (rope(a[None], np.array([m], float)) @ rope(b[None], np.array([n], float)).T).item()
print(f"位置 (2, 0)：{dot_at(2, 0):.6f}   位置 (102, 100)：{dot_at(102, 100):.6f}   位置 (5, 0)：{dot_at(5, 0):.6f}")

# %% [markdown]
# RMSNorm 与 RoPE 和 transformers 差在 1e-7 量级，而不是 float64 的 1e-16：transformers 即使拿到 float64 的输入，
# 也在 float32 里算均方根（`hidden_states.to(torch.float32)`）和 RoPE 的角速度（`inv_freq` 是 float32），
# 这是 float32 的舍入误差，不是公式不同——与 torch 自己的 LayerNorm、与我们 NumPy 轨道的实现比，差都在 1e-16。
#
# 与我们 GPT 的位置嵌入对比一下：GPT 的 `pos_emb` 是一张 (context_length, C) 的表，要训练；
# RoPE 没有任何参数，位置 40960 与位置 0 用的是同一个公式，所以 Qwen3 的上下文可以做到 4 万词元
# （再配合 YaRN 一类的缩放还能更长，本书的实现只支持默认的 RoPE，读到缩放配置时会报错）。
# 还有一个实际的好处：KV 缓存里存的是已经旋转好的 k，新词元只需旋转自己；而 GPT 的缓存写满后窗口一滑，
# 所有位置都变了，只能整段重算（见第 5 章的生成循环）。

# %% [markdown]
# ## 8.4 分组查询注意力 (GQA)
#
# 生成时，每个新词元都要读一遍全部历史的 k、v。多头注意力里每个头都有自己的 k、v，KV 缓存于是很大。
# GQA 让几个查询头共用一组 k、v：Qwen3-0.6B 有 16 个查询头，只有 8 组键值，KV 缓存减半，
# 而查询头的数量（模型“同时关注几件事”的能力）不变。
#
# 实现上不必真的把 k、v 复制几份：把同一组的查询头排成一列，与这组唯一的 k 做一次矩阵乘即可。

# %%
def gqa(q, k, v):
    """q (B, nh, T, d)，k、v (B, nkv, T, d)，因果注意力；第 h 个查询头用第 h // (nh/nkv) 组键值。"""
    b, nh, t, d = q.shape
    nkv = k.shape[1]
    g = nh // nkv
    qg = q.reshape(b, nkv, g * t, d)  # 同组的 g 个头排成一列
    s = qg @ k.transpose(0, 1, 3, 2) / np.sqrt(d)  # (B, nkv, g·T, T)
    causal = np.tile(np.tril(np.ones((t, t), bool)), (g, 1))
    s = np.where(causal, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).reshape(b, nh, t, d)


nh, nkv = 4, 2
q = rng.standard_normal((2, nh, T, hd))
k = rng.standard_normal((2, nkv, T, hd))
v = rng.standard_normal((2, nkv, T, hd))
# 参照一：transformers 的写法——repeat_kv 把每组键值复制 g 份，变回普通的多头注意力
kr, vr = (HF.repeat_kv(torch.from_numpy(t_), nh // nkv) for t_ in (k, v))
ref = torch.nn.functional.scaled_dot_product_attention(torch.from_numpy(q), kr, vr, is_causal=True)
print("GQA 与 repeat_kv + torch SDPA 的最大差：", max_diff(gqa(q, k, v), ref))

for name, c in [("Qwen3-0.6B", cfg06)]:
    per_tok = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 2  # k 与 v，bf16 每个 2 字节
    mha = per_tok * c.num_attention_heads // c.num_key_value_heads
    print(f"{name}：每个词元的 KV 缓存 {per_tok / 1024:.0f} KB（bf16），若每个查询头各有键值则 {mha / 1024:.0f} KB；"
          f"4 万词元的上下文：{per_tok * 40960 / 2**30:.1f} GB 对 {mha * 40960 / 2**30:.1f} GB")

# %% [markdown]
# ## 8.5 SwiGLU 前馈网络
#
# 我们的 GPT：`x → Linear(C, 4C) → GELU → Linear(4C, C)`。Qwen3 用“门控”的写法：两个并排的投影，
# 一个过 SiLU（$x \cdot \sigma(x)$）当作门 (gate)，与另一个 (up) 逐元素相乘，再投影回来 (down)。
# 三个矩阵而不是两个，所以中间维度取 3C 左右（0.6B 是 3072 = 3 × 1024），参数量与 4C 的 GELU 版本相当。

# %%
def gelu_ffn(x, w1, b1, w2, b2):  # 我们的 GPT（tanh 近似的 GELU）
    h = x @ w1.T + b1
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    return h @ w2.T + b2


def swiglu(x, w_gate, w_up, w_down):  # Qwen3
    g = x @ w_gate.T
    return (g / (1 + np.exp(-g)) * (x @ w_up.T)) @ w_down.T


F_ = 96
mlp = HF.Qwen3MLP(transformers.Qwen3Config(hidden_size=C, intermediate_size=F_)).double()
x = rng.standard_normal((2, 5, C))
ws = [p.detach().numpy() for p in (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)]
print("SwiGLU 与 transformers Qwen3MLP 的最大差：", max_diff(swiglu(x, *ws), mlp(torch.from_numpy(x))))
w1, w2 = rng.standard_normal((4 * C, C)) * 0.1, rng.standard_normal((C, 4 * C)) * 0.1
b1, b2 = np.zeros(4 * C), np.zeros(C)
seq = torch.nn.Sequential(torch.nn.Linear(C, 4 * C), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(4 * C, C))
seq = seq.double()
with torch.no_grad():
    for lin, w_, b_ in [(seq[0], w1, b1), (seq[2], w2, b2)]:
        lin.weight.copy_(torch.from_numpy(w_))
        lin.bias.copy_(torch.from_numpy(b_))
print("GELU 前馈与 torch 的最大差：", max_diff(gelu_ffn(x, w1, b1, w2, b2), seq(torch.from_numpy(x))))

# %% [markdown]
# ## 8.6 QK-norm，以及把零件拼成一层注意力
#
# Qwen3 相对 Qwen2 的一处新改动：q、k 投影之后、旋转之前，对**每个头**各做一次 RMSNorm（权重长度是 head_dim）。
# 注意力分数是 q·k 的点积，q、k 的长度不受控制时，分数可能很大，softmax 几乎变成独热，训练容易不稳；
# 把 q、k 归一化后，分数的大小只由 q_norm、k_norm 两组权重决定。
#
# 把前面写的 `rms_norm`、`rope`、`gqa` 拼起来，就是 Qwen3 的一层注意力；拿 transformers 的 `Qwen3Attention`
# 来比（它的权重随机初始化，我们直接读它的参数）：

# %%
cfg_att = transformers.Qwen3Config(hidden_size=C, num_attention_heads=nh, num_key_value_heads=nkv, head_dim=hd,
                                   rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
                                   attn_implementation="eager")
att = HF.Qwen3Attention(cfg_att, layer_idx=0).double().eval()
with torch.no_grad():
    att.q_norm.weight.copy_(1 + 0.2 * torch.randn(hd))
    att.k_norm.weight.copy_(1 + 0.2 * torch.randn(hd))
P = {n: p.detach().numpy() for n, p in att.named_parameters()}


def qwen3_attention(x):
    b, t, _ = x.shape
    q = rms_norm((x @ P["q_proj.weight"].T).reshape(b, t, nh, hd), P["q_norm.weight"]).transpose(0, 2, 1, 3)
    k = rms_norm((x @ P["k_proj.weight"].T).reshape(b, t, nkv, hd), P["k_norm.weight"]).transpose(0, 2, 1, 3)
    v = (x @ P["v_proj.weight"].T).reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
    pos = np.arange(t)
    ctx = gqa(rope(q, pos), rope(k, pos), v)  # (B, nh, T, hd)
    return ctx.transpose(0, 2, 1, 3).reshape(b, t, nh * hd) @ P["o_proj.weight"].T


x = rng.standard_normal((2, T, C))
cos, sin = HF.Qwen3RotaryEmbedding(cfg_att)(torch.zeros(1, dtype=torch.float64), torch.arange(T)[None])
mask = torch.full((T, T), -torch.inf, dtype=torch.float64).triu(1)[None, None]  # eager 注意力要显式的因果掩码
ref, _ = att(torch.from_numpy(x), (cos.double(), sin.double()), mask)
print("整层注意力（QK-norm + RoPE + GQA）与 transformers 的最大差：", max_diff(qwen3_attention(x), ref))

# %% [markdown]
# ## 8.7 整个模型：两条轨道对 transformers
#
# 零件都对上了，整模型就是把它们按 pre-norm 的方式串起来（与我们的 GPT 相同的残差结构）：
#
# ```
# h = x + o_proj(注意力(RMSNorm(x)))
# x = h + down(silu(gate(RMSNorm(h))) · up(RMSNorm(h)))
# ```
#
# 正式的实现在 `gpt_numpy/qwen3.py`（NumPy，推理用）与 `gpt_torch/qwen3.py`（PyTorch，参数名与 transformers 完全相同，
# GPU 上用 bf16 和 `scaled_dot_product_attention`）。下面让 transformers 写一个小的随机权重检查点——
# 目录里就是 `config.json` 与 `model.safetensors`，和从 Hugging Face 下载的 Qwen3 目录一模一样——
# 再用两条轨道分别加载，比较 logits。权重按 bf16 存盘，与真实的 Qwen3 一样。

# %%
tiny_dir = WORK / "qwen3-tiny"
hf_cfg = transformers.Qwen3Config(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=16, intermediate_size=96,
                                  max_position_embeddings=256, tie_word_embeddings=True,
                                  rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
                                  attn_implementation="eager")
hf_model = transformers.Qwen3ForCausalLM(hf_cfg).eval()
with torch.no_grad():  # transformers 默认的初始化（std 0.02）让 logits 几乎全是 0，比较没意思：放大一些
    for name, p in hf_model.named_parameters():
        p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("norm.weight") else 0.15 * torch.randn_like(p))
hf_model.to(torch.bfloat16).save_pretrained(tiny_dir)
hf_model = transformers.Qwen3ForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
print(sorted(p.name for p in tiny_dir.iterdir()))
ck = open_checkpoint(tiny_dir)
for key in list(ck.tensors)[:4]:
    t_ = ck.tensors[key]
    print(f"  {key:45s} {t_.dtype:5s} {t_.shape}")

# %% [markdown]
# safetensors 文件很简单：8 字节的头部长度、一段 JSON（每个张量的类型、形状、字节区间），然后是原始数据。
# 我们自己解析头部，对每个张量单独内存映射、用完即放，所以加载 0.6B 时不会同时有两份完整的权重。
#
# bf16 是 float32 的高 16 位（符号 1 位、指数 8 位、尾数 7 位）。NumPy 没有 bf16 类型，
# 但转换只需一次移位：把 uint16 放进 uint32 的高 16 位，再按 float32 解释。

# %%
vals = np.array([1.0, -3.140625, 1e-3, 65504.0], np.float32)
u16 = float32_to_bf16(vals)
back = (u16.astype(np.uint32) << 16).view(np.float32)
print("uint16：", [f"0x{v:04x}" for v in u16], "→ float32：", back)
print("与 llmcore 的 bf16_to_float32 相同：", np.array_equal(back, bf16_to_float32(u16)),
      "| 与 torch 的 bfloat16 相同：", np.array_equal(back, torch.from_numpy(vals).bfloat16().float().numpy()))

# %%
ids = rng.integers(0, 512, (2, 24))
with torch.no_grad():
    ref = hf_model(torch.from_numpy(ids)).logits.numpy()
np_model = NQ.Qwen3Model.from_pretrained(tiny_dir)
pt_model = TQ.Qwen3ForCausalLM.from_pretrained(tiny_dir, device="cpu")
print(f"logits 的幅度 {np.abs(ref).max():.2f}")
print("NumPy 轨道 对 transformers（float32）：", max_diff(np_model.infer(ids, last_only=False), ref))
print("PyTorch 轨道 对 transformers（float32）：", max_diff(pt_model.infer(ids, last_only=False), ref))
# 带 KV 缓存：先预填充 16 个词元，再逐个送入
cache = np_model.new_cache(batch_size=2, max_len=64)
steps = [np_model.infer(ids[:, :16], cache, last_only=False)]
steps += [np_model.infer(ids[:, i : i + 1], cache, last_only=False) for i in range(16, 24)]
print("NumPy 轨道带缓存逐词元 对 transformers：", max_diff(np.concatenate(steps, 1), ref))
a64 = NQ.Qwen3Model.from_pretrained(tiny_dir, dtype=np.float64).infer(ids, last_only=False)
b64 = TQ.Qwen3ForCausalLM.from_pretrained(tiny_dir, dtype=torch.float64, device="cpu").infer(ids, last_only=False)
print("两条轨道在 float64 下的最大差：", max_diff(a64, b64))

# %% [markdown]
# float32 下差在 1e-6 量级（求和顺序不同带来的舍入），float64 下在 1e-14 量级：两条轨道、transformers
# 算的是同一个函数。`tests/test_qwen3.py` 对两种输出层（共享 / 不共享）、分片的检查点、带缓存的分块预填充
# 都做了同样的检查。

# %% [markdown]
# ## 8.8 Qwen 的分词器：读 tokenizer.json
#
# Qwen 的分词器也是字节级 BPE（第 2 章写过），只是换了一套预分词正则，词表有 15 万个词元。
# Hugging Face 把分词的每一步写在 `tokenizer.json` 里：规范化 (NFC)、预分词（一条正则 + 字节映射）、
# BPE 的词表与合并表、添加的特殊词元。`llmcore/tokenizers/hf_json.py` 逐项照做，BPE 合并沿用第 2 章的算法。
#
# 真实的 Qwen 词表不能下载，我们用 `tokenizers` 库按 Qwen 的格式训练一个小词表，存成 `tokenizer.json`，
# 然后比较两边的编码结果。先看 Qwen 的预分词正则与 GPT-2 的有什么不同：

# %%
import regex  # noqa: E402

from llmcore.datasets import load_default_corpus  # noqa: E402
from llmcore.tokenizers.hf_json import QWEN_PATTERN, HFJsonTokenizer  # noqa: E402
from llmcore.tokenizers.patterns import GPT2_PATTERN  # noqa: E402

sample = "新华社北京1月1日电：GDP增长了7.8%。I'm OK!\n\n    return x  # 🙂"
print("GPT-2：", regex.findall(GPT2_PATTERN, sample))
print("Qwen ：", regex.findall(QWEN_PATTERN, sample))

# %% [markdown]
# 两处明显的不同：Qwen 把数字一位一块（“1998”是四个块，模型算术时每一位都是独立的词元），
# 字母串可以带一个前导标点（“：GDP”）；换行、缩进的空格也切得更细，代码因此压缩得更好。

# %%
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

train_text, _ = load_default_corpus()
corpus = train_text[: 200_000 if QUICK else 2_000_000]
hf_tok = Tokenizer(models.BPE())
hf_tok.normalizer = normalizers.NFC()
hf_tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
])
hf_tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=2000 if QUICK else 8000, show_progress=False,
                              special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
hf_tok.train_from_iterator(corpus.splitlines(), trainer)
hf_tok.add_tokens(["<think>", "</think>"])
hf_tok.save(str(WORK / "tokenizer.json"))

ours = HFJsonTokenizer.from_file(WORK / "tokenizer.json")
tests = ["今天天气很好，我们去公园散步。", "Qwen3 supports 119 languages; 你好 🙂", "def f(x):\n    return x ** 2\n",
         "<|im_start|>user\n你好<|im_end|>\n", "café（NFC）与 cafe\u0301"]
for s in tests:
    a_, b_ = ours.encode(s), hf_tok.encode(s, add_special_tokens=False).ids
    print(a_ == b_, len(a_), ours.decode(a_) == hf_tok.decode(b_, skip_special_tokens=False), repr(s[:24]))
val = train_text[-50_000:] if QUICK else train_text[-300_000:]
t0 = time.perf_counter()
n_ours = len(ours.encode(val))
dt = time.perf_counter() - t0
print(f"{len(val):,} 个字符：我们 {n_ours:,} 个词元（{dt:.2f} 秒），tokenizers 库 "
      f"{len(hf_tok.encode(val, add_special_tokens=False).ids):,} 个；每词元 {len(val) / n_ours:.2f} 个字符")

# %% [markdown]
# ## 8.9 对话模板与思考模式
#
# 聊天模型看到的不是“一问一答”，而是一段带标记的文本。Qwen 用 ChatML：每一轮以 `<|im_start|>角色` 开头、
# `<|im_end|>` 结尾；要模型回答时，末尾放一个 `<|im_start|>assistant\n`，模型接着往下写，写出 `<|im_end|>` 就算说完。
#
# Qwen3 还有**思考模式**：回答之前先在 `<think>…</think>` 里写推理过程。开着时（默认）模板不变，模型自己决定想多少；
# 关掉时，模板直接替模型写一个空的思考块，模型就跳过思考直接回答。历史里的回复只保留 `</think>` 之后的正文。

# %%
chat = [{"role": "system", "content": "你是一个乐于助人的助手。"},
        {"role": "user", "content": "1+1 等于几？"},
        {"role": "assistant", "content": "<think>\n这是基本的加法。\n</think>\n\n等于 2。"},
        {"role": "user", "content": "再加 3 呢？"}]
print(render_chat(chat, enable_thinking=True))
off = render_chat(chat, enable_thinking=False)
print("—— 关闭思考时，最后一段是：", repr(off[off.rindex("<|im_start|>") :]))
ids_chat = ours.encode(render_chat(chat))
print(f"编码后 {len(ids_chat)} 个词元，其中特殊词元：",
      [ours.decode([i]) for i in ids_chat if i in ours.special_tokens.values()])

# %% [markdown]
# 多轮对话里，`llmcore/qwen3/generate.py` 的 `ChatSession` 每轮把整段对话重新渲染、编码，与 KV 缓存里已有的词元比较，
# 只把最长公共前缀之后的部分送进模型。上一轮的思考块在历史里被去掉了，公共前缀就止于那里。
# 命令行里的 `chat` 就建立在它上面：
#
# ```bash
# python -m gpt_numpy chat                          # Qwen/Qwen3-0.6B，int8 权重，思考模式
# python -m gpt_numpy chat --no-think --quant=bf16 --system="你是一位中文老师"
# python -m gpt_torch chat --model=Qwen/Qwen3-1.7B   # 有 GPU 时 bf16 放 GPU
# ```
#
# 对话中 `/reset` 清空历史，回复途中 Ctrl-C 只停止这一条回复。下面用一个随机权重的小 Qwen3（词表与上面现训的分词器一样大）
# 走一遍流程——输出没有意义，所以不打印，只看缓存的复用：

# %%
from llmcore.qwen3.generate import ChatSession, SamplingConfig, apply_repetition_penalty, stream_sample  # noqa: E402

from llmcore.qwen3.weights import expected_shapes  # noqa: E402

cfg_chat = Qwen3Config.tiny(vocab_size=ours.vocab_size)  # 词表与刚训练的分词器一样大的随机小模型
chat_model = NQ.Qwen3Model.from_arrays(cfg_chat, {k: rng.standard_normal(s_).astype(np.float32) * 0.1
                                                  for k, s_ in expected_shapes(cfg_chat).items()})
sess = ChatSession(chat_model.step, chat_model.new_cache(max_len=256), ours, system="你是助手。", enable_thinking=False)
greedy = SamplingConfig(temperature=0.0, max_new_tokens=8)
for msg in ["你好", "今天星期几？"]:
    before = len(sess.cached_ids)
    reply = "".join(sess.reply(msg, greedy))
    print(f"第 {len(sess.messages) // 2} 轮：缓存里原有 {before} 个词元，现在 {sess.cache.pos} 个")

# %% [markdown]
# ## 8.10 抽样的实践：在我们自己训练的 GPT 上
#
# 第 5 章讲过温度、top-k、top-p。真正部署时还常加两样：
#
# - **重复惩罚** (repetition penalty)：出现过的词元，正的 logit 除以 p、负的乘以 p（p > 1），压低再说一遍的概率；
# - **停止串** (stop strings)：生成的文字里出现某个字符串就停下并截掉它（例如遇到“\n\n”就结束一段）。
#
# 先训一个小 GPT（第 5 章的默认任务缩短到 400 步：《人民日报》、字符级、tiny 模型），后面量化也用它。
# 它远没训练充分，但权重已经不是随机的了：验证损失（下面打印）远低于随机猜测的 ln V，预测有了明确的偏好，正好用来观察抽样与量化。

# %%
from gpt_numpy.model import GPTModel  # noqa: E402
from gpt_numpy.train import train  # noqa: E402
from llmcore.config import TrainConfig  # noqa: E402
from llmcore.tokenizers import load_tokenizer  # noqa: E402

run_dir = WORK / "gpt-zh"
steps = 60 if QUICK else 400
# 预热只有 steps // 10 步，峰值取 2e-3（默认任务预热 100 步，用 4e-3；预热与峰值的关系见附录 D.1）
tcfg = TrainConfig(out_dir=str(run_dir), max_steps=steps, warmup_steps=steps // 10, lr=2e-3, min_lr=2e-4,
                   eval_interval=steps, eval_batches=4, progress=False, sample_tokens=20)
overrides = dict(n_layers=2, emb_dim=64, context_length=64) if QUICK else {}
t0 = time.perf_counter()
log = io.StringIO()
with contextlib.redirect_stderr(log):  # 训练器把过程日志写到 stderr（终端里与结果分开）；这里收集起来一起打印
    result = train(tcfg, overrides)
print(log.getvalue().replace(str(WORK), "$WORK").strip())  # 临时目录显示为 $WORK
print(f"训练 {steps} 步，用时 {time.perf_counter() - t0:.0f} 秒，验证损失 {result.val_loss:.3f}"
      f"（困惑度 {math.exp(result.val_loss):.1f}）")
gpt = GPTModel.load(run_dir / "ckpt_last")
gpt.eval()
ctok = load_tokenizer(run_dir / "tokenizer.json")

# %% [markdown]
# Qwen 的生成循环 `stream_sample` 只要求模型有 `step(ids, cache)`、缓存有 `pos` 与 `max_len`——我们的 GPT 正好满足，
# 所以同一段抽样代码可以直接拿来试：

# %%
def gpt_step(ids, cache):
    return gpt.infer(ids, cache)


def sample_text(prompt, **kw):
    cfg_s = SamplingConfig(**{"max_new_tokens": 60, "seed": 1, **kw})
    cache_ = gpt.new_cache(1)
    out = list(stream_sample(gpt_step, cache_, ctok.encode(prompt), cfg_s))
    text = ctok.decode(out)
    for s in cfg_s.stop_strings:
        text = text.split(s)[0]
    return text


def distinct2(s):  # 不同的二元组占比：越低说明越重复
    grams = [s[i : i + 2] for i in range(len(s) - 1)]
    return len(set(grams)) / max(1, len(grams))


prompt = "新华社北京"
for kw in [dict(temperature=0.0), dict(temperature=0.0, repetition_penalty=1.3),
           dict(temperature=0.8, top_k=40), dict(temperature=0.8, top_p=0.9, repetition_penalty=1.2),
           dict(temperature=0.8, top_k=40, stop_strings=("。",))]:
    s = sample_text(prompt, **kw)
    print(f"{json.dumps(kw, ensure_ascii=False):62s} 不同二元组 {distinct2(s):.2f}｜{prompt}{s}")

# %% [markdown]
# 贪心解码很快陷进循环（不同二元组的比例低），重复惩罚把它拉出来；温度加 top-k / top-p 让文字多样，
# 停止串在第一个句号处截断。重复惩罚的具体做法，看一个四个词元的例子：

# %%
lg = np.array([[2.0, -1.0, 0.5, 3.0]])
print("原始 logits：", lg[0], " 出现过的词元：[0, 1]")
print("惩罚 1.5 后：", apply_repetition_penalty(lg, [0, 1], 1.5)[0])

# %% [markdown]
# ## 8.11 量化：int8 与 bf16 权重
#
# 批大小为 1 的生成，每个新词元都要把全部权重从内存读一遍，算的却很少（每个权重一次乘加）：
# 速度的上限是**内存带宽 ÷ 权重字节数**。float32 每个权重 4 字节，bf16 2 字节，int8 1 字节。
#
# **int8 权重**：权重矩阵每行按 128 个一组，每组存一个缩放 $s = \max|w| / 127$，
# 权重存成 $q = \mathrm{round}(w/s) \in [-127, 127]$；计算时 $w \approx q\cdot s$。
# 每个元素的误差不超过 $s/2$。分组越小，一组里的“离群值”影响的范围越小，但缩放占的空间越多（128 一组时多 3%）。
#
# 只把权重存小还不够。最直接的做法是在循环里把每个 int8 转成 float32 再乘加，可一次“整数扩展 + 转浮点 + 乘加”
# 比读一个字节慢得多：CPU 忙着转换，内存反倒闲着，int8 只比 float32 快两成。办法是把**激活也量化**（W8A8）：
# 输入向量按同样的分组量化成 $x_q$（每组一个缩放 $s_x$），组内的点积全在整数里做，每组结束时乘一次两边的缩放：
#
# $$y_n = \sum_g s_{w}[n,g]\, s_x[g] \sum_{i \in g} q[n,i]\, x_q[i]$$
#
# 组内的和是精确的整数（$|q\cdot x_q| \le 127^2$，128 个相加也放得进 int32），编译器把它变成一条条
# “16 个 int16 相乘、相邻两个相加成 int32”的 SIMD 指令。代价是激活也有了误差（至多半个 $s_x$），
# 下面在训练过的模型上量它。
# 先在页面上用 NumPy 写一遍，与库里的 numba 内核对照：

# %%
# 章内实现
import numpy as np  # noqa: E402  本单元可以单独取出来测试


def quantize_groups(a: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """按行、每 group 个一组的对称 int8 量化：返回 (q int8, 每组的缩放 float32)。"""
    ag = a.reshape(a.shape[0], -1, group)
    s = (np.abs(ag).max(-1) / 127).astype(np.float32)
    q = np.clip(np.rint(ag / np.where(s > 0, s, 1)[..., None]), -127, 127).astype(np.int8)
    return q.reshape(a.shape), s


def w8a8_matvec(x: np.ndarray, q: np.ndarray, s_w: np.ndarray, group: int) -> np.ndarray:
    """一行输入 x (1, K) 乘 int8 权重 (N, K)：组内整数点积（int32 累加），组间乘两边的缩放。"""
    xq, s_x = quantize_groups(x, group)
    qg = q.reshape(q.shape[0], -1, group).astype(np.int32)  # (N, G, group)
    xg = xq.reshape(-1, group).astype(np.int32)  # (G, group)
    dots = np.einsum("ngi,gi->ng", qg, xg)  # (N, G)：每组的整数和，精确
    return (dots * s_w * s_x).sum(-1, dtype=np.float32)[None]  # (1, N)

# %% [markdown]
# 内核在 `tinytensor/kernels/int8_matmul.py`：生成时（一行输入）按输出行切给各线程，权重直接读 int8，
# 内存里从不出现 float32 的权重副本；预填充（很多行输入）时计算量是主要矛盾，改为把输入做同样的“量化再反量化”、
# 权重一块块反量化后交给 BLAS——算的是同一个公式。bf16 不量化激活：bf16 转 float32 只是左移 16 位，很便宜。
# 每个内核都有 NumPy 参考实现，测试检查两者一致：

# %%
from gpt_numpy.quant import evaluate_quantization  # noqa: E402
from tinytensor.kernels.int8_matmul import (  # noqa: E402
    bf16_matmul,
    bf16_matmul_numpy,
    dequantize_int8,
    int8_matmul,
    int8_matmul_numpy,
    quantize_int8,
)

W = rng.standard_normal((3072, 1024)).astype(np.float32) * 0.02
xv = rng.standard_normal((1, 1024)).astype(np.float32)
for g in (32, 128, 1024):
    qw, sw = quantize_int8(W, g)
    err = np.abs(dequantize_int8(qw, sw) - W)
    print(f"分组 {g:4d}：权重平均误差 {err.mean() / np.abs(W).mean():.3%}，"
          f"存储 {(qw.nbytes + sw.nbytes) / W.nbytes:.3f} 倍 float32")
qw, sw = quantize_int8(W, 128)
mine = w8a8_matvec(xv, *quantize_groups(W, 128), 128)
same_q = all(np.array_equal(a, b) for a, b in zip(quantize_groups(W, 128), (qw, sw)))
print("页面上的量化 与 库里的 quantize_int8 相同：", same_q)
print("页面上的 W8A8 对 库里的 int8 内核：", max_diff(mine, int8_matmul(xv, qw, sw)))
print("int8 内核 对 NumPy 参考：", max_diff(int8_matmul(xv, qw, sw), int8_matmul_numpy(xv, qw, sw)))
y_fp = xv @ W.T
print(f"W8A8 对 float32 的相对误差：{np.abs(mine - y_fp).max() / np.abs(y_fp).max():.3%}；"
      f"只量化权重：{np.abs(xv @ dequantize_int8(qw, sw).T - y_fp).max() / np.abs(y_fp).max():.3%}")
wb = float32_to_bf16(W)
print("bf16 内核 对 NumPy 参考：", max_diff(bf16_matmul(xv, wb), bf16_matmul_numpy(xv, wb)))

# %% [markdown]
# ### 质量：在训练过的模型上量
#
# 随机权重上看不出量化的真实影响，我们在刚训练的 GPT 上量：`quantize_gpt` 做一个量化副本，各块的线性层与输出层
# 存成 int8 / bf16，生成用的前向就走上面的内核（int8 时激活也量化），
# 在验证集上比较 **top-1 一致率**（两边预测的下一个字是否相同）与**困惑度**。

# %%
val_ids = np.asarray(ctok.encode(load_default_corpus()[1][:40_000]))
group = 64 if QUICK else 128
res = evaluate_quantization(gpt, val_ids, ("bf16", "int8"), group=group, n_windows=16 if QUICK else 64)
n_tok = (16 if QUICK else 64) * gpt.cfg.context_length
print(f"验证集 {n_tok:,} 个位置，int8 分组 {group}：")
for s_, r_ in res.items():
    print(f"  {s_:5s} top-1 一致率 {r_['top1_agreement']:.2%}；困惑度 {r_['ppl_ref']:.3f} → {r_['ppl_quant']:.3f}"
          f"（{r_['ppl_quant'] / r_['ppl_ref'] - 1:+.3%}）")

# %% [markdown]
# ### 速度：同一结构的三种存法
#
# 在本机上现场测一个“Qwen3-0.6B 宽度、层数较少”的随机模型（宽度 1024、16/8 个头、FFN 3072、词表 32000），
# 比较三种存法的解码速度（批大小 1，先预填充 32 个词元，再逐个生成）。这是一次短测量，机器忙时抖动很大，
# 只当作量级参考；严格的比较见下面的基准。

# %%
n_layers = 2 if QUICK else 8
cfg_speed = Qwen3Config(vocab_size=32_000, num_hidden_layers=n_layers, max_position_embeddings=512)
params = {}
for key, shape in expected_shapes(cfg_speed).items():
    params[key] = (np.ones(shape, np.float32) if key.endswith("norm.weight")
                   else rng.standard_normal(shape, dtype=np.float32) * 0.02)
n_dec = 8 if QUICK else 32
prompt_ids = rng.integers(0, 32_000, (1, 32))
speed = {}
for scheme in ("fp32", "bf16", "int8"):
    m = NQ.Qwen3Model.from_arrays(cfg_speed, params, scheme=scheme)
    c_ = m.new_cache(1, 128)
    m.infer(prompt_ids[:, :4], m.new_cache(1, 8))  # 预热
    tok_ = m.infer(prompt_ids, c_).argmax(-1)[:, None]
    t0 = time.perf_counter()
    for _ in range(n_dec):
        tok_ = m.infer(tok_, c_).argmax(-1)[:, None]
    speed[scheme] = n_dec / (time.perf_counter() - t0)
    print(f"{scheme}：权重 {m.weight_bytes() / 2**20:6.0f} MiB，解码 {speed[scheme]:6.1f} 词元/秒"
          f"（{speed[scheme] / speed['fp32']:.2f} 倍 fp32）")

# %% [markdown]
# 完整的 Qwen3-0.6B 结构（随机权重，bf16 存盘）由 `bench/bench_qwen3.py` 测量，
# 与 transformers eager 放在同一次运行里比较，每个引擎一个子进程（峰值内存互不影响），
# 批大小 1、预填充 512 个词元后解码 32 个；2 个线程与 1 个线程各测一次。
# 结果存在 `docs/results/bench-qwen3*.json`，这里读出来（记录里的说明写了测量时机器的状态）。
# transformers 的解码速度在几次运行之间波动不小，所以只看同一次运行里的比值；在你自己的电脑上运行这条命令，
# 看看你的机器上的比值。

# %%
for name in ("bench-qwen3.json", "bench-qwen3-1thread.json"):
    bench = json.loads((ROOT / "docs" / "results" / name).read_text(encoding="utf-8"))
    print(f"命令：{bench['command']}｜{bench['machine']}｜{bench['date']}｜{bench['threads']} 个线程")
    print("说明：", bench.get("note", ""))
    base = bench["results"].get("hf-fp32")
    for eng, r_ in bench["results"].items():
        ratio = f"（×{r_['decode_tok_s'] / base['decode_tok_s']:.2f}）" if base else ""
        print(f"  {eng:11s} 解码 {r_['decode_tok_s']:5.2f} 词元/秒{ratio:9s} 预填充 {r_['prefill_tok_s']:6.1f} 词元/秒  "
              f"峰值内存 {r_['peak_rss_mb']:6.0f} MB")
    print()

# %% [markdown]
# ## 8.12 练习
#
# **练习 8.1** RoPE 的相对性。证明（或数值验证）：对任意 m、n、k，把 q 放在位置 m+k、k 放在位置 n+k，
# 点积与放在 m、n 时相同。再验证学到的绝对位置嵌入没有这个性质。
#
# **练习 8.2** KV 缓存算账。Qwen3-0.6B 在 float32 的 KV 缓存下，8 GB 内存最多放得下多长的对话（除去 int8 权重）？
# 若不用 GQA（每个查询头各有键值）呢？
#
# **练习 8.3** 分组大小。在 8.10 训练的 GPT 上，把 int8 的分组从整行（按通道）改到 32，画出困惑度变化与存储开销。
#
# **练习 8.4** min-p 抽样。只保留概率 ≥ min_p × 最大概率的词元再抽样。实现它，并检查 min_p = 1 时等价于贪心。
#
# ### 解答

# %%
# 练习 8.1
d_ = 32
qa, kb = rng.standard_normal(d_), rng.standard_normal(d_)
def rope_dot(m, n):
    return (rope(qa[None], np.array([m], float)) @ rope(kb[None], np.array([n], float)).T).item()
shifts = [rope_dot(7 + s, 3 + s) for s in (0, 10, 1000, 30000)]
print("RoPE：平移后的点积", np.round(shifts, 8), "全部相同：", np.allclose(shifts, shifts[0]))
pos_table = rng.standard_normal((40_000, d_)) * 0.1  # 一张“学到的”位置表
def abs_dot(m, n):
    return float((qa + pos_table[m]) @ (kb + pos_table[n]))
print("绝对位置嵌入：", np.round([abs_dot(7 + s, 3 + s) for s in (0, 10, 1000, 30000)], 4))

# %%
# 练习 8.2
c = cfg06
per_tok_fp32 = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4
free = 8 * 2**30 - c.num_parameters()  # int8 权重每个 1 字节（忽略缩放）
print(f"GQA：每词元 {per_tok_fp32 / 1024:.0f} KB，约 {free // per_tok_fp32:,} 个词元"
      f"（上下文上限 {c.max_position_embeddings:,}）")
mha = per_tok_fp32 * c.n_groups
print(f"不用 GQA：每词元 {mha / 1024:.0f} KB，约 {free // mha:,} 个词元")

# %%
# 练习 8.3
from gpt_numpy.quant import quantize_gpt, top1_and_ppl  # noqa: E402

t_ = gpt.cfg.context_length
xs = np.stack([val_ids[i * t_ : (i + 1) * t_] for i in range(16)])
ys = np.stack([val_ids[i * t_ + 1 : (i + 1) * t_ + 1] for i in range(16)]).reshape(-1)
ref_lg = gpt.infer(xs, last_only=False).reshape(-1, gpt.cfg.vocab_size)
for g in (None, 128, 64, 32):
    if g is not None and gpt.cfg.emb_dim % g:
        continue
    qm = quantize_gpt(gpt, "int8", g)
    r_ = top1_and_ppl(ref_lg, qm.infer(xs, last_only=False).reshape(-1, gpt.cfg.vocab_size), ys)
    k_ = g or gpt.cfg.emb_dim
    print(f"分组 {'整行' if g is None else g:>4}：困惑度变化 {r_['ppl_quant'] / r_['ppl_ref'] - 1:+.4%}，"
          f"top-1 一致率 {r_['top1_agreement']:.2%}，缩放开销 {4 / k_:.1%}（相对 int8 权重）")

# %%
# 练习 8.4
from llmcore.sampling import softmax  # noqa: E402


def min_p_filter(logits, min_p):
    p = softmax(np.asarray(logits, np.float64))
    return np.where(p >= min_p * p.max(-1, keepdims=True), logits, -np.inf)


lg = rng.standard_normal((1, 50)) * 3
kept = np.isfinite(min_p_filter(lg, 0.1)).sum()
only = np.flatnonzero(np.isfinite(min_p_filter(lg, 1.0)))
print(f"min_p=0.1 保留 {kept} 个词元；min_p=1 只保留 {only}，argmax = {lg.argmax()}")

# %% [markdown]
# ## 小结
#
# - Qwen3 与 GPT-2 的骨架相同，差别都在零件：RMSNorm、RoPE、GQA、SwiGLU、QK-norm、无偏置。每个零件几行 NumPy，
#   与 transformers 逐位一致；两条轨道读 Hugging Face 的原始文件，logits 与 `Qwen3ForCausalLM` 一致。
# - 分词器与对话模板都是“数据”：`tokenizer.json` 与 ChatML 模板，照着做就能得到与官方相同的输入。
# - 批大小 1 的生成受内存带宽限制，把权重存小（int8 / bf16）就是最直接的提速；但 int8 要快，还得让点积在整数里做
#   （激活也量化，W8A8），否则 CPU 忙着把 int8 转成浮点。训练过的模型上，int8 分组量化几乎不改变预测。
#
# 下一部分（第 8 章下）把这个模型做成一个服务：OpenAI 兼容的接口与一个聊天网页。
