# %% [markdown]
# # 自动求导的内部：从一个标量到 tinytensor
#
# 训练神经网络，说到底只做一件事：算出损失对每个参数的导数，然后沿着导数的反方向挪一小步。
# 参数有上亿个，手推导数显然不现实；PyTorch 的 `loss.backward()` 一行就替我们做完了。
# 这一章把这行代码拆开，看它里面到底发生了什么。
#
# 本书的 NumPy 轨道用的是我们自己写的自动求导引擎 `tinytensor`。它的 API 与 PyTorch 同名，
# 整个引擎只有几千行 Python，每一处都可以打开来读。本章沿着下面这条路走：
#
# 1. 用几十行代码写一个**标量**自动求导：每个数记住自己是怎么来的，并带一个“把梯度往回传”的闭包；
# 2. 从标量走到**张量**：tinytensor 的 `Tensor`、`Function` 与 `ctx.save_for_backward`；
# 3. **拓扑排序**：反向传播按什么顺序走，为什么必须写成迭代而不是递归；
# 4. **广播**与它的梯度归约：一个偏置被加到每一行上，它的梯度就要把每一行加起来；
# 5. 逐个**推导算子的反向**：矩阵乘、softmax、交叉熵（结果是 $p - \text{onehot}$）、层归一化，每一个都用数值验证；
# 6. **有限差分检查**：为什么必须在 float64 下做，float32 为什么不行；
# 7. 与 **PyTorch 并排对照**：同一个模型、同样的权重，损失与每个梯度逐项对得上；
# 8. 用 `tinytensor.viz` **看见反向传播**：计算图的文本树与每个节点的梯度范数；
# 9. 为了速度而写的 **numba 内核**：融合算子、NumPy 参考实现、`cache=True`、不用闭包、`prange` 的归属规则，
#    以及为什么 `tanh`、`exp` 留在 NumPy 里算。
#
# 本章的代码单元都可以直接运行；设置环境变量 `LLMZH_QUICK=1` 时，计时部分会缩小规模（测试就是这样跑的）。

# %%
import inspect
import math
import os
import sys
import time

import numpy as np
import torch

import tinytensor as tt
import tinytensor.composed as twin  # 融合算子由基本算子拼出来的“孪生”版本
import tinytensor.nn.functional as F
from tinytensor import viz

QUICK = os.environ.get("LLMZH_QUICK") == "1"
np.set_printoptions(precision=5, suppress=True, linewidth=100)
print("快速模式" if QUICK else "完整模式", "| numpy", np.__version__, "| torch", torch.__version__)

# %% [markdown]
# ## 1. 一个会求导的标量
#
# ### 1.1 链式法则就是全部秘密
#
# 设损失 $L$ 经由中间量 $y$ 依赖于 $x$。链式法则 (chain rule) 说
#
# $$\frac{\partial L}{\partial x} = \frac{\partial L}{\partial y}\cdot\frac{\partial y}{\partial x}.$$
#
# 右边两项的角色很不一样：$\partial L/\partial y$ 是从“下游”传回来的**上游梯度** (upstream gradient)，
# $\partial y/\partial x$ 是 $y$ 这一步运算自己的**局部导数** (local derivative)。每一种运算只需要知道自己的局部导数，
# 就能把上游梯度乘一下、继续往回传——这就是反向传播 (backpropagation) 的全部机制。
#
# 还有一条同样重要的规则：如果 $x$ 通过好几条路径影响 $L$（比如 $y = x + x$，或者 $x$ 被两个不同的运算用到），
# 那么各条路径的贡献**相加**：
#
# $$\frac{\partial L}{\partial x} = \sum_{\text{路径 } k} \frac{\partial L}{\partial y_k}\cdot\frac{\partial y_k}{\partial x}.$$
#
# 落到代码上，这条规则就是一个 `+=`。
#
# ### 1.2 `Value`：几十行的自动求导
#
# 下面的 `Value` 包着一个浮点数，另外记三样东西：它由哪些值算出来（`_parents`，用元组，顺序确定），
# 算它的是什么运算（`_op`，只为了打印），以及一个闭包 `_backward`：在 `self.grad` 已经算好之后，
# 把它乘上局部导数、**累加**到父节点的 `grad` 上。闭包在前向时创建，它“记住”了前向的输入和输出，
# 反向时正好用得上。

# %%
class Value:
    """一个标量，记住自己是怎么算出来的，并能把梯度传回给输入。"""

    def __init__(self, data, parents=(), op=""):
        self.data = float(data)
        self.grad = 0.0
        self._parents = parents          # 元组：父节点的顺序固定，梯度求和的顺序也就固定
        self._op = op
        self._backward = lambda: None    # 叶子节点没有可以往回传的东西

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")
        def _backward():                 # d(a+b)/da = 1, d(a+b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")
        def _backward():                 # d(ab)/da = b, d(ab)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def __pow__(self, k):                # k 是普通的数
        out = Value(self.data ** k, (self,), f"**{k}")
        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,), "tanh")
        def _backward():                 # d tanh(a)/da = 1 - tanh(a)^2：直接用前向的结果 t
            self.grad += (1 - t * t) * out.grad
        out._backward = _backward
        return out

    __radd__ = __add__
    __rmul__ = __mul__
    def __neg__(self): return self * -1
    def __sub__(self, other): return self + (-other)
    def __rsub__(self, other): return (-self) + other
    def __truediv__(self, other): return self * (other if isinstance(other, Value) else Value(other)) ** -1
    def __repr__(self): return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    def backward(self):
        order, seen = [], set()
        def visit(v):                    # 递归的深度优先后序遍历：父节点先于子节点进入 order
            if id(v) not in seen:
                seen.add(id(v))
                for p in v._parents:
                    visit(p)
                order.append(v)
        visit(self)
        self.grad = 1.0                  # dL/dL = 1
        for v in reversed(order):        # 从输出往输入走：轮到 v 时，用到 v 的节点都已经把梯度传给它了
            v._backward()

# %% [markdown]
# 用它算一个“神经元”：$o = \tanh(x_1 w_1 + x_2 w_2 + b)$，然后反向。

# %%
x1, x2 = Value(2.0), Value(-1.0)
w1, w2, b = Value(-0.5), Value(1.5), Value(0.8)
o = (x1 * w1 + x2 * w2 + b).tanh()
o.backward()
for name, v in [("x1", x1), ("x2", x2), ("w1", w1), ("w2", w2), ("b", b), ("o", o)]:
    print(f"{name:>2} = {v}")

# %% [markdown]
# 手算检查一下：$n = x_1 w_1 + x_2 w_2 + b = -1.7$，$\partial o/\partial n = 1 - \tanh^2 n$，
# 于是 $\partial o/\partial w_1 = (1 - \tanh^2 n)\, x_1$。也可以完全不动脑子，
# 用**中心差分** $\big(f(w_1 + h) - f(w_1 - h)\big)/2h$ 去近似它（第 6 节会细说这个办法）：

# %%
def neuron(w1_value):
    return math.tanh(2.0 * w1_value + (-1.0) * 1.5 + 0.8)

n = 2.0 * -0.5 + (-1.0) * 1.5 + 0.8
h = 1e-6
print("手推公式:", (1 - math.tanh(n) ** 2) * 2.0)
print("中心差分:", (neuron(-0.5 + h) - neuron(-0.5 - h)) / (2 * h))
print("Value   :", w1.grad)

# %% [markdown]
# 再看“多条路径相加”。$b = a + a$ 里 $a$ 出现了两次，$\partial b/\partial a = 2$；
# $c = b \cdot a$ 又让 $a$ 多了一条路径。把 `_backward` 里的 `+=` 换成 `=`，第二条路径的贡献就会把第一条覆盖掉——
# 这是手写自动求导最常见的错误。

# %%
a = Value(3.0)
b_ = a + a
c = b_ * a            # c = 2a², dc/da = 4a = 12
c.backward()
print("dc/da =", a.grad, "（应为 12）")

# %% [markdown]
# 最后，同一个神经元交给 PyTorch 算一遍。PyTorch 做的是完全相同的事，只是每个节点是一个张量而不是一个数：

# %%
tx1, tx2 = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
tw1, tw2, tb = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (-0.5, 1.5, 0.8))
to = torch.tanh(tx1 * tw1 + tx2 * tw2 + tb)
to.backward()
print("PyTorch:", tw1.grad.item(), tw2.grad.item(), tb.grad.item())
print("Value  :", w1.grad, w2.grad, b.grad)

# %% [markdown]
# ## 2. 从标量到张量：`Tensor` 与 `Function`
#
# `Value` 把每一个数都做成一个 Python 对象。一个 $768 \times 768$ 的矩阵乘就有几十万个乘法，
# 每个乘法一个对象、一个闭包，慢得没法用。解决办法是把“节点”的粒度提到**整个数组**：
# 一次矩阵乘、一次 softmax 就是计算图里的一个节点，节点内部的数值计算交给 NumPy。
#
# 粒度变了，局部导数也跟着变：$\mathbf{y} = f(\mathbf{x})$ 的局部导数是一个雅可比矩阵 (Jacobian)
# $J_{ij} = \partial y_i / \partial x_j$。但我们从来不需要把它造出来——反向传播只需要**向量-雅可比积**
# (vector-Jacobian product, VJP)：给定上游梯度 $\mathbf{g} = \partial L/\partial \mathbf{y}$，算出
#
# $$\frac{\partial L}{\partial x_j} = \sum_i g_i\, J_{ij}, \qquad \text{即}\ \ \bar{\mathbf{x}} = J^\top \mathbf{g}.$$
#
# 对逐元素运算，$J$ 是对角阵，VJP 就是逐元素相乘；对 softmax、矩阵乘这样的运算，第 5 节会看到
# VJP 总能写成几次数组运算，根本不用碰 $J$ 本身（它可能有 $T^2$ 甚至更多个元素）。
#
# ### 2.1 一个算子 = 一个类
#
# tinytensor 里每个算子是 `Function` 的一个子类，`forward` 与 `backward` 写在一起，
# 公式和导数写在文档字符串里。看一下乘法：

