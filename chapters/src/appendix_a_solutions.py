# %% [markdown]
# # 附录 A 练习答案
#
# 先在附录 A 末尾自己做一遍，再来对照。用到的 `shard_indices` 是正文里页面上写的版本，这里原样再写一遍，
# 好让这个 notebook 单独运行。每道题的最后都有检查，结论不成立时会报错。

# %%
import math
import os
import tempfile

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

import tinytensor as tt

QUICK = os.environ.get("LLMZH_QUICK") == "1"
np.set_printoptions(precision=5, suppress=True, linewidth=100)
print("快速模式" if QUICK else "完整模式")

# %% [markdown]
# ## 练习 1：广播的梯度
#
# 前向时 `bias` 被复制到每一行，每一份都参与了输出；反向时每一份各得到一份上游梯度，
# 它们都要加回到同一个 `bias` 上——所以 `bias.grad` 是上游梯度**沿被广播的维度求和**：形状 (3,) 时对行求和，
# 形状 (2, 1) 时对列求和（保持形状 (2, 1)）。

# %%
rng = np.random.default_rng(0)
a_np = rng.standard_normal((2, 3))
upstream = rng.standard_normal((2, 3))
for bias_np, by_hand in ((rng.standard_normal(3), upstream.sum(axis=0)),
                         (rng.standard_normal((2, 1)), upstream.sum(axis=1, keepdims=True))):
    for name, lib in (("torch", torch), ("tinytensor", tt)):
        bias = lib.tensor(bias_np, requires_grad=True)
        ((lib.tensor(a_np) + bias) * lib.tensor(upstream)).sum().backward()
        got = bias.grad.numpy()
        print(f"bias 形状 {bias_np.shape}，{name:10s}：grad = {got.ravel()}，手算 {by_hand.ravel()}")
        assert got.shape == bias_np.shape and np.allclose(got, by_hand, rtol=0, atol=1e-12)

# %% [markdown]
# ## 练习 2：丢掉零头
#
# `drop_last=True` 时每份取 $\lfloor n/R\rfloor$ 个，打乱后的排列只用前 $R\lfloor n/R\rfloor$ 个，零头被丢掉；
# 否则像正文那样从头重复几个补齐。

