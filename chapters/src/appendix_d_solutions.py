# %% [markdown]
# # 附录 D 练习答案
#
# 先在附录 D 末尾自己做一遍，再来对照。正文里页面上写的三个实现（`warmup_cosine`、`clip_grad_norm_numpy`、
# `AdamWNumpy`）这里原样再写一遍，好让这个 notebook 单独运行。每道题的最后都有检查，结论不成立时会报错。

# %%
import math
import os
import warnings

import numpy as np
import torch

import tinytensor as tt
from gpt_numpy.model import GPTModel
from llmcore.config import GPTConfig, TrainConfig
from tinytensor.nn import functional as F

QUICK = os.environ.get("LLMZH_QUICK") == "1"
np.set_printoptions(precision=4, suppress=True, linewidth=110)
print("快速模式" if QUICK else "完整模式")


def warmup_cosine(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """附录 D.1：线性预热，再按余弦降到 min_lr。"""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    p = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * p))


class AdamWNumpy:
    """附录 D.3：AdamW，按公式逐行写；bias_correction=False 时去掉偏差修正（练习 3 用）。"""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, bias_correction=True):
        self.params, self.lr, self.betas, self.eps, self.weight_decay = params, lr, betas, eps, weight_decay
        self.bias_correction = bias_correction
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        beta1, beta2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            p *= 1 - self.lr * self.weight_decay
            m[...] = beta1 * m + (1 - beta1) * g
            v[...] = beta2 * v + (1 - beta2) * g * g
            if self.bias_correction:
                m_hat, v_hat = m / (1 - beta1**self.t), v / (1 - beta2**self.t)
            else:
                m_hat, v_hat = m, v
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# %% [markdown]
# ## 练习 1：用 PyTorch 自带的调度器拼出同一条曲线
#
# `LinearLR` 在第 $s$ 步把学习率乘以从 `start_factor` 线性变到 `end_factor` 的系数，`total_iters` 步后到达终点。
# `warmup_cosine` 第 0 步是 `lr / W`，第 `W-1` 步到达 `lr`（W 为预热步数），所以 `start_factor = 1/W`、
# `total_iters = W - 1`。之后交给 `CosineAnnealingLR(T_max = N - W, eta_min = min_lr)`，
# `SequentialLR` 在第 W 步（`milestones=[W]`）从前者切换到后者。

# %%
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

dft = TrainConfig()  # 默认任务的调度
LR, W, N, MIN_LR = dft.lr, dft.warmup_steps, dft.max_steps, dft.min_lr
print(f"峰值 {LR:g}，预热 {W} 步，共 {N} 步，退火到 {MIN_LR:g}")
opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
warm = LinearLR(opt, start_factor=1 / W, end_factor=1.0, total_iters=W - 1)
cos = CosineAnnealingLR(opt, T_max=N - W, eta_min=MIN_LR)
sched = SequentialLR(opt, [warm, cos], milestones=[W])
got = []
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # 部分 torch 版本会对 SequentialLR 内部调用 step 的方式发出提示
    for s in range(N + 50):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
got = np.array(got)
ref = np.array([warmup_cosine(s, LR, W, N, MIN_LR) for s in range(N + 50)])
inside = np.abs(got[:N + 1] - ref[:N + 1]).max()
print(f"第 0…{N} 步的最大差：{inside:.1e}")
for s in (0, 1, W - 1, W, N - 1, N, N + 10, N + 49):
    print(f"    第 {s:>4} 步  torch 拼出来的 {got[s]:.6e}   warmup_cosine {ref[s]:.6e}")
assert inside < 1e-15

# %% [markdown]
# 在计划的 N 步之内两者只差舍入；超出 N 步以后就分开了：`CosineAnnealingLR` 的余弦是周期的，过了谷底又往回升，
# 而 `warmup_cosine` 停在 `min_lr`。训练器允许在续训时加大 `max_steps`，所以“超出之后保持不变”是有用的约定。

# %%
assert got[N + 49] > ref[N + 49] * 1.01 and ref[N + 49] == MIN_LR

# %% [markdown]
# ## 练习 2：按最大元素裁剪
#
# ∞-范数是所有元素绝对值的最大值。把它加进页面上的函数：

# %%
def clip_grad_norm_numpy(grads: list[np.ndarray], max_norm: float, norm_type: float = 2.0) -> float:
    """norm_type 为 2（默认）或 float("inf")。"""
    if norm_type == float("inf"):
        total = max(float(np.abs(g).max()) for g in grads)
    else:
        total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total