# %%
print(inspect.getsource(tt.ops.elementwise.Mul))

# %% [markdown]
# `forward(ctx, a, b)` 只处理 NumPy 数组。`ctx` 是这个节点自己（`Function` 的实例），
# `ctx.save_for_backward(a, b)` 把反向要用的数组存起来——**它存了什么，就决定了训练时要多占多少内存**。
# `ctx.needs_input_grad` 告诉 `backward` 哪些输入需要梯度，用不上的就不算。
#
# 把数组包成节点的是 `Function.apply`：跑前向，如果有输入需要梯度，就把节点挂到输出张量的 `_ctx` 上：

# %%
print(inspect.getsource(tt.autograd.Function.apply))

# %% [markdown]
# 于是每个非叶子张量都能顺着 `grad_fn`（即 `_ctx`）找到产生它的算子，再顺着 `parents` 找到输入——
# 这就是计算图 (computational graph)。

# %%
tt.manual_seed(0)
a = tt.randn(2, 3, requires_grad=True)
w = tt.randn(3, requires_grad=True)
y = (a * w).sum()
print("y.grad_fn          :", y.grad_fn.name)
print("它的输入            :", [p.grad_fn.name if p.grad_fn else "叶子" for p in y.grad_fn.parents])
mul = y.grad_fn.parents[0].grad_fn
print("Mul 保存的数组形状   :", [s.shape for s in mul.saved_tensors])
print("Mul 的输入需要梯度吗 :", mul.needs_input_grad)
print("a 是叶子吗          :", a.is_leaf, "| y 是叶子吗:", y.is_leaf)

# %% [markdown]
# ### 2.2 自己写一个算子
#
# 写一个 SiLU（也叫 swish）：$y = x\,\sigma(x)$，$\sigma$ 是 sigmoid。由乘法法则和 $\sigma' = \sigma(1-\sigma)$，
#
# $$\frac{dy}{dx} = \sigma(x) + x\,\sigma(x)\big(1 - \sigma(x)\big).$$
#
# 前向时把 $x$ 和 $\sigma(x)$ 存下来，反向时就不必重算。

# %%
class SiLU(tt.autograd.Function):
    """y = x·σ(x)；dy/dx = σ + x·σ·(1-σ)。"""

    @staticmethod
    def forward(ctx, x):
        s = 1.0 / (1.0 + np.exp(-x))
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * (s + x * s * (1 - s))


x = tt.randn(4, 5, dtype=tt.float64, requires_grad=True)
print("gradcheck:", tt.gradcheck(lambda x: SiLU.apply(x), [x]))

xt = torch.tensor(x.detach().numpy(), requires_grad=True)
torch.nn.functional.silu(xt).sum().backward()
x.grad = None                     # gradcheck 刚才也做过一次反向，先清掉累加的梯度
SiLU.apply(x).sum().backward()
print("与 torch.nn.functional.silu 的梯度最大差:", np.abs(x.grad.numpy() - xt.grad.numpy()).max())

# %% [markdown]
# `tt.gradcheck` 用数值差分检查我们手写的 `backward`，第 6 节再讲它的原理。
#
# ### 2.3 用过一次就释放
#
# 反向传播结束时，每个节点保存的数组都被释放（`ctx.release()`），否则一整步训练的中间结果会一直占着内存。
# 因此同一张图不能反向两次，除非第一次就说明要保留它——与 PyTorch 的行为、甚至报错的意思都一样：

# %%
a = tt.tensor([1.0, 2.0, 3.0], requires_grad=True)
y = (a * a).sum()
y.backward()
try:
    y.backward()
except RuntimeError as e:
    print("第二次反向:", e)

y = (a * a).sum()
a.grad = None
y.backward(retain_graph=True)
y.backward()                      # 图还在；梯度在 .grad 里累加
print("两次反向后 a.grad =", a.grad.numpy(), "（= 2 × 2a，所以每步训练前要 zero_grad）")

# %% [markdown]
# ## 3. 拓扑排序：反向按什么顺序走
#
# ### 3.1 为什么要排序
#
# 一个节点调用自己的 `_backward` 时，它的 `grad` 必须已经**收齐**了所有下游的贡献；否则它会把一个不完整的梯度传下去。
# 满足这个条件的顺序，就是把计算图做拓扑排序 (topological sort) 再倒过来走。
#
# 凭直觉写一个“从输出开始广度优先”的顺序，在简单的图上看不出问题，遇到长短两条路径汇合时就错了。
# 下面的图里，$u = x^2$ 既直接进入 $L$，又经过一条三步的长链进入 $L$：

# %%
def backward_bfs(root):
    """错误示范：按广度优先的顺序调用 _backward（每个节点只调用一次）。"""
    root.grad = 1.0
    queue, seen = [root], {id(root)}
    while queue:
        v = queue.pop(0)
        v._backward()
        for p in v._parents:
            if id(p) not in seen:
                seen.add(id(p))
                queue.append(p)


def make_graph():
    x = Value(1.5)
    u = x * x                      # u 有两个使用者：L 本身和长链的起点
    chain = ((u * 2) * 2) * 2
    return x, u + chain            # L = u + 8u = 9x²，dL/dx = 18x = 27


x, L = make_graph()
backward_bfs(L)
print("广度优先 :", x.grad)
x, L = make_graph()
L.backward()
print("拓扑排序 :", x.grad, "（正确答案 27）")

# %% [markdown]
# 广度优先先到达 $u$（距离 1），于是 $u$ 在长链的贡献（距离 4）到达之前就把梯度传给了 $x$。
#
# ### 3.2 为什么必须是迭代的
#
# `Value.backward` 里的 `visit` 是递归的，图有多深，递归就有多深。Python 默认的递归上限只有一千层（IPython 内核里放宽到三千），
# 而一个 GPT 的计算图轻易就有几千个节点串成的链（每层十几个算子，再乘以层数，反向时还要走一遍）。

# %%
print("Python 递归上限:", sys.getrecursionlimit())
v = Value(0.5)
deep = v
for _ in range(10_000):
    deep = deep * 1.0001
try:
    deep.backward()
except RecursionError as e:
    print("一万层深的链 -> RecursionError:", e)

# %% [markdown]
# tinytensor 的拓扑排序用一个显式的栈代替调用栈。栈里的每一项带一个标记：`False` 表示“第一次见到，先把父节点压栈”，
# `True` 表示“父节点都处理完了，可以输出自己”——这正是递归后序遍历的迭代写法：

# %%
print(inspect.getsource(tt.autograd._toposort))

# %%
x = tt.tensor([0.5, -0.3], requires_grad=True)
y = x
for _ in range(10_000):
    y = y * 1.0001
y.sum().backward()
print("tinytensor：一万层的链反向成功，x.grad =", x.grad.numpy(), "≈ 1.0001^10000 =", 1.0001 ** 10_000)

# %% [markdown]
# 顺带一提两个细节。第一，父节点存成元组、`visited` 只用来去重，遍历顺序完全由图的结构决定，
# 所以多个梯度相加的顺序每次都一样，同一个计算反向两次得到**逐位相同**的结果（浮点加法不满足结合律，顺序一变，末位就可能不同）。
# 第二，遍历只沿着 `requires_grad=True` 的父节点走，输入数据、常数这些分支根本不进入排序。
#
# ## 4. 广播与梯度归约
#
# ### 4.1 一个偏置，被用了很多次
#
# `x + b`，`x` 形状 `(B, C)`，`b` 形状 `(C,)`。NumPy 和 PyTorch 的广播 (broadcasting) 规则：
# 形状右对齐，左边补 1，长度为 1 的维度被“复制”到对方的长度。于是 `b` 的每个元素被用了 `B` 次。
# 根据第 1 节“多条路径相加”的规则，`b` 的梯度就是这 `B` 份贡献之和：
#
# $$\frac{\partial L}{\partial b_j} = \sum_{i=1}^{B} \frac{\partial L}{\partial y_{ij}}.$$
#
# 一般地，广播做了两件事，反向就对应地做两次求和：
#
# 1. 在左边补出的维度：对这些维度求和，把它们消掉；
# 2. 原来长度为 1、被拉长了的维度：在这些维度上求和并保留维度（`keepdims=True`）。
#
# ### 4.2 只在一个地方归约
#
# tinytensor 的每个二元算子在 `backward` 里只给出“广播后形状”的梯度，比如 `Add.backward` 就是 `return g, g`；
# 把梯度归约回输入形状只在引擎的一个函数里做，做完还检查形状——所有算子共用这一处，就不会有哪个算子忘了归约：

# %%
print(inspect.getsource(tt.autograd.unbroadcast))

# %% [markdown]
# ### 4.3 一个完整的例子
#
# `a` 形状 `(2, 1, 4)`，`c` 形状 `(3, 1)`，乘积形状 `(2, 3, 4)`。`c` 的梯度要先消掉补出的第 0 维，再把被拉长的最后一维加起来：

# %%
a_np = np.arange(8, dtype=np.float64).reshape(2, 1, 4)
c_np = np.array([[1.0], [2.0], [3.0]])
g = np.ones((2, 3, 4))                         # 取 L = sum(a * c)，上游梯度全是 1

