# %% [markdown]
# # 第 5 章 练习答案
#
# 先在第 5 章末尾自己做一遍，再来对照。这里直接用库里的函数（`tinytensor.nn.functional.cross_entropy`、
# `llmcore.sampling`），它们与正文里亲手写的版本已经逐项核对过。每道题的最后都有检查，结论不成立时会报错。

# %%
import math
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from safetensors.numpy import load_file, save_file

import tinytensor as tt
from gpt_numpy import model as NM
from llmcore.batches import eval_batches
from llmcore.config import GPTConfig
from llmcore.datasets import load_default_corpus
from llmcore.plotting import use_cjk_font
from llmcore.sampling import filter_logits, sample_next, softmax
from llmcore.tokenizers import CharTokenizer, get_gpt2_tokenizer
from llmcore.weight_init import init_arrays
from tinytensor.nn import functional as F

use_cjk_font()  # 图里的中文

QUICK = os.environ.get("LLMZH_QUICK") == "1"
np.set_printoptions(precision=4, suppress=True)
print("快速模式" if QUICK else "完整模式")

# %% [markdown]
# ## 练习 1：交叉熵的梯度
#
# 一行的损失是 $\ell = -z_y + \log\sum_j e^{z_j}$，所以 $\partial \ell / \partial z_j = \mathrm{softmax}(z)_j - [j = y]$；
# 对 N 行求平均再除以 N。每行的 softmax 之和为 1、onehot 之和也为 1，所以每行梯度之和为 0：
# 把所有 logits 同时加上一个常数，softmax 不变，损失也不变，沿这个方向的导数自然是 0。

# %%
rng = np.random.default_rng(0)
N, V = 8, 20
z64, y = rng.standard_normal((N, V)) * 3, rng.integers(0, V, size=N)
z = tt.tensor(z64, requires_grad=True)
F.cross_entropy(z, y).backward()
onehot = np.eye(V)[y]
want = (softmax(z64) - onehot) / N
print("自动求导与公式的最大差:", np.abs(z.grad.numpy() - want).max())
print("每行梯度之和:", z.grad.numpy().sum(-1))
assert np.abs(z.grad.numpy() - want).max() < 1e-15
assert np.abs(z.grad.numpy().sum(-1)).max() < 1e-15

# %% [markdown]
# ## 练习 2：换一种分词器，损失还能比吗？
#
# 不能直接比：一个“词元”在两种分词下装的文字不一样多。公平的比法是把总损失摊到同样的单位上——每个汉字：
# 每字损失 = 每词元损失 × 词元数 / 字数。下面对验证集的一段文字，分别用字符级和 GPT-2 BPE 分词，
# 各自拟合一个一元模型（频率来自训练集），再换算成每个字的损失。

# %%
train_text, val_text = load_default_corpus()
n_chars = 20_000 if QUICK else 200_000
tr, va = train_text[:n_chars * 5], val_text[:n_chars]
results = {}
for name, tok in [("字符级", CharTokenizer.train(train_text)), ("GPT-2 BPE", get_gpt2_tokenizer())]:
    tr_ids, va_ids = np.array(tok.encode(tr)), np.array(tok.encode(va))
    counts = np.bincount(tr_ids, minlength=tok.vocab_size) + 0.5
    per_token = float(-np.log(counts[va_ids] / counts.sum()).mean())
    per_char = per_token * len(va_ids) / len(va)
    results[name] = per_char
    print(f"{name:10s} {len(va_ids):>7,} 个词元 / {len(va):,} 个字符 = {len(va_ids) / len(va):.2f}；"
          f"每词元 {per_token:.3f}，每字 {per_char:.3f}")

# %% [markdown]
# GPT-2 的每词元损失更低，是因为它的一个词元常常只是半个汉字的字节，很好猜；换算到每个字之后，才看得出哪个一元模型
# 更能描述这段文字。同样的换算适用于训练好的模型：`--tokenizer=bpe` 训练出的模型，验证损失乘以“词元数 / 字数”再与字符级模型比较。

# %%
assert all(np.isfinite(v) for v in results.values())

# %% [markdown]
# ## 练习 3：温度的两个极限
#
# τ → 0 时，除以 τ 放大了最大的 logit 与其余的差距，分布趋向最大值处的 one-hot（熵 → 0，即贪心）；
# τ → ∞ 时，所有 logits 都被压向 0，分布趋向均匀（熵 → ln V）。熵随 τ 单调增加。