rng = np.random.default_rng(0)
grads = [rng.standard_normal(sh) for sh in [(20, 10), (10,), (5, 5, 4)]]
for norm_type in (2.0, float("inf")):
    mine = [g.copy() for g in grads]
    p_tt = [tt.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    p_torch = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(p_tt, grads):
        p.grad = tt.tensor(g.copy())
    for p, g in zip(p_torch, grads):
        p.grad = torch.from_numpy(g.copy())
    n_mine = clip_grad_norm_numpy(mine, 1.0, norm_type)
    n_tt = tt.nn.utils.clip_grad_norm_(p_tt, 1.0, norm_type=norm_type).item()
    n_torch = torch.nn.utils.clip_grad_norm_(p_torch, 1.0, norm_type=norm_type).item()
    d_tt = max(np.abs(a - p.grad.data).max() for a, p in zip(mine, p_tt))
    d_torch = max(np.abs(a - p.grad.numpy()).max() for a, p in zip(mine, p_torch))
    print(f"norm_type={norm_type}：总范数 页面 {n_mine:.6f}，tinytensor {n_tt:.6f}，torch {n_torch:.6f}；"
          f"裁剪后梯度的最大差 {d_tt:.1e} / {d_torch:.1e}")
    assert abs(n_mine - n_tt) < 1e-12 and abs(n_mine - n_torch) < 1e-12 and max(d_tt, d_torch) < 1e-15

# %% [markdown]
# 三者一致。同一组梯度，∞-范数（最大的一个元素）不会超过 2-范数（所有元素平方和的平方根），
# 所以上限相同时 2-范数先触发裁剪：上面那组 310 个元素的梯度（下面打印两种范数），2-范数是 ∞-范数的好几倍。
# ∞-范数只看最极端的一个数，一个元素异常就会把所有梯度一起缩小；2-范数看的是整体的大小。

# %%
l2 = clip_grad_norm_numpy([g.copy() for g in grads], 1e9)
linf = clip_grad_norm_numpy([g.copy() for g in grads], 1e9, float("inf"))
print(f"2-范数 {l2:.3f}，∞-范数 {linf:.3f}，比值 {l2 / linf:.2f}")
assert linf <= l2

# %% [markdown]
# ## 练习 3：去掉偏差修正
#
# 梯度恒为 $g$ 时，$m_t = (1-\beta_1^t)\,g$，$v_t = (1-\beta_2^t)\,g^2$。不修正，第 $t$ 步的更新量是
# $\text{lr}\cdot(1-\beta_1^t)/\sqrt{1-\beta_2^t}$（忽略 ε）：第 1 步就是 $0.1/\sqrt{0.001} \approx 3.16$ 个学习率。
# 用页面上的实现（关掉修正与权重衰减）逐步量一量：

# %%
steps = 6000
opt_raw = AdamWNumpy([np.zeros(1)], lr=1.0, weight_decay=0.0, bias_correction=False)
opt_fix = AdamWNumpy([np.zeros(1)], lr=1.0, weight_decay=0.0)
moves_raw, moves_fix = [], []
for _ in range(steps):
    before_raw, before_fix = opt_raw.params[0].copy(), opt_fix.params[0].copy()
    opt_raw.step([np.array([0.5])])
    opt_fix.step([np.array([0.5])])
    moves_raw.append(float(before_raw[0] - opt_raw.params[0][0]))  # 这一步走了几个学习率（lr = 1）
    moves_fix.append(float(before_fix[0] - opt_fix.params[0][0]))
moves_raw = np.array(moves_raw)
t = np.arange(1, steps + 1)
formula = (1 - 0.9**t) / np.sqrt(1 - 0.999**t)
peak = int(np.argmax(moves_raw))
back = int(np.flatnonzero(moves_raw > 1.01)[-1]) + 2  # 之后每一步都在 1% 以内
print(f"不修正：第 1 步走了 {moves_raw[0]:.3f} 个学习率，最多 {moves_raw[peak]:.3f} 个（第 {peak + 1} 步），"
      f"从第 {back} 步起才回到 1% 以内")
print(f"修正后：每一步都走 {min(moves_fix):.6f}…{max(moves_fix):.6f} 个学习率")
print(f"与公式 (1-β₁ᵗ)/√(1-β₂ᵗ) 的最大相对差：{np.abs(moves_raw / formula - 1).max():.1e}")
assert abs(moves_raw[0] - 0.1 / math.sqrt(0.001)) < 1e-5 and back > 3000 and abs(max(moves_fix) - 1) < 1e-6

# %% [markdown]
# 没有修正时，分母里的 $\sqrt{1-\beta_2^t}$ 比分子里的 $1-\beta_1^t$ 慢得多地趋于 1，
# 所以开头一百来步的步子是一个学习率的三到六倍多，几千步之后才回到一个学习率——大步子恰好落在训练最不稳定的阶段。
# 偏差修正让每一步都是一个学习率。
#
# ## 练习 4：Adam 的 L2 与 AdamW 的解耦衰减
#
# 梯度恒为 0，只剩权重衰减。AdamW 每步把参数乘以 $1-\text{lr}\cdot\lambda$，与参数大小无关；
# Adam 的 L2 把 $\lambda p$ 当成梯度，再被 $\sqrt{\hat v}$ 归一化——每步大约走一个学习率，不管参数是大是小。

# %%
LR_DECAY, WD = 1e-3, 0.1
init = np.array([0.01, 1.0, 100.0])
results = {}
for name, cls in (("Adam (L2)", tt.optim.Adam), ("AdamW", tt.optim.AdamW)):
    p = tt.tensor(init.copy(), requires_grad=True)
    opt = cls([p], lr=LR_DECAY, weight_decay=WD)
    for _ in range(100):
        p.grad = tt.zeros(3, dtype=tt.float64)
        opt.step()
    results[name] = p.data / init
    print(f"{name:10s} 100 步后 参数 / 初值 = {results[name]}")
print(f"AdamW 的理论值 (1 - lr·λ)^100 = {(1 - LR_DECAY * WD) ** 100:.6f}")
assert np.allclose(results["AdamW"], (1 - LR_DECAY * WD) ** 100, rtol=1e-12)
assert results["Adam (L2)"][2] > results["AdamW"][2] and results["Adam (L2)"][1] < results["AdamW"][1]

# %% [markdown]
# AdamW 让三个参数缩小同样的比例。Adam 的 L2 则每步大约减去一个学习率：初值 100 的参数 100 步只少了 0.1，几乎没动；
# 初值 1 的少了约 10%；初值 0.01 的被一路拉到 0 附近，只剩初值的千分之几。也就是说，L2 正则在 Adam 里起不到
# “越大的权重拉得越狠”的作用——这正是 AdamW 把衰减从梯度里拿出来的原因。
#
# ## 练习 5：小批次不一样大的梯度累积
#
# 交叉熵对每个小批次里的词元求平均。小批次 $j$ 有 $n_j$ 个词元，整批有 $N=\sum_j n_j$ 个，整批的损失是
# $\frac1N\sum_j n_j L_j$，所以第 $j$ 个小批次的损失该乘 $n_j/N$，而不是 $1/k$。小批次一样大时两者相同。
# 用一个很小的 GPT（float64）验证：10 个序列分成 4 + 4 + 2。

# %%
cfg = GPTConfig.preset("tiny", vocab_size=50, n_layers=1, emb_dim=16, n_heads=2, context_length=8, drop_rate=0.0)
rng = np.random.default_rng(1)
x = rng.integers(0, 50, size=(10, 8))
y = rng.integers(0, 50, size=(10, 8))
sizes = [4, 4, 2]


def grads_with(scales: list[float] | None) -> dict[str, np.ndarray]:
    """scales 为 None：整批一次反向；否则按 sizes 切成小批次，各乘对应的系数再反向、累加。"""
    tt.manual_seed(0)
    model = GPTModel(cfg).double()
    if scales is None:
        F.cross_entropy(model(x).reshape(-1, 50), y.reshape(-1)).backward()
    else:
        bounds = np.cumsum([0, *sizes])
        for (a, b), scale in zip(zip(bounds[:-1], bounds[1:]), scales):
            loss = F.cross_entropy(model(x[a:b]).reshape(-1, 50), y[a:b].reshape(-1))
            (loss * scale).backward()
    return {n: p.grad.data.copy() for n, p in model.named_parameters()}


full = grads_with(None)
k = len(sizes)
for label, scales in (("每个乘 1/k", [1 / k] * k), ("每个乘 n_j/N", [n / sum(sizes) for n in sizes])):
    g = grads_with(scales)
    diff = max(np.abs(g[n] - full[n]).max() for n in full)
    print(f"{label:12s} 与整批梯度的最大差 {diff:.1e}")
    results[label] = diff
assert results["每个乘 n_j/N"] < 1e-12 < results["每个乘 1/k"]

# %% [markdown]
# 乘 1/k 时，最后那个只有 2 个序列的小批次被放大了一倍多，梯度明显偏了；按词元数加权就与整批完全一致（只差 float64 的舍入）。
# 同样的道理也适用于带 padding 的批次（比如指令微调里被 `ignore_index` 忽略的词元）：要按真正参与损失的词元数加权。