gc = g * a_np                                  # Mul.backward 给出的“广播后”梯度：g * a，形状 (2, 3, 4)
step1 = gc.sum(axis=0)                         # 第 1 步：消掉左边补出的维度 -> (3, 4)
step2 = step1.sum(axis=1, keepdims=True)       # 第 2 步：原来长度为 1 的维度求和 -> (3, 1)
print("广播后的梯度", gc.shape, "-> 消掉前导维", step1.shape, "-> 归约长度 1 的维", step2.shape)
print("手算 dL/dc =", step2.ravel(), "   unbroadcast:", tt.autograd.unbroadcast(gc, (3, 1)).ravel())

a = tt.tensor(a_np, requires_grad=True)
c = tt.tensor(c_np, requires_grad=True)
(a * c).sum().backward()
at = torch.tensor(a_np, requires_grad=True)
ct = torch.tensor(c_np, requires_grad=True)
(at * ct).sum().backward()
print("tinytensor: c.grad =", c.grad.numpy().ravel(), " a.grad 形状", a.grad.shape)
print("PyTorch   : c.grad =", ct.grad.numpy().ravel(), " a.grad 形状", tuple(at.grad.shape))

# %% [markdown]
# 注意 `a.grad` 的形状是 `(2, 1, 4)`，与 `a` 一致：`a` 的第 1 维被拉长到 3，它的梯度也要在这一维上求和。
# 梯度的形状永远等于张量本身的形状——这是优化器 `p.data -= lr * p.grad.data` 能成立的前提。
#
# 同样的规律也解释了 `expand` 的反向为什么什么都不用做（见 `ops/movement.py` 里的 `Expand`）：
# 它只是显式地广播，归约交给引擎那一处就够了。批量矩阵乘里被所有批共享的权重（形状 `(C, C')` 乘以 `(B, T, C)`）也是一样，
# 梯度要在批维上求和。
#
# ## 5. 每个算子的反向是怎么推出来的
#
# 推导反向的套路只有一个：写出 $L$ 对输入某个分量的偏导，用链式法则展开成对输出分量的求和，
# 再把求和认出来是哪种数组运算。每推完一个，都用三种方式核对：照公式用 NumPy 算、tinytensor 算、中心差分算。

# %%
def numeric_grad(f, x, h=1e-6):
    """f: ndarray -> 标量。对 x 的每个元素做中心差分（float64）。"""
    x = x.astype(np.float64).copy()
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        out[i] = (fp - fm) / (2 * h)
    return out


def report(name, formula, engine, numeric):
    print(f"{name:<14} |公式 - 引擎| = {np.abs(formula - engine).max():.2e}   |公式 - 差分| = {np.abs(formula - numeric).max():.2e}")


rng = np.random.default_rng(0)

# %% [markdown]
# ### 5.1 矩阵乘
#
# $Y = AB$，$A$ 为 $m\times k$，$B$ 为 $k\times n$，$Y_{ij} = \sum_l A_{il} B_{lj}$。记上游梯度 $G = \partial L/\partial Y$。
# $A_{il}$ 出现在第 $i$ 行的每一个 $Y_{ij}$ 里，系数是 $B_{lj}$：
#
# $$\frac{\partial L}{\partial A_{il}} = \sum_j G_{ij} B_{lj} = (G B^\top)_{il}, \qquad
# \frac{\partial L}{\partial B_{lj}} = \sum_i A_{il} G_{ij} = (A^\top G)_{lj}.$$
#
# 一个记公式的窍门：$\partial L/\partial A$ 必须与 $A$ 同形 $(m, k)$，而手上只有 $G\,(m, n)$ 和 $B\,(k, n)$，
# 能拼出 $(m, k)$ 的只有 $G B^\top$。批量矩阵乘对每一批做同样的事，批维如果广播过，就由 `unbroadcast` 求和。
# （`Linear` 的 $y = xW^\top + b$ 是同一回事：$\partial L/\partial W = G^\top x$，$\partial L/\partial b = \sum_{\text{行}} G$。）

# %%
A_np, B_np, G_np = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
A = tt.tensor(A_np, requires_grad=True)
B = tt.tensor(B_np, requires_grad=True)
(A @ B).backward(G_np)
report("matmul dA", G_np @ B_np.T, A.grad.numpy(), numeric_grad(lambda a: np.sum((a @ B_np) * G_np), A_np))
report("matmul dB", A_np.T @ G_np, B.grad.numpy(), numeric_grad(lambda b: np.sum((A_np @ b) * G_np), B_np))

# %% [markdown]
# ### 5.2 softmax
#
# $y_i = e^{x_i} / \sum_j e^{x_j}$。对 $x_j$ 求导（分 $i = j$ 与 $i \ne j$ 两种情况，合起来写）：
#
# $$\frac{\partial y_i}{\partial x_j} = y_i(\delta_{ij} - y_j).$$
#
# 这是一个 $n \times n$ 的雅可比矩阵 $J = \operatorname{diag}(\mathbf{y}) - \mathbf{y}\mathbf{y}^\top$。但 VJP 可以直接化简：
#
# $$\frac{\partial L}{\partial x_j} = \sum_i g_i\, y_i(\delta_{ij} - y_j) = y_j g_j - y_j \sum_i g_i y_i
# = y_j\Big(g_j - \langle \mathbf{g}, \mathbf{y}\rangle\Big).$$
#
# 只需要一次逐元素乘、一次行内求和。对注意力里形状 $(B, n_h, T, T)$ 的 softmax，
# 这比造出 $T\times T$ 的雅可比矩阵省了一个 $T$ 倍。前向时还要先减去每行的最大值，防止 $e^{x}$ 溢出——
# 分子分母同乘 $e^{-\max}$，结果不变。

# %%
x_np, g_np = rng.standard_normal(6), rng.standard_normal(6)
y_np = np.exp(x_np - x_np.max())
y_np /= y_np.sum()
J = np.diag(y_np) - np.outer(y_np, y_np)
x = tt.tensor(x_np, requires_grad=True)
x.softmax(-1).backward(g_np)
vjp = y_np * (g_np - g_np @ y_np)
print(f"{'softmax':<14} |Jᵀg - 化简公式| = {np.abs(J.T @ g_np - vjp).max():.2e}")
def softmax_np(v):
    e = np.exp(v - v.max())
    return e / e.sum()
report("softmax", vjp, x.grad.numpy(), numeric_grad(lambda v: softmax_np(v) @ g_np, x_np))

# %% [markdown]
# ### 5.3 交叉熵：$p - \text{onehot}$
#
# 语言模型的损失是交叉熵 (cross-entropy)：对一行 logits $\mathbf{z}$ 和正确类别 $t$，
#
# $$L = -\log \operatorname{softmax}(\mathbf{z})_t = -z_t + \log\sum_j e^{z_j}.$$
#
# 第一项对 $z_j$ 的导数是 $-\delta_{jt}$，第二项的导数是 $e^{z_j} / \sum_k e^{z_k} = p_j$。所以
#
# $$\frac{\partial L}{\partial z_j} = p_j - \delta_{jt}, \qquad \text{即}\ \ \frac{\partial L}{\partial \mathbf{z}} = \mathbf{p} - \text{onehot}(t).$$
#
# 漂亮得出奇：模型给正确答案的概率差多少，梯度就把它往上推多少；给错误答案多少概率，就往下压多少。
# 对 $N$ 行取平均时，每行再除以 $N$。tinytensor 把 softmax 和交叉熵**融合**成一个算子，
# 反向直接算 $\mathbf{p} - \text{onehot}$，既省掉 log_softmax 的中间数组，也避免先算 softmax 再取对数时的下溢。

# %%
N, V = 4, 7
z_np = rng.standard_normal((N, V))
t_np = np.array([2, 0, 6, 2])
p_np = np.exp(z_np - z_np.max(1, keepdims=True))
p_np /= p_np.sum(1, keepdims=True)
onehot = np.eye(V)[t_np]
z = tt.tensor(z_np, requires_grad=True)
F.cross_entropy(z, t_np).backward()
def ce_np(zz):
    lse = np.log(np.exp(zz - zz.max(1, keepdims=True)).sum(1)) + zz.max(1)
    return np.mean(lse - zz[np.arange(N), t_np])
report("cross_entropy", (p_np - onehot) / N, z.grad.numpy(), numeric_grad(ce_np, z_np))
print("交叉熵在计算图里只是一个节点:", F.cross_entropy(z, t_np).grad_fn.name)

# %% [markdown]
# ### 5.4 层归一化
#
# 层归一化 (layer normalization) 沿最后一维（长度 $C$）对每一行做：
#
# $$\mu = \frac{1}{C}\sum_i x_i,\quad \sigma^2 = \frac{1}{C}\sum_i (x_i - \mu)^2,\quad r = (\sigma^2 + \varepsilon)^{-1/2},\quad
# \hat{x}_i = (x_i - \mu)\, r,\quad y_i = \hat{x}_i w_i + b_i.$$
#
# $w, b$ 的梯度最简单：$\partial L/\partial w = \sum_{\text{行}} g \odot \hat{x}$，$\partial L/\partial b = \sum_{\text{行}} g$。
# 对 $x$ 的梯度要小心，因为 $\mu$ 和 $r$ 都依赖于每一个 $x_j$：
#
# $$\frac{\partial \mu}{\partial x_j} = \frac{1}{C},\qquad
# \frac{\partial r}{\partial x_j} = -\frac{1}{2}(\sigma^2+\varepsilon)^{-3/2}\cdot\frac{2(x_j-\mu)}{C} = -\frac{r^2 \hat{x}_j}{C}.$$
#
# （$\partial \sigma^2/\partial x_j$ 里本来还有一项 $-\tfrac{2}{C}\sum_i (x_i - \mu)$，它恒等于零。）于是
#
# $$\frac{\partial \hat{x}_i}{\partial x_j} = r\Big(\delta_{ij} - \frac{1}{C}\Big) + (x_i - \mu)\Big(-\frac{r^2\hat{x}_j}{C}\Big)
# = r\Big(\delta_{ij} - \frac{1}{C} - \frac{\hat{x}_i \hat{x}_j}{C}\Big).$$
#
# 记 $\hat{g}_i = g_i w_i$（经过仿射变换传回 $\hat{x}$ 的梯度），对 $i$ 求和：
#
# $$\frac{\partial L}{\partial x_j} = \sum_i \hat{g}_i \frac{\partial \hat{x}_i}{\partial x_j}
# = r\Big(\hat{g}_j - \operatorname{mean}(\hat{g}) - \hat{x}_j\,\operatorname{mean}(\hat{g}\odot\hat{x})\Big).$$
#
# 反向只需要保存 $x$（或 $\hat x$）、每行的 $\mu$ 和 $r$，再做两次行内求平均。

