# %% [markdown]
# # 第 4 章 练习答案
#
# 先在第 4 章末尾自己做一遍，再来对照。这里直接用库里的类（`gpt_numpy/model.py`），它们与正文里亲手写的版本
# 已经逐项核对过。每道题的最后都有检查，结论不成立时会报错。

# %%
import os

import numpy as np

import tinytensor as tt
from gpt_numpy import model as NM
from gpt_numpy.kv_cache import KVCache
from llmcore.config import PRESETS, GPTConfig
from tinytensor import nn
from tinytensor.nn import functional as F

QUICK = os.environ.get("LLMZH_QUICK") == "1"
np.set_printoptions(precision=4, suppress=True)
print("快速模式" if QUICK else "完整模式")

# %% [markdown]
# ## 练习 1：RMSNorm
#
# RMSNorm 只做“除以均方根”这一步：`y = x / √(mean(x²) + eps) · scale`。不减均值，也就没有 `shift`。
# 当一行的均值恰好为 0 时，均方根就是（有偏的）标准差，RMSNorm 与 `scale` 相同、`shift` 为 0 的 LayerNorm 给出同样的结果。

# %%
class RMSNorm(nn.Module):
    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(tt.ones(emb_dim))

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        rms = ((x * x).mean(dim=-1, keepdim=True) + self.eps).sqrt()  # (..., 1)
        return self.scale * x / rms


x = tt.tensor(3 + 2 * np.random.default_rng(0).standard_normal((4, 16)))  # float64，均值约 3
y = RMSNorm(16).double()(x)
rms = np.sqrt((y.data**2).mean(-1))
print("RMSNorm 输出每行的均方根:", rms)
print("RMSNorm 输出每行的均值（没有被拉到 0）:", y.data.mean(-1))
assert np.allclose(rms, 1, atol=1e-5)

x0 = tt.tensor(x.data - x.data.mean(-1, keepdims=True))  # 先把每行的均值减成 0
d = np.abs(RMSNorm(16).double()(x0).data - NM.LayerNorm(16).double()(x0).data).max()
print("均值为 0 的输入上，RMSNorm 与 LayerNorm 的最大差:", d)
assert d < 1e-12

# %% [markdown]
# ## 练习 2：post-norm 与 pre-norm
#
# post-norm 把层归一化放在残差相加之后，残差的“直通路”上每层都隔着一个 LayerNorm；pre-norm 的直通路上什么也没有。
# 在 12 层、随机初始化下比较两件事：每层输出（残差流）的标准差，和各层注意力 `W_query` 的梯度大小。
# 两种结构用同一组权重、同一个输入；“损失”取输出与一个固定随机张量的内积
# （不能用输出的平方和：post-norm 的输出刚经过 LayerNorm，平方和几乎是常数，梯度也就几乎为 0）。

# %%
class PostNormBlock(NM.TransformerBlock):
    """与 TransformerBlock 的参数完全相同，只是层归一化放在残差相加之后。"""

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        x = self.norm1(x + self.drop_shortcut(self.att(x)))
        return self.norm2(x + self.drop_shortcut(self.ff(x)))


cfg = GPTConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=12, drop_rate=0.0)
tt.manual_seed(0)
pre = nn.Sequential(*[NM.TransformerBlock(cfg) for _ in range(cfg.n_layers)]).double()
post = nn.Sequential(*[PostNormBlock(cfg) for _ in range(cfg.n_layers)]).double()
post.load_state_dict(pre.state_dict())
xb = np.random.default_rng(1).standard_normal((2, 8, cfg.emb_dim))
upstream = tt.tensor(np.random.default_rng(2).standard_normal((2, 8, cfg.emb_dim)))
result = {}
for name, net in [("pre-norm", pre), ("post-norm", post)]:
    h, stds = tt.tensor(xb), []
    for block in net:  # 逐层前向，记下每层输出的标准差
        h = block(h)
        stds.append(float(h.data.std()))
    (h * upstream).sum().backward()
    g = [float(np.abs(block.att.W_query.weight.grad.data).mean()) for block in net]
    result[name] = (stds, g)
    print(f"{name}")
    print("   每层输出的标准差:     ", " ".join(f"{v:.2f}" for v in stds))
    print("   每层 W_query 的梯度:  ", " ".join(f"{v:.1e}" for v in g))