# %%
def shard_indices(n: int, num_replicas: int, rank: int, epoch: int = 0, seed: int = 0, shuffle: bool = True,
                  drop_last: bool = False) -> list[int]:
    """正文的 shard_indices，加上 drop_last。"""
    if shuffle:
        g = torch.Generator()
        g.manual_seed(seed + epoch)
        indices = torch.randperm(n, generator=g).tolist()
    else:
        indices = list(range(n))
    if drop_last:
        total = (n // num_replicas) * num_replicas
        indices = indices[:total]  # 丢掉零头
    else:
        total = math.ceil(n / num_replicas) * num_replicas
        indices += indices[: total - n]
    return indices[rank:total:num_replicas]


for R in (3, 4):
    for epoch in (0, 1):
        theirs = []
        for r in range(R):
            sampler = DistributedSampler(range(10), num_replicas=R, rank=r, seed=0, drop_last=True)
            sampler.set_epoch(epoch)
            theirs.append(list(sampler))
        ours = [shard_indices(10, R, r, epoch, drop_last=True) for r in range(R)]
        used = sorted(i for part in ours for i in part)
        print(f"{R} 个进程，第 {epoch} 轮：{ours}，丢掉了 {sorted(set(range(10)) - set(used))}；相同：{ours == theirs}")
        assert ours == theirs

# %% [markdown]
# 补样本让少数样本在一轮里被看两次，丢样本让少数样本这一轮没被看到；每轮打乱的顺序不同，被重复或被丢掉的样本也不同，
# 长期来看两者都无伤大雅。评估时就不一样了：补进来的重复样本会让验证损失略有偏差，所以严格的评估要么用
# 能整除的数据量，要么在汇总时去掉重复的那几个。
#
# ## 练习 3：各进程的词元数不一样时
#
# 设进程 r 有 $n_r$ 个有效词元，损失和为 $S_r$。它算的平均损失是 $S_r/n_r$，DDP 再把梯度平均，等于对
# $\frac1R\sum_r S_r/n_r$ 求导；而全局批次上的平均是 $\sum_r S_r / \sum_r n_r$。两者只在各个 $n_r$ 相等时才相同。
# 修正：每个进程用**损失和**除以**全局的有效词元数**（先用一次 all-reduce 求出 $\sum_r n_r$），再乘 R 抵消 DDP 的 1/R。
# 下面在单进程里模拟两个“进程”（同一个模型的两份梯度，平均就是 DDP 做的事）：

# %%
torch.manual_seed(0)
V, T = 11, 6
head = torch.nn.Linear(4, V).double()
h = torch.randn(2, T, 4, dtype=torch.float64)  # 两个进程各一个序列
targets = torch.randint(0, V, (2, T))
targets[1, 2:] = -100  # 第二个进程的序列后 4 个是填充，只有 2 个有效词元
n_valid = (targets != -100).sum(dim=1)
print("各进程的有效词元数：", n_valid.tolist())


def grad_of(loss_fn) -> torch.Tensor:
    head.zero_grad()
    loss_fn().backward()
    return head.weight.grad.clone()


def ce(rank: int, reduction: str) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(head(h[rank]), targets[rank], ignore_index=-100, reduction=reduction)


R = 2
whole = grad_of(lambda: torch.nn.functional.cross_entropy(head(h).reshape(-1, V), targets.reshape(-1), ignore_index=-100))
naive = sum(grad_of(lambda r=r: ce(r, "mean")) for r in range(R)) / R  # 各自平均，再由 DDP 平均
fixed = sum(grad_of(lambda r=r: ce(r, "sum") / n_valid.sum() * R) for r in range(R)) / R
d_naive = (naive - whole).abs().max().item()
d_fixed = (fixed - whole).abs().max().item()
print(f"各自求平均再平均：与全局平均的梯度最大差 {d_naive:.1e}")
print(f"损失和 ÷ 全局词元数 × R：最大差 {d_fixed:.1e}")
assert d_fixed < 1e-15 < d_naive

# %% [markdown]
# 各自求平均时，只有 2 个有效词元的那个进程，每个词元在梯度里的权重是 1/(2·2) = 1/4，按全局平均本应是 1/8——被放大了一倍；
# 另一个进程的词元则只剩 1/12，比 1/8 小。梯度因此明显偏了；
# 按全局词元数归一化就与整批一致。正文的训练器不受影响：预训练的每个窗口都是满的，各进程的词元数总是相等。
#
# ## 练习 4：数一数通信了几次
#
# DDP 允许给梯度同步换一个自定义的“通信钩子”(comm hook)；我们的钩子只数一数自己被调用了几次，然后原样返回梯度
# （只有 1 个进程，平均就是它本身）。这个小模型的梯度装得进一个桶，所以每次同步正好调用一次钩子。

# %%
with tempfile.TemporaryDirectory() as d:
    dist.init_process_group("gloo", init_method=f"file://{d}/pg", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = DDP(torch.nn.Linear(3, 1))
        calls = [0]

        def counting_hook(state, bucket):
            calls[0] += 1
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        model.register_comm_hook(None, counting_hook)
        xs = torch.randn(4, 2, 3)

        def accumulate(mode: str) -> int:
            calls[0] = 0
            for k in range(4):
                last = k == 3
                if mode == "plain" or last:
                    model(xs[k]).sum().backward()
                elif mode == "no_sync":
                    with model.no_sync():  # 前向和反向都在里面
                        model(xs[k]).sum().backward()
                else:  # 只有反向在 no_sync 里
                    out = model(xs[k])
                    with model.no_sync():
                        out.sum().backward()
            return calls[0]

        counts = {mode: accumulate(mode) for mode in ("plain", "no_sync", "backward_only")}
    finally:
        dist.destroy_process_group()
print("4 个小批次全部正常反向：", counts["plain"], "次")
print("前 3 个在 no_sync() 里（前向 + 反向）：", counts["no_sync"], "次")
print("前 3 个只有反向在 no_sync() 里：", counts["backward_only"], "次")
assert counts["plain"] == 4 and counts["no_sync"] == 1 and counts["backward_only"] == 4

# %% [markdown]
# 只把反向放进 `no_sync()` 没有用：DDP 在**前向**时就读取“这一次要不要同步”的开关并为反向做好准备，
# 前向在 `no_sync()` 之外，反向照样同步。所以 `gpt_torch/train.py` 把前向和反向一起包进去。
#
# ## 练习 5：低精度吃掉的更新
#
# 一步 SGD 的更新量是 lr × 梯度 = 1e-5。一个数加上比它的“最后一位”的一半还小的量，舍入之后不变。
# 逐个试 $2^{-k}$，找出每种格式里 1 加上多小的数仍然不等于 1：

# %%
for dtype in (torch.bfloat16, torch.float16, torch.float32):
    one = torch.tensor(1.0, dtype=dtype)
    k = 0
    while one + torch.tensor(2.0 ** -(k + 1), dtype=dtype) != one:
        k += 1
    updated = torch.tensor(1.0, dtype=dtype) - torch.tensor(1e-3 * 0.01, dtype=dtype)
    print(f"{str(dtype):15s} 最小可加上的 2^-{k} = {2.0 ** -k:.2e}，finfo.eps = {torch.finfo(dtype).eps:.2e}；"
          f"1.0 − 1e-5 = {updated.item():.8f}（{'更新被舍掉了' if updated == 1 else '更新保留下来'}）")
    assert 2.0**-k == torch.finfo(dtype).eps

# %% [markdown]
# `finfo.eps` 正是“1 的下一个数与 1 的距离”。bf16 的 eps 是 2⁻⁷ ≈ 0.0078，fp16 的是 2⁻¹⁰ ≈ 0.001，
# 1e-5 的更新在这两种格式里都被舍掉了；fp32 的 eps 约 1.2e-7，更新得以保留。
# 这就是混合精度训练要把参数（主权重）和优化器状态留在 fp32 的原因：低精度只用来算前向和反向。