# %%
Nr, C = 3, 8
x_np, w_np, b_np, g_np = (rng.standard_normal(s) for s in [(Nr, C), C, C, (Nr, C)])
eps = 1e-5
mu = x_np.mean(1, keepdims=True)
r = 1 / np.sqrt(((x_np - mu) ** 2).mean(1, keepdims=True) + eps)
xhat = (x_np - mu) * r
gh = g_np * w_np
dx = r * (gh - gh.mean(1, keepdims=True) - xhat * (gh * xhat).mean(1, keepdims=True))

x = tt.tensor(x_np, requires_grad=True)
w = tt.tensor(w_np, requires_grad=True)
b = tt.tensor(b_np, requires_grad=True)
F.layer_norm(x, (C,), w, b).backward(g_np)
def ln_np(xx):
    m = xx.mean(1, keepdims=True)
    return np.sum(((xx - m) / np.sqrt(((xx - m) ** 2).mean(1, keepdims=True) + eps) * w_np + b_np) * g_np)
report("layer_norm dx", dx, x.grad.numpy(), numeric_grad(ln_np, x_np))
report("layer_norm dw", (g_np * xhat).sum(0), w.grad.numpy(), numeric_grad(lambda ww: np.sum((xhat * ww + b_np) * g_np), w_np))
report("layer_norm db", g_np.sum(0), b.grad.numpy(), numeric_grad(lambda bb: np.sum((xhat * w_np + bb) * g_np), b_np))

# %% [markdown]
# ### 5.5 其余的算子
#
# 其余算子的推导都短到一行，tinytensor 把它们写在各自类的文档字符串里。把它们列出来，就是一张反向传播的“公式表”：

# %%
for mod in (tt.ops.elementwise, tt.ops.reduce, tt.ops.movement):
    for name, cls in inspect.getmembers(mod, inspect.isclass):
        if issubclass(cls, tt.autograd.Function) and cls is not tt.autograd.Function and cls.__doc__:
            print(f"{name:<11}", cls.__doc__.strip().splitlines()[0])

# %% [markdown]
# 其中有两条值得多看一眼。`Relu` 在 $a = 0$ 处的导数取 0，与 PyTorch 一致——数学上那里不可导，但实现必须选一个值，
# 两条轨道选得一样，梯度才能逐位对上。`Index` 的反向是“散射相加”：高级索引可能多次选中同一个元素（比如一个批次里同一个词元出现了好几次），
# 梯度必须用 `np.add.at` 累加，简单赋值会只留下最后一份。
#
# ## 6. 有限差分检查
#
# ### 6.1 原理
#
# 中心差分 (central difference) 用函数值近似导数：
#
# $$f'(x) \approx \frac{f(x + h) - f(x - h)}{2h}.$$
#
# 把 $f(x\pm h)$ 泰勒展开，一阶项相减后翻倍、二阶项相消，剩下的**截断误差**约为 $\tfrac{h^2}{6} f'''(x)$——$h$ 越小越好。
# 但计算机里 $f(x\pm h)$ 本身带着相对大小约为机器精度 $\epsilon$ 的**舍入误差**，两个几乎相等的数相减再除以 $2h$，
# 这部分误差约为 $\epsilon |f| / h$——$h$ 越小越糟。两者平衡在 $h \sim \epsilon^{1/3}$ 附近：
#
# | | 机器精度 $\epsilon$ | 最佳 $h$ | 能达到的误差 |
# |---|---|---|---|
# | float64 | $1.1\times 10^{-16}$ | $\sim 10^{-6}$ | $\sim 10^{-11}$ |
# | float32 | $6.0\times 10^{-8}$ | $\sim 10^{-3}$ | $\sim 10^{-5}$ |
#
# （表里是 $f$ 与它的导数都在 1 附近时的量级。）$10^{-5}$ 看上去不算大，但 `gradcheck` 的绝对容差正是 $10^{-5}$：float32 即使选中了最好的 $h$，也毫无余量。
#
# 下面实际量一下：对 $f(x) = \sum_i w_i \tanh(x_i)$ 的一个分量，扫一遍 $h$，分别在两种精度下计算差分误差。

# %%
import matplotlib.pyplot as plt

from llmcore.plotting import use_cjk_font

use_cjk_font()  # 图里的中文：字体来自 pip 包 noto-cjk-sans-otc，全项目在 llmcore/plotting.py 一处注册

x0, wv = rng.standard_normal(16), rng.standard_normal(16)
exact = wv[3] * (1 - np.tanh(x0[3]) ** 2)
hs = np.logspace(-10, -0.5, 40)
errs = {}
for dtype in (np.float32, np.float64):
    xs, ws = x0.astype(dtype), wv.astype(dtype)
    e = []
    for hh in hs:
        hp = xs.copy(); hp[3] += dtype(hh)
        hm = xs.copy(); hm[3] -= dtype(hh)
        step = float(hp[3]) - float(hm[3])              # 真正加上去的步长（float32 里 x ± h 会被舍入）
        d = (float(np.sum(ws * np.tanh(hp), dtype=dtype)) - float(np.sum(ws * np.tanh(hm), dtype=dtype))) / step if step else np.nan
        e.append(abs(d - exact))
    errs[np.dtype(dtype).name] = np.array(e)

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, e in errs.items():
    ax.loglog(hs, e, "o-", ms=3, label=name)
ax.set_xlabel("差分的步长 h")
ax.set_ylabel("|中心差分 − 精确导数|")
ax.set_title("中心差分的误差：截断误差与舍入误差")
ax.legend()
ax.grid(True, which="both", alpha=0.3)
plt.tight_layout()
plt.show()
for name, e in errs.items():
    i = int(np.nanargmin(e))
    print(f"{name}: 最小误差 {e[i]:.1e}（h = {hs[i]:.0e}）；h = 1e-6 时误差 {e[np.argmin(abs(hs - 1e-6))]:.1e}")

# %% [markdown]
# 曲线是一个“V”字：右半边是截断误差（斜率 2），左半边是舍入误差（斜率 -1）。float32 的“V”底部比 float64 高出好几个数量级，
# 而且 `gradcheck` 默认的 $h = 10^{-6}$ 正好落在 float32 的舍入误差区里，误差大到 $10^{-2}$。所以 `tt.gradcheck` 要求 float64 输入，
# 遇到 float32 直接报错，而不是给出一个似是而非的结果：

# %%
x32 = tt.randn(3, 4, requires_grad=True)
try:
    tt.gradcheck(lambda x: x.softmax(-1), [x32])
except TypeError as e:
    print("float32:", e)

x64 = tt.randn(3, 4, dtype=tt.float64, requires_grad=True)
print("float64:", tt.gradcheck(lambda x: x.softmax(-1), [x64]))

# %% [markdown]
# ### 6.2 `tt.gradcheck`
#
# `tt.gradcheck(fn, inputs)` 用一个固定的随机权重 $w$ 把输出压成标量 $\sum w \odot \text{fn}(\ldots)$（这样每个输出元素都被检查到），
# 用 `backward` 得到解析梯度，再对每个输入的每个元素做一次中心差分，两者逐元素比较。
# 它对每个元素都要跑两次前向，只适合小张量——但小张量足以检查公式。对本书用到的融合算子全部检查一遍：

# %%
tt.manual_seed(1)
def r64(*shape):
    return tt.randn(*shape, dtype=tt.float64, requires_grad=True)

xq, wq, bq = r64(2, 3, 6), r64(6), r64(6)
logits, targets = r64(5, 7), np.array([0, 6, 3, 3, -100])
q, k, v_ = r64(2, 4, 3), r64(2, 4, 3), r64(2, 4, 3)
W, bias = r64(5, 6), r64(5)
checks = {
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (6,), w, b), [xq, wq, bq]),
    "gelu": (F.gelu, [xq]),
    "cross_entropy（含 ignore_index）": (lambda z: F.cross_entropy(z, targets), [logits]),
    "因果注意力": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v_]),
    "linear（3 维输入）": (F.linear, [xq, W, bias]),
    "embedding（重复 id）": (lambda w: F.embedding(np.array([[1, 1, 4], [0, 1, 4]]), w), [W]),
}
for name, (fn, ins) in checks.items():
    print(f"{name:<26}", tt.gradcheck(fn, ins))

# %% [markdown]
# 它也真的能抓到错误。把 `SiLU` 的导数少写一项（忘了乘法法则的第二项），`gradcheck` 会指出是哪个输入、哪个位置、差了多少：

# %%
class BuggySiLU(SiLU):
    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * s                      # 漏掉了 x·σ·(1-σ)

try:
    tt.gradcheck(lambda x: BuggySiLU.apply(x), [r64(3, 4)])