# %% [markdown]
# 读数：post-norm 每层的输出都被拉回标准差 1；pre-norm 的残差流一层层累加，标准差随深度变大
# （所以 pre-norm 的模型最后还要一个 `final_norm`）。在随机初始化这一刻，两种结构的梯度都没有消失，
# 浅层与深层在同一个量级。post-norm 的麻烦出现在训练里：它对学习率更敏感，通常离不开学习率预热，
# 层数一多就容易发散——这要真正训练才看得出来，可以用第 5 章的训练循环试一试。

# %%
stds_pre, g_pre = result["pre-norm"]
stds_post, _ = result["post-norm"]
assert max(abs(v - 1) for v in stds_post) < 0.01  # post-norm：每层输出的标准差都是 1
assert stds_pre[-1] > stds_pre[0]  # pre-norm：残差流随深度变大
assert 0.1 < g_pre[0] / g_pre[-1] < 10  # pre-norm：浅层与深层的梯度同一量级

# %% [markdown]
# ## 练习 3：权重共享时的梯度
#
# 共享意味着同一个 `Parameter` 在前向里用了两次，反向时两处的梯度累加到它身上。

# %%
base = GPTConfig(vocab_size=30, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
tied_cfg = GPTConfig(**{**base.to_dict(), "tie_weights": True})
tt.manual_seed(0)
untied = NM.GPTModel(base).double()
untied.out_head.weight.data[...] = untied.tok_emb.weight.data  # 两个矩阵先取相同的值
tied = NM.GPTModel(tied_cfg).double()
state = {k: v.data.copy() for k, v in untied.state_dict().items()}
tied.load_arrays(state)
ids = np.random.default_rng(0).integers(0, 30, size=(2, 6))
for m in (untied, tied):
    F.cross_entropy(m(ids[:, :-1]).reshape(-1, 30), ids[:, 1:].reshape(-1)).backward()
want = untied.tok_emb.weight.grad.data + untied.out_head.weight.grad.data
d = np.abs(tied.tok_emb.weight.grad.data - want).max()
print("共享模型的梯度 与 两处梯度之和 的最大差:", d)
assert d < 1e-12

# %% [markdown]
# ## 练习 4：数一数重算了多少
#
# 不带缓存时，第 i 步（i = 0 … n-1）送进 `P + i` 个词元，共 `nP + n(n-1)/2` 个位置；带缓存时，预填充 P 个，
# 之后 n-1 步各 1 个，共 `P + n - 1` 个（最后一个新词元选出来就结束了，不用再送进去）。

# %%
class CountingModel(NM.GPTModel):
    seen = 0

    def forward(self, idx, cache=None):
        CountingModel.seen += np.asarray(idx).shape[1]
        return super().forward(idx, cache)

    def infer(self, idx, cache=None, last_only=True):
        CountingModel.seen += np.asarray(idx).shape[1]
        return super().infer(idx, cache, last_only)


from gpt_numpy.generate import generate, generate_text_simple  # noqa: E402

small = GPTConfig(vocab_size=30, context_length=64, emb_dim=16, n_heads=2, n_layers=1)
model = CountingModel(small)
model.eval()
P, n = 10, 7
prompt = np.arange(P)[None] % 30
for name, run, formula in [
    ("不带缓存", lambda: generate_text_simple(model, prompt, n, small.context_length), n * P + n * (n - 1) // 2),
    ("带缓存", lambda: generate(model, prompt, n), P + n - 1),
]:
    CountingModel.seen = 0
    run()
    print(f"{name}：送进模型 {CountingModel.seen} 个位置，公式给出 {formula}")
    assert CountingModel.seen == formula

# %% [markdown]
# ## 练习 5：缓存有多大
#
# 每层存 K 和 V 两个 `(B, nh, T, hs)` 的数组，`nh · hs = C`，所以字节数是 `2 · B · L · T · C · 4`（float32）。

# %%
print(f"{'预设':12s}{'KV 缓存（B=1，写满）':>20s}{'float32 权重':>16s}{'缓存/权重':>10s}")
for name in PRESETS:
    c = GPTConfig.preset(name)
    kv = 2 * 1 * c.n_layers * c.context_length * c.emb_dim * 4
    w = c.num_parameters() * 4
    print(f"{name:12s}{kv / 2**20:>18.1f} MiB{w / 2**20:>14.1f} MiB{kv / w:>10.1%}")
    cache = KVCache(c.n_layers, 1, c.n_heads, c.context_length, c.head_dim, np.float32)
    assert sum(a.nbytes for a in cache.keys + cache.values) == kv

# %% [markdown]
# 对一个序列来说，缓存比权重小得多；但缓存随批大小和上下文长度线性增长，同时服务很多个长对话时，
# 它会超过权重本身——这就是推理服务要精打细算缓存内存的原因。