# %%
logits = np.random.default_rng(1).standard_normal(200) * 2  # 一组 logits，V = 200
taus = np.geomspace(0.05, 20, 60)
ent = [float(-(p * np.log(p + 1e-300)).sum()) for p in (softmax(logits[None] / t)[0] for t in taus)]
fig, ax = plt.subplots(figsize=(6, 3))
ax.semilogx(taus, ent)
ax.axhline(math.log(len(logits)), color="gray", ls=":", label="ln V（均匀分布）")
ax.set_xlabel("温度 τ (temperature)")
ax.set_ylabel("熵（奈特）")
ax.set_title("温度越高，下一个词元的分布越平")
ax.legend()
plt.tight_layout()
plt.show()
draws = sample_next(np.tile(logits, (1000, 1)), temperature=0.01, rng=np.random.default_rng(0))
print("τ = 0.01 抽 1000 次，全部等于 argmax:", bool((draws == logits.argmax()).all()))
assert np.all(np.diff(ent) > 0) and ent[0] < 0.01 and abs(ent[-1] - math.log(200)) < 0.01
assert (draws == logits.argmax()).all()

# %% [markdown]
# ## 练习 4：top-p 留下几个？
#
# 按概率从大到小排好，记前 k 个之和为 $S_k$（$S_0 = 0$）。top-p 丢掉“前面已经凑够 p”的词元，即第 k+1 个在
# $S_k \ge p$ 时被丢掉；所以恰好留下 k 个的条件是 $S_{k-1} < p \le S_k$。

# %%
z = np.random.default_rng(2).standard_normal((1, 50)) * 1.5
p_sorted = np.sort(softmax(z)[0])[::-1]
S = np.concatenate([[0.0], np.cumsum(p_sorted)])
eps = 1e-9  # 端点本身要看浮点舍入，取两端往里（或往外）一点点
for k in (1, 3, 5, 10):
    lo, hi = S[k - 1], S[k]
    n_kept = {name: int(np.isfinite(filter_logits(z, top_p=p)).sum())
              for name, p in [("刚过下端", lo + eps), ("刚到上端", hi - eps), ("刚过上端", min(hi + eps, 1.0))]}
    print(f"k = {k:>2}：p ∈ ({lo:.4f}, {hi:.4f}]；留下的个数", n_kept)
    assert n_kept["刚过下端"] == n_kept["刚到上端"] == k and n_kept["刚过上端"] == k + 1

# %% [markdown]
# ## 练习 5：存成 float16
#
# float16 每个数 2 字节，文件约为 float32 的一半；它只有 10 位尾数（约 3 位有效数字），读回来后 logits 会有一点误差。
# 这里用一个按 GPT-2 方式随机初始化的 tiny 模型（正文 5.4 节训练出的模型也可以照做），在验证集的几个批次上比较。

# %%
tok = CharTokenizer.train(train_text)
cfg = GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=64)
model = NM.GPTModel(cfg)
model.load_arrays(init_arrays({k: v.shape for k, v in model.state_dict().items()}, cfg, 0, "gpt2"))
model.eval()
work = Path(tempfile.mkdtemp(prefix="llmzh-ch05-sol-"))
arrays = model.state_arrays()
save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(work / "fp32.safetensors"))
save_file({k: v.astype(np.float16) for k, v in arrays.items()}, str(work / "fp16.safetensors"))
size32, size16 = (work / "fp32.safetensors").stat().st_size, (work / "fp16.safetensors").stat().st_size
print(f"float32 {size32 / 2**20:.2f} MiB，float16 {size16 / 2**20:.2f} MiB，比值 {size16 / size32:.3f}")

half = NM.GPTModel(cfg)
half.load_arrays({k: v.astype(np.float32) for k, v in load_file(str(work / "fp16.safetensors")).items()})
half.eval()
batches = eval_batches(np.array(tok.encode(val_text[:50_000])), n_batches=2, batch_size=4, context_length=64)
with tt.no_grad():
    d = max(float(np.abs(model(x).data - half(x).data).max()) for x, _ in batches)
    losses = [np.mean([F.cross_entropy(m(x).reshape(-1, cfg.vocab_size), y.reshape(-1)).item() for x, y in batches])
              for m in (model, half)]
print(f"logits 的最大差 {d:.1e}；验证损失 float32 {losses[0]:.6f}，float16 {losses[1]:.6f}，差 {abs(losses[0] - losses[1]):.1e}")
assert 0.45 < size16 / size32 < 0.55 and abs(losses[0] - losses[1]) < 1e-2