except AssertionError as e:
    print(e)

# %% [markdown]
# ## 7. 与 PyTorch 并排对照
#
# tinytensor 的 API 与 PyTorch 同名，所以同一段模型代码换一个模块前缀就能在两边跑。下面造一个小 MLP：
# `Linear → LayerNorm → GELU → Linear`，用 tinytensor 初始化，通过 `state_dict` 把权重原样搬到 PyTorch 里
# （两边的参数名和 `Linear` 权重的 `(out, in)` 布局完全一致，不需要任何转置），然后比较损失和**每一个**参数的梯度。

# %%
def make_mlp(nn, d_in=6, d_hidden=16, n_cls=5, dtype=None):
    kw = {} if dtype is None else {"dtype": dtype}
    return nn.Sequential(nn.Linear(d_in, d_hidden, **kw), nn.LayerNorm(d_hidden, **kw), nn.GELU(approximate="tanh"),
                         nn.Linear(d_hidden, n_cls, **kw))


def compare(dtype_tt, dtype_torch):
    tt.manual_seed(0)
    m_tt = make_mlp(tt.nn, dtype=dtype_tt)
    m_th = make_mlp(torch.nn, dtype=dtype_torch)
    m_th.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in m_tt.state_dict().items()})
    xb = np.random.default_rng(0).standard_normal((32, 6))
    yb = np.random.default_rng(1).integers(0, 5, size=32)
    loss_tt = F.cross_entropy(m_tt(tt.tensor(xb, dtype=dtype_tt)), yb)
    loss_th = torch.nn.functional.cross_entropy(m_th(torch.tensor(xb, dtype=dtype_torch)), torch.tensor(yb))
    loss_tt.backward()
    loss_th.backward()
    print(f"损失：tinytensor {loss_tt.item():.10f}   PyTorch {loss_th.item():.10f}")
    grads_th = dict(m_th.named_parameters())
    for name, p in m_tt.named_parameters():
        gt = grads_th[name].grad.numpy()
        print(f"  {name:<9} {str(p.shape):<8} 梯度最大差 {np.abs(p.grad.numpy() - gt).max():.1e}"
              f"   （梯度最大值 {np.abs(gt).max():.1e}）")

print("float64：")
compare(tt.float64, torch.float64)
print("float32：")
compare(tt.float32, torch.float32)

# %% [markdown]
# float64 下两边的差在 $10^{-16}$ 量级——只是求和顺序不同带来的舍入；float32 下差在 $10^{-7}$ 到 $10^{-8}$ 量级，正是 float32 的精度。
# 本项目的测试对整个 GPT 做同样的比较（logits、损失、按名字的每个梯度，再加若干步 AdamW），float64 用很紧的容差，float32 用宽松的容差。
#
# 再往前走一步：两边各自用 AdamW 训练 30 步，损失曲线也应该重合。

# %%
def train_curve(lib, steps=30):
    tt.manual_seed(0)
    m_tt = make_mlp(tt.nn, dtype=tt.float64)
    rng_data = np.random.default_rng(2)
    xb, yb = rng_data.standard_normal((64, 6)), rng_data.integers(0, 5, size=64)
    if lib == "tt":
        model, opt = m_tt, tt.optim.AdamW(m_tt.parameters(), lr=1e-2, weight_decay=0.1)
        X, loss_fn = tt.tensor(xb), lambda out: F.cross_entropy(out, yb)
    else:
        model = make_mlp(torch.nn, dtype=torch.float64)
        model.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in m_tt.state_dict().items()})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        X, loss_fn = torch.tensor(xb), lambda out: torch.nn.functional.cross_entropy(out, torch.tensor(yb))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(X))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)

c_tt, c_th = train_curve("tt"), train_curve("torch")
print("第 1、10、20、30 步的损失（tinytensor）:", c_tt[[0, 9, 19, 29]])
print("第 1、10、20、30 步的损失（PyTorch）   :", c_th[[0, 9, 19, 29]])
print("30 步中最大的差:", np.abs(c_tt - c_th).max())

# %% [markdown]
# ## 8. 看见反向传播：`tinytensor.viz`
#
# 到目前为止，计算图都只存在于我们的想象里。`tinytensor.viz` 把它画出来：
#
# - `viz.print_graph(t, names=...)`：打印张量 `t` 背后的计算图（根在上，输入在下），每个节点写出算子名、形状、dtype；
#   给了 `names`（比如 `dict(model.named_parameters())`），参数就显示成它的名字；
# - `viz.trace_grads(loss, names)`：在 `backward()` **之前**调用，它记下图的结构，并给每个中间节点打上 `retain_grad()`
#   ——默认只有叶子张量保留梯度，中间结果的梯度用完就丢；反向之后 `.print()` 就能看到每个节点的梯度范数 $\lVert\nabla\rVert$；
# - `viz.to_dot(t, path)` / `trace.to_dot(path)`：写出 graphviz 的 `.dot` 文件，装了 `dot` 程序时再生成一张 SVG。
#
# 被多处使用的节点（共享节点）第一次出现时完整展开并编号 `[#k]`，之后只写 `→ #k`。

# %%
tt.manual_seed(0)
mlp = make_mlp(tt.nn)
names = dict(mlp.named_parameters())
xb = tt.randn(8, 6)
yb = np.arange(8) % 5
loss = F.cross_entropy(mlp(xb), yb)
viz.print_graph(loss, names=names)

# %%
tr = viz.trace_grads(loss, names)
loss.backward()
tr.print()

# %% [markdown]
# 从上往下读，就是梯度流过的路线：损失节点的梯度是 1，经过第二个 `Linear` 分给权重、偏置和 GELU 的输出，再一路往下。
# 输入 `x` 是“常量”（不需要梯度），所以它没有梯度。
#
# 共享节点长什么样？把同一个 `Linear` 在残差连接里用两次：

# %%
tt.manual_seed(0)
lin = tt.nn.Linear(4, 4)
h0 = tt.randn(2, 4)
h1 = lin(h0)
out = (h1 + lin(h1).tanh()).sum()          # h1 有两个使用者；lin 的参数被用了两次
with viz.trace_grads(out, {"lin.weight": lin.weight, "lin.bias": lin.bias}) as tr2:
    out.backward()
tr2.print()

# %% [markdown]
# 同样的图也可以交给 graphviz 去画。`tr.to_dot()` 返回 graphviz 的源文本（下面打印开头几行）；
# 给它一个文件名，如 `tr.to_dot("mlp.dot")`，就写出这个文件，装了 graphviz 的 `dot` 程序时还会在旁边生成 `mlp.svg`，
# 用浏览器打开就能看到带梯度范数的整张图。

# %%
src = tr.to_dot()
print("\n".join(src.splitlines()[:6]), "\n...")

# %% [markdown]
# ### 8.1 用梯度范数诊断
#
# 梯度范数最常见的用途是诊断“梯度消失”。下面是一个 8 层、每层 `Linear → Tanh` 的网络，权重取正态分布。初始化太小时
# （标准差 $0.5/\sqrt{\text{fan\_in}}$），信号每过一层就缩小一些，反向时梯度也一层层缩小；标准差取 $1/\sqrt{\text{fan\_in}}$
# （LeCun 初始化）时，各层梯度保持在同一量级。顺带一提，PyTorch 与 tinytensor 的 `nn.Linear` 默认用的是均匀分布
# $U(-1/\sqrt{\text{fan\_in}},\ 1/\sqrt{\text{fan\_in}})$（PyTorch 源码里写作 `kaiming_uniform_(a=√5)`），
# 它的标准差是 $1/\sqrt{3\,\text{fan\_in}}$，比 LeCun 初始化小 $\sqrt 3$ 倍。

# %%
def deep_tanh_grad_norms(scale):
    tt.manual_seed(0)
    layers = []
    for _ in range(8):
        lin = tt.nn.Linear(32, 32)
        with tt.no_grad():
            lin.weight.data[...] = np.random.default_rng(len(layers)).standard_normal((32, 32)) * scale / np.sqrt(32)
        layers += [lin, tt.nn.Tanh()]
    net = tt.nn.Sequential(*layers)
    net(tt.randn(16, 32)).pow(2).mean().backward()
    return [np.linalg.norm(p.grad.numpy()) for name, p in net.named_parameters() if name.endswith("weight")]

for scale in (0.5, 1.0):
    print(f"权重标准差 {scale}/√32：各层权重梯度范数（从第 1 层到第 8 层）")
    print("   ", " ".join(f"{g:.1e}" for g in deep_tanh_grad_norms(scale)))

# %% [markdown]
# ## 9. 为什么、以及怎样写 numba 内核
#
# ### 9.1 融合算子：少建节点、少存数组
#
# 第 5 节推导的层归一化，也可以完全不写反向，用基本算子拼出来，让自动求导自己去推：
# `tinytensor/composed.py` 里正有这样一个“孪生”版本。两者数学上相同，代价却差得很远。
# 用 `viz.trace_grads` 数一数各自的计算图有多少个节点、反向要保存多少字节：

# %%
def graph_cost(y, x):
    """计算图里的算子节点数，以及反向要额外保存的字节数（同一数组只算一次；与输入 x 共享内存的不算）。"""
    tr_ = viz.trace_grads(y)
    ctxs = [t._ctx for t in tr_.tensors if t._ctx is not None]
    arrays = {id(a): a for c in ctxs for a in c.saved_tensors if isinstance(a, np.ndarray)}
    saved = sum(a.nbytes for a in arrays.values() if not np.may_share_memory(a, x.data))
    tr_.release()
    return len(ctxs), saved

Bq, Tq, Cq = (4, 64, 128) if QUICK else (8, 256, 384)
xl = tt.randn(Bq, Tq, Cq, requires_grad=True)
wl, bl = tt.ones(Cq, requires_grad=True), tt.zeros(Cq, requires_grad=True)
y_fused = F.layer_norm(xl, (Cq,), wl, bl)
y_twin = twin.layer_norm(xl, wl, bl)
print("两者前向最大差:", np.abs(y_fused.detach().numpy() - y_twin.detach().numpy()).max())
for name, y in (("融合版", y_fused), ("孪生版（基本算子拼成）", y_twin)):
    n_nodes, saved = graph_cost(y, xl)
    print(f"{name:<22} 算子节点 {n_nodes:>2} 个，反向保存 {saved / 2**20:6.2f} MiB（输入本身 {xl.data.nbytes / 2**20:.2f} MiB）")

# %%
def bench(fn, repeat=None):
    """运行若干次取中位数（毫秒）。"""
    repeat = repeat or (5 if QUICK else 20)
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))

gl = np.random.default_rng(0).standard_normal((Bq, Tq, Cq)).astype(np.float32)
def fwd_bwd(f):
    def run():
        xl.grad = wl.grad = bl.grad = None
        f(xl).backward(gl)
    return run
t_fused = bench(fwd_bwd(lambda x: F.layer_norm(x, (Cq,), wl, bl)))
t_twin = bench(fwd_bwd(lambda x: twin.layer_norm(x, wl, bl)))
print(f"layer_norm 前向+反向，形状 {(Bq, Tq, Cq)}：融合 {t_fused:.2f} ms，孪生 {t_twin:.2f} ms，快 {t_twin / t_fused:.1f} 倍")

# %% [markdown]
# 融合算子的前向、反向调用 `tinytensor.kernels` 里的函数，例如层归一化是 `kernels.layer_norm_fwd(x, w, b, eps)`
# 返回 `(y, mean, rstd)`，`kernels.layer_norm_bwd(g, x, w, mean, rstd)` 返回 `(dx, dw, db)`。
# 这些函数有两套实现：一套 NumPy 参考实现（`layer_norm_fwd_numpy` 这样命名），一套 numba 内核，放在同一个文件里
# （`kernels/layer_norm.py`、`softmax.py`、`cross_entropy.py`、`gelu.py`、`embedding.py`、`adamw.py`）。
# 用 `tinytensor.kernels.set_backend("numpy")` 或环境变量 `TINYTENSOR_BACKEND=numpy` 可以把整个后端切回 NumPy，
# 方便阅读和排错；测试保证两套实现在 float32 和 float64 下结果一致。
#
# 下面在笔记本里从头写一个 numba 内核，把写内核的几条规矩逐一落到代码上。
#
# ### 9.2 规矩一：NumPy 参考实现放在旁边，输出预先分配、放在参数最前面
#
# 先写 NumPy 版：它短、好读，是内核的“规格说明”。再写 numba 版：一个显式的循环，把“求均值、求方差、归一化、仿射”
# 融合成对每一行的一次遍历，不产生任何中间数组。输出数组 `y, mean, rstd` 由调用者分配好、作为最前面的参数传进去，
# 内核只负责填写——这样内核里没有内存分配，调用者也可以复用缓冲区。

# %%
from numba import njit, prange
import numba


def layer_norm_fwd_numpy(x, w, b, eps):
    """NumPy 参考：x (N, C) -> y (N, C), mean (N,), rstd (N,)。"""
    mean = x.mean(-1)
    d = x - mean[:, None]
    rstd = 1.0 / np.sqrt((d * d).mean(-1) + eps)
    return (d * rstd[:, None] * w + b).astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


@njit(parallel=True)          # 包里的内核写成 @njit(cache=True, parallel=True)，见 9.3
def layer_norm_fwd_kernel(y, mean, rstd, x, w, b, eps):
    n, c = x.shape
    for i in prange(n):       # 第 i 次迭代只写 y[i]、mean[i]、rstd[i]：每个迭代拥有自己的输出
        m = 0.0
        for j in range(c):
            m += x[i, j]
        m /= c
        v = 0.0
        for j in range(c):
            d = x[i, j] - m
            v += d * d
        r = 1.0 / np.sqrt(v / c + eps)    # 每行只开一次方，不是逐元素的超越函数
        mean[i] = m
        rstd[i] = r
        for j in range(c):
            y[i, j] = (x[i, j] - m) * r * w[j] + b[j]


def layer_norm_fwd_numba(x, w, b, eps):
    n, c = x.shape
    y = np.empty_like(x)
    mean = np.empty(n, dtype=x.dtype)
    rstd = np.empty(n, dtype=x.dtype)
    layer_norm_fwd_kernel(y, mean, rstd, x, w, b, eps)
    return y, mean, rstd


t0 = time.perf_counter()
for dt in (np.float32, np.float64):
    xs = np.random.default_rng(0).standard_normal((Bq * Tq, Cq)).astype(dt)
    ws, bs = np.ones(Cq, dt) * 1.5, np.full(Cq, 0.1, dt)
    ref, got = layer_norm_fwd_numpy(xs, ws, bs, 1e-5), layer_norm_fwd_numba(xs, ws, bs, 1e-5)
    print(f"{np.dtype(dt).name}: 与 NumPy 参考的最大差 y {np.abs(ref[0] - got[0]).max():.1e}, "
          f"mean {np.abs(ref[1] - got[1]).max():.1e}, rstd {np.abs(ref[2] - got[2]).max():.1e}")
print(f"（含两种 dtype 的首次编译：{time.perf_counter() - t0:.1f} s）")

layer_norm_fwd_serial = njit(layer_norm_fwd_kernel.py_func)   # 同一份代码，不开 parallel：prange 退化成 range
ys, ms, rs = np.empty_like(xs), np.empty(len(xs)), np.empty(len(xs))
t_ref = bench(lambda: layer_norm_fwd_numpy(xs, ws, bs, 1e-5))
t_ser = bench(lambda: layer_norm_fwd_serial(ys, ms, rs, xs, ws, bs, 1e-5))
t_par = bench(lambda: layer_norm_fwd_kernel(ys, ms, rs, xs, ws, bs, 1e-5))
print(f"形状 {xs.shape} float64：NumPy {t_ref:.2f} ms，numba 单线程 {t_ser:.2f} ms，"
      f"numba prange {t_par:.2f} ms（{numba.get_num_threads()} 线程）")

# %% [markdown]
# numba 版把好几遍数组运算合成了对每一行的一次遍历，不产生中间数组，单线程就比 NumPy 快得多。
# 多线程的 `prange` 则要看机器：空闲时还能再快一些，机器繁忙时线程互相等待，反而可能吃亏。
# 所以计时永远要在同一次运行里、同一台机器上对照，只看比值。
#
# ### 9.3 规矩二：模块级函数，`cache=True`，所有数据都作为参数传入
#
# numba 在函数第一次以某种参数类型被调用时编译它，编译要花零点几秒到几秒。`cache=True` 把编译结果写进 `__pycache__`，
# 下一个进程直接加载——对“每次运行都要启动一次”的训练脚本和测试，这能省下可观的时间。缓存以“函数所在的文件和位置 + 参数类型”为键，
# 所以内核必须是**模块级**函数。numba 只看函数自己所在的文件是否改过；tinytensor 的内核还共用 `_vmath.py` 里的积木，
# 所以 `kernels/backend.py` 把整个目录源码的哈希也写进每个内核的缓存索引：任何一个文件变了，旧缓存就不再使用。
#
# 更隐蔽的问题在闭包。numba 把闭包捕获的外部变量当成**编译期常量**冻结进机器码：每换一个捕获的值就要重新编译、多存一份缓存，
# 捕获的数组则被原样复制进去，之后外面再改它，内核也看不见：

# %%
def make_scaled_sum(wts):
    @njit
    def scaled_sum(x):
        return (x * wts).sum()        # wts 来自外层作用域：被当成常量编译进去
    return scaled_sum

wts = np.ones(3)
f = make_scaled_sum(wts)
print("第一次:", f(np.ones(3)))
wts[:] = 5.0
print("把 wts 改成 5 之后:", f(np.ones(3)), "（仍然是旧值！）")


@njit
def scaled_sum(x, wts):               # 正确的写法：数据全部作为参数传入
    return (x * wts).sum()

print("参数版:", scaled_sum(np.ones(3), wts))

# %% [markdown]
# 另外两条：`fastmath=False` 是默认值，除非注释里写明理由才打开——`fastmath` 允许编译器重排浮点运算，
# 结果就不再与 NumPy 参考逐位可比；内核里也不做任何“隐藏的 epsilon”（比如在除法里偷偷加一个 `1e-12`），
# 所有常数都出现在参数或公式里。
#
# ### 9.4 规矩三：`prange` 的每次迭代拥有自己的输出
#
# `prange` 把循环分给多个线程。只要两次迭代可能写同一个位置，就有数据竞争 (data race)。
# 嵌入 (embedding) 的反向是典型的陷阱：$\partial L/\partial W[k] = \sum_{t:\,\text{idx}_t = k} g_t$，一个批次里同一个词元常常出现很多次。
# 如果按词元并行，两个线程可能同时对 `dW[k, j]` 做“读-加-写”，一个人的加法被另一个人覆盖；
# 即使没有丢失，多线程累加的顺序每次不同，浮点结果也不再逐位确定。
# 正确的并行方式是换一个维度：按嵌入维 $j$ 并行，每次迭代独占 `dW[:, j]` 这一列，内部按词元顺序串行累加。

# %%
@njit
def embedding_bwd_serial(dw, idx, g):
    for t in range(idx.shape[0]):
        for j in range(g.shape[1]):
            dw[idx[t], j] += g[t, j]


@njit(parallel=True)
def embedding_bwd_by_token(dw, idx, g):      # 错误：不同迭代会写同一行
    for t in prange(idx.shape[0]):
        for j in range(g.shape[1]):
            dw[idx[t], j] += g[t, j]


@njit(parallel=True)
def embedding_bwd_by_column(dw, idx, g):     # 正确：第 j 次迭代只写第 j 列
    for j in prange(g.shape[1]):
        for t in range(idx.shape[0]):
            dw[idx[t], j] += g[t, j]


n_tok = 50_000 if QUICK else 200_000
idx = np.random.default_rng(0).integers(0, 8, size=n_tok)      # 只有 8 个不同的词元：大量重复
gg = np.random.default_rng(1).standard_normal((n_tok, 64)).astype(np.float32)
ref = np.zeros((8, 64), np.float32)
embedding_bwd_serial(ref, idx, gg)
for kern in (embedding_bwd_by_token, embedding_bwd_by_column):
    diffs = []
    for _ in range(3):
        dw = np.zeros((8, 64), np.float32)
        kern(dw, idx, gg)
        diffs.append(float(np.abs(dw - ref).max()))
    print(f"{kern.__name__:<24} 三次运行与串行结果的最大差: {diffs}")

# %% [markdown]
# 按列并行的版本与串行版本逐位相同，并且每次都相同。按词元并行的版本若出现了非零的差，那就是被覆盖掉的加法；
# 即使某一次碰巧全是零，也没有任何保证——竞争是否出现取决于线程调度，这正是它危险的地方。同样的道理，内核的测试里要检查 `NUMBA_NUM_THREADS=1` 与默认线程数给出相同的结果。
#
# ### 9.5 规矩四：循环里的 `tanh`、`exp` 用可向量化的版本
#
# 直觉上，把 GELU 整个写进一个 numba 循环——多项式、`tanh`、乘法一次做完——应该最快：只读一遍输入、写一遍输出。
# 照直写却会踩一个坑。NumPy 的 `np.tanh`、`np.exp` 是用 SIMD 指令一次处理多个元素的向量化实现；numba 循环里的
# `math.tanh`、`math.exp` 能不能向量化，要看 numba 与 LLVM 手边有没有这个函数的向量版本（Intel 的 SVML 之类）。
# 没有，就只能逐个元素调用 C 数学库的标量版本，整个循环也跟着成了标量循环。
#
# 一条出路是把超越函数 (transcendental function) 交给 NumPy 的 ufunc，循环拆成“numba → NumPy → numba”三段；
# tinytensor 走的是另一条：自己写一个 LLVM 能向量化的版本。`tinytensor/kernels/_vmath.py` 里的 `vexp`、`vtanh`
# 只用加减乘除、比较和整数位操作：
#
# - $e^x = 2^n \cdot e^r$：$n = \mathrm{round}(x/\ln 2)$，$r = x - n\ln 2 \in [-\tfrac{\ln 2}{2}, \tfrac{\ln 2}{2}]$；
#   $e^r$ 用泰勒多项式（float32 取 7 阶，float64 取 13 阶），$2^n$ 直接拼进浮点数的指数位；
# - $\tanh u = \mathrm{sign}(u)\cdot\frac{1 - e}{1 + e}$，$e = e^{-2|u|} \in (0, 1]$，不会溢出。
#
# 没有函数调用、没有数据相关的跳转，LLVM 就能把整个循环编译成 SIMD 指令。下面对同样 100 万个 float32 比较三种做法：
# NumPy 的 ufunc、numba 循环里调 `math.*`、numba 循环里调 `vtanh`/`vexp`（除法要向量化，须用 `error_model="numpy"`，
# 否则 numba 会为除零检查插入分支）：

# %%
from tinytensor.kernels import use_numba
from tinytensor.kernels._vmath import vexp, vtanh

use_numba()  # 确保 numba 已加载：vexp / vtanh 的 numba 实现在加载时才注册


@njit
def tanh_loop(out, x):
    for i in range(x.size):
        out[i] = math.tanh(x[i])


@njit
def exp_loop(out, x):
    for i in range(x.size):
        out[i] = math.exp(x[i])


@njit(error_model="numpy")
def tanh_vloop(out, x):
    for i in range(x.size):
        out[i] = vtanh(x[i])


@njit(error_model="numpy")
def exp_vloop(out, x):
    for i in range(x.size):
        out[i] = vexp(x[i])


xt32 = np.random.default_rng(0).standard_normal(250_000 if QUICK else 1_000_000).astype(np.float32)
o32 = np.empty_like(xt32)
for name, ufunc, loop, vloop in (("tanh", np.tanh, tanh_loop, tanh_vloop), ("exp", np.exp, exp_loop, exp_vloop)):
    t_np = bench(lambda: ufunc(xt32, out=o32))
    t_nb = bench(lambda: loop(o32, xt32))
    t_v = bench(lambda: vloop(o32, xt32))
    vloop(o32, xt32)
    rel = float(np.max(np.abs(o32 - ufunc(xt32)) / np.maximum(np.abs(ufunc(xt32)), 1)))
    print(f"{name}（{xt32.size:,} 个 float32）：NumPy ufunc {t_np:.3f} ms，numba + math.{name} {t_nb:.3f} ms，"
          f"numba + v{name} {t_v:.3f} ms；v{name} 与 NumPy 的最大差（相对，|y| < 1 时按绝对）{rel:.1e}")

# %% [markdown]
# （`bench` 取 20 次运行的中位数；测试时 `LLMZH_QUICK=1`，只算 25 万个元素、跑 5 次。）
# 这台机器上，`math.exp` 的循环与 `np.exp` 差不多快，`math.tanh` 的循环却比 `np.tanh` 慢了约 4 倍。
# 换成 `vtanh`、`vexp` 之后，两个循环都比 NumPy 的 ufunc 快 2 倍以上，误差停在 float32 的舍入误差量级
# （`tests/test_kernels.py` 检查：`vexp` 的误差不超过 2 ulp，`vtanh` 的绝对误差不超过机器精度的 4 倍）。
#
# 再把它放回 GELU：比较四种写法——纯 NumPy、一个 numba 循环里用 `math.tanh`、三段式（numba 算多项式 → `np.tanh` → numba 合成）、
# 一个 numba 循环里用 `vtanh`。前向都把 $t = \tanh(\cdot)$ 存下来，反向直接复用（$\tanh' = 1 - \tanh^2$，不用再算一次）。
# 四个都是单线程，比的只是写法本身。

# %%
K0, K1 = math.sqrt(2.0 / math.pi), 0.044715


def gelu_numpy(x):
    t = np.tanh(np.float32(K0) * (x + np.float32(K1) * x * x * x))
    return 0.5 * x * (1 + t), t


@njit
def gelu_all_math(y, t, x):
    for i in range(x.size):
        u = K0 * (x[i] + K1 * x[i] * x[i] * x[i])
        t[i] = math.tanh(u)
        y[i] = 0.5 * x[i] * (1.0 + t[i])


@njit(error_model="numpy")
def gelu_all_vtanh(y, t, x):
    c, k, half, one = np.float32(K0), np.float32(K1), np.float32(0.5), np.float32(1.0)  # 全程 float32
    for i in range(x.size):
        xi = x[i]
        t[i] = vtanh(c * (xi + k * (xi * xi * xi)))
        y[i] = half * xi * (one + t[i])


@njit
def gelu_inner(u, x):                 # 第 1 步：多项式 u = √(2/π)(x + 0.044715x³)
    for i in range(x.size):
        u[i] = K0 * (x[i] + K1 * x[i] * x[i] * x[i])


@njit
def gelu_outer(y, x, t):              # 第 3 步：y = ½x(1 + t)
    for i in range(x.size):
        y[i] = 0.5 * x[i] * (1.0 + t[i])


def gelu_three_pass(x):
    y, t = np.empty_like(x), np.empty_like(x)
    gelu_inner(t, x)
    np.tanh(t, out=t)                 # 第 2 步：超越函数交给 NumPy
    gelu_outer(y, x, t)
    return y, t


def one_loop(kernel):
    def run(x):
        y, t = np.empty_like(x), np.empty_like(x)
        kernel(y, t, x)
        return y, t
    return run


variants = (("纯 NumPy", gelu_numpy), ("一个循环 + math.tanh", one_loop(gelu_all_math)),
            ("三段式（np.tanh）", gelu_three_pass), ("一个循环 + vtanh", one_loop(gelu_all_vtanh)))
y_ref = gelu_numpy(xt32)[0]
for name, fn in variants:
    print(f"GELU 前向 {name:<16} {bench(lambda: fn(xt32)):.3f} ms，与纯 NumPy 的最大差 {np.abs(fn(xt32)[0] - y_ref).max():.1e}")
y_lib, _ = tt.kernels.gelu_fwd(xt32)
print("tinytensor 的 gelu_fwd 与“一个循环 + vtanh”的最大差:", np.abs(y_lib - one_loop(gelu_all_vtanh)(xt32)[0]).max())

# %% [markdown]
# 一个循环里用 `math.tanh` 最慢，比纯 NumPy 还慢；三段式比纯 NumPy 快一些；一个循环里用 `vtanh` 最快，是三段式的 2 倍多、
# 纯 NumPy 的约 3 倍：只读一遍 `x`，`u` 也不必写回内存再读出来。
#
# 最后一种就是 tinytensor 的 GELU 内核（`tinytensor/kernels/gelu.py`）的写法，最后一行确认两者逐位相同；库里的版本另外按元素个数
# 切成几段、用 `prange` 多线程。softmax、交叉熵、注意力内核里的 `exp` 也都用 `vexp`，和前后的减最大值、求和融合在同一个循环里。
# 所以规矩四是：**numba 循环里不直接调用 `math.tanh`、`math.exp`，用 `_vmath` 里可向量化的版本**；
# 需要再写一个超越函数时，先像上面这样和 NumPy 的 ufunc 比一比速度与误差。`bench/bench_kernels.py` 对每个内核做同样的比较
# （对 NumPy 参考与 torch），测得的数字记在 `docs/performance.md`。
#
# ### 9.6 回到 tinytensor
#
# 最后确认一下：tinytensor 的融合层归一化调用的 `kernels.layer_norm_fwd`，与我们刚写的内核、与 NumPy 参考给出同样的结果；
# 反向 `kernels.layer_norm_bwd` 与 5.4 节推导的公式一致。

# %%
xs = np.random.default_rng(3).standard_normal((64, Cq))
ws, bs = np.random.default_rng(4).standard_normal(Cq), np.random.default_rng(5).standard_normal(Cq)
y_k, mean_k, rstd_k = tt.kernels.layer_norm_fwd(xs, ws, bs, 1e-5)
y_n, mean_n, rstd_n = layer_norm_fwd_numba(xs, ws, bs, 1e-5)
print("kernels.layer_norm_fwd 与本节内核的最大差:", np.abs(y_k - y_n).max(), np.abs(rstd_k - rstd_n).max())

gs = np.random.default_rng(6).standard_normal((64, Cq))
dx_k, dw_k, db_k = tt.kernels.layer_norm_bwd(gs, xs, ws, mean_k, rstd_k)
xhat_s = (xs - mean_n[:, None]) * rstd_n[:, None]
gh_s = gs * ws
dx_f = rstd_n[:, None] * (gh_s - gh_s.mean(1, keepdims=True) - xhat_s * (gh_s * xhat_s).mean(1, keepdims=True))
print("kernels.layer_norm_bwd 与 5.4 节公式的最大差:", np.abs(dx_k - dx_f).max(),
      np.abs(dw_k - (gs * xhat_s).sum(0)).max(), np.abs(db_k - gs.sum(0)).max())

# %% [markdown]
# ### 9.7 谁来管线程：BLAS 只用一个线程，工作由我们来切
#
# 内核写快了，训练步还可能被“线程”拖慢。numpy 的矩阵乘交给 OpenBLAS，它默认用上所有核。这对一次大矩阵乘很好，
# 但训练步里还有两类情形它处理得不好：
#
# 1. **一大批小矩阵**。注意力里每个头各做一次 $QK^\top$（tiny 配置里是 64 个 128×32 乘 32×128）。`np.matmul` 逐个调用
#    BLAS，多线程的 OpenBLAS 又把*每一个*小矩阵切给所有线程，每次都要唤醒、同步，等待比计算还久。
#    更好的切法是按头切：头分成两半，每个线程算一半，段内 BLAS 只用单线程，一共只同步一次。
# 2. **忙等**。OpenBLAS 的工作线程做完一次矩阵乘后不会马上睡眠，而是空转一阵（默认约 $2^{28}$ 个时钟周期，0.1 秒量级）
#    等下一个任务。训练步里矩阵乘每隔几毫秒就来一次，它便一直占着一个核，紧接着跑的 numba 内核或我们自己的线程只好与它抢。
#
# 所以 tinytensor 可以自己管线程（`tinytensor/kernels/threads.py`）：把 numpy 的 BLAS 设成单线程，
# 然后由算子自己切分——大矩阵乘按行切（`threads.matmul`），注意力按批切，融合输出层按行块切，都交给同一个小线程池
# （`threads.run_parts`）。torch 的 CPU 后端也是这么做的。BLAS 的线程数是整个进程的设置（不经 tinytensor 的 `a @ b`
# 也会变成单线程），所以只有显式调用 `tt.tuning.enable()` 才这样做（`tt.tuning.disable()` 撤销）：`import tinytensor`
# 本身什么也不改，命令行的训练、生成与 `bench/` 里的基准才调用它。下面直接用它的一项 `threads.claim_blas()` 看第 1 点：

# %%
from tinytensor.kernels import threads

rng_t = np.random.default_rng(7)
qh, kh = (rng_t.standard_normal((16, 4, 128, 32)).astype(np.float32) for _ in range(2))  # (B, nh, T, hs)
sh = np.empty((16, 4, 128, 128), np.float32)
nt = threads.num_threads()

threads.release_blas()  # 恢复 numpy 默认的多线程 BLAS
t_blas = bench(lambda: np.matmul(qh, kh.swapaxes(-1, -2), out=sh))
threads.claim_blas()  # BLAS 单线程，按批切给 nt 个线程
t_split = bench(lambda: threads.run_parts(
    lambda lo, hi: np.matmul(qh[lo:hi], kh[lo:hi].swapaxes(-1, -2), out=sh[lo:hi]), 16, nt))
print(f"{nt} 个线程，64 个头的 QKᵀ：每个小矩阵都切给多线程 BLAS {t_blas:.2f} ms；按批切、BLAS 单线程 {t_split:.2f} ms")
print("两种切法结果相同：", np.array_equal(sh, np.matmul(qh, kh.swapaxes(-1, -2))))

# %% [markdown]
# 单独计时时两种切法差得不多；在训练步里，前一次多线程矩阵乘留下的空转线程（第 2 点）会让差距拉大到一倍左右。
#
# 还有一处与线程无关、却同样“看不见”的开销：**缺页**。训练的每一步都分配、释放同样一批大数组。glibc 默认把大块内存用
# `mmap` 单独向系统要、`free` 时立刻还回去，于是下一步拿到的是全新的页，每页第一次写入都要进内核清零。
# `tt.tuning.enable()` 的另一项就是用 `mallopt` 把这两个阈值调高（`tinytensor/heap.py`），释放的大块留在堆里给下一步复用。
# 下面在两个子进程里各打开调优，再分配、写满、释放 32 MiB 的数组 20 次，数一数缺页次数
# （环境变量 `TINYTENSOR_KEEP_HEAP=0` 让 `enable()` 跳过这一项）：

# %%
import subprocess

churn = """
import resource, numpy as np, tinytensor
tinytensor.tuning.enable()
for _ in range(3):
    np.empty(8 << 20, np.float32).fill(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.empty(8 << 20, np.float32).fill(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
for keep in ("1", "0"):
    env = dict(os.environ, TINYTENSOR_KEEP_HEAP=keep)
    out = subprocess.run([sys.executable, "-c", churn], env=env, capture_output=True, text=True, check=True)
    print(f"TINYTENSOR_KEEP_HEAP={keep}：20 次分配 32 MiB 共缺页 {int(out.stdout):>6} 次")

# %% [markdown]
# 这两处改动不改变任何数值（注意力按批切分与不切分逐位相同，测试检查），却让训练步快了一截：
# 在本项目的 2 核机器上，small 配置每步的缺页从约 1.2 万次降到几乎为 0，内核态时间从约 100 ms 降到十几 ms。
# 完整的前后对比和与 PyTorch 的比值见 README 的“性能”一节（`python -m bench.train_step` 复现）。

# %% [markdown]
# ## 小结
#
# - 反向传播 = 链式法则 + “多条路径相加”。每个算子只需提供自己的向量-雅可比积，引擎负责按拓扑序把它们串起来。
# - 张量级的节点把数值计算交给 NumPy；`ctx.save_for_backward` 保存的数组就是训练时额外占用的内存，反向后随图一起释放。
# - 拓扑排序必须迭代实现（一万层的链不能爆栈），父节点用元组保证梯度求和顺序确定。
# - 广播的梯度在引擎的一处用 `unbroadcast` 归约：先消掉补出的前导维，再对被拉长的长度为 1 的维求和。
# - 矩阵乘的梯度是 $GB^\top$ 与 $A^\top G$；softmax 的 VJP 是 $y \odot (g - \langle g, y\rangle)$；交叉熵是 $p - \text{onehot}$；
#   层归一化是 $r(\hat g - \overline{\hat g} - \hat x\, \overline{\hat g \hat x})$。
# - 梯度检查用 float64 的中心差分；float32 的舍入误差会淹没差分本身。
# - 融合算子少建节点、少存数组；numba 内核写成模块级、`cache=True`、数据全走参数、输出预分配、`prange` 每次迭代独占输出，
#   旁边放着 NumPy 参考；循环里的 `exp`、`tanh` 用可向量化的 `vexp`、`vtanh`，不用 `math.exp`、`math.tanh`。
# - CPU 调优是一次显式调用 `tt.tuning.enable()`：BLAS 单线程，大矩阵乘按行切、注意力按批切；大数组释放后留在堆里复用，
#   省掉每步上万次缺页。`import tinytensor` 本身不改变进程里的任何设置。
#
# ## 练习
#
# 1. 给 `Value` 加上 `exp` 和 `relu`，用它训练一个两层的小网络拟合 XOR，并与 tinytensor 的结果比较。
# 2. 仿照 `SiLU` 写一个 `Softplus`（$\log(1 + e^x)$）算子，注意 $x$ 很大时的数值稳定，用 `tt.gradcheck` 检查。
# 3. 推导 log_softmax 的 VJP，与 `tinytensor/ops/softmax.py` 中 `LogSoftmax.backward` 对照。
# 4. 把 9.2 节的内核扩展为层归一化的反向内核（每行一次遍历算出两个平均值，再写 `dx`），
#    `dw`、`db` 要跨行求和——想一想怎样并行才不违反“每次迭代拥有自己的输出”。
# 5. 用 `viz.trace_grads` 观察一个未经训练的 GPT（第 4 章）各层的梯度范数，看看残差连接起了什么作用。
