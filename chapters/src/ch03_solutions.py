# %% [markdown]
# # 第 3 章 练习答案
#
# 先在第 3 章末尾自己做一遍，再来对照。这里直接用库里的类（`gpt_numpy/attention_steps.py`），
# 它们与正文里亲手写的版本已经逐项核对过。每道题的最后都有检查，结论不成立时会报错。

# %%
import math
import os

import numpy as np

import tinytensor as tt
from gpt_numpy import attention_steps as NA
from tinytensor import nn

QUICK = os.environ.get("LLMZH_QUICK") == "1"
np.set_printoptions(precision=4, suppress=True)
xb = np.random.default_rng(0).standard_normal((2, 5, 4))  # (B, T, C)，float64
x = tt.tensor(xb)
print("快速模式" if QUICK else "完整模式")

# %% [markdown]
# ## 练习 1：把缩放折进权重
#
# 分数是 `q·k / √hs`，而 `q = x W_qᵀ + b_q` 对 `W_q`、`b_q` 是线性的，所以 `(x (W_q/√hs)ᵀ + b_q/√hs)·k = q·k / √hs`：
# 把查询的权重和偏置预先除以 `√hs`，softmax 前就不用再除。有些实现正是这样省掉一次逐元素除法的。

# %%
class SelfAttentionNoScale(NA.SelfAttentionV2):
    """与 SelfAttentionV2 相同，只是 softmax 前不除以 √hs。"""

    def forward(self, x: tt.Tensor) -> tt.Tensor:
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        return (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v


tt.manual_seed(0)
ref = NA.SelfAttentionV2(4, 3, qkv_bias=True).double()
folded = SelfAttentionNoScale(4, 3, qkv_bias=True).double()
state = {k: v.data.copy() for k, v in ref.state_dict().items()}
state["W_query.weight"] /= math.sqrt(3)
state["W_query.bias"] /= math.sqrt(3)
folded.load_state_dict(state)
diff = np.abs(folded(x).data - ref(x).data).max()
print("折进权重后的最大差：", diff)
assert diff < 1e-12

# %% [markdown]
# ## 练习 2：用梯度检查因果性
#
# 只对位置 `i` 的输出求和再反向，得到的是“位置 `i` 的输出依赖哪些输入”。因果注意力里，
# 位置 `j > i` 的输入梯度必须全为 0；没有掩码的 `SelfAttentionV2` 则每个位置都依赖全部输入。

# %%
def dependency(module: nn.Module, T: int) -> np.ndarray:
    """(T, T) 矩阵：第 i 行第 j 列是 ‖∂(Σ 输出_i)/∂ 输入_j‖。"""
    out = np.zeros((T, T))
    for i in range(T):
        xi = tt.tensor(xb[:1, :T], requires_grad=True)
        module(xi)[:, i].sum().backward()
        out[i] = np.linalg.norm(xi.grad.numpy()[0], axis=-1)
    return out


tt.manual_seed(0)
mha = NA.MultiHeadAttention(4, 4, 8, 0.0, num_heads=2).double()
dep = dependency(mha, 5)
print("MultiHeadAttention：\n", dep)
assert np.all(np.triu(dep, k=1) == 0) and np.all(dep[np.tril_indices(5)] > 0)

dep_full = dependency(NA.SelfAttentionV2(4, 4).double(), 5)
print("SelfAttentionV2（没有掩码）：\n", dep_full)
assert np.all(dep_full > 0)

# %% [markdown]
# ## 练习 3：dropout 的期望
#
# 给定输入，注意力输出是 `dropout(A) @ V`。dropout 把每个权重以概率 `1-p` 乘以 `1/(1-p)`、否则变成 0，
# 所以每个权重的期望不变：`E[dropout(A)] = A`。输出对 `dropout(A)` 是线性的，期望可以移进去：
# `E[输出] = A @ V`，正是 `eval()` 模式的输出。多次平均的误差是独立随机量平均的误差，约按 `1/√N` 减小。

# %%
tt.manual_seed(0)
ca = NA.CausalAttention(4, 3, 8, dropout=0.5).double()
target = ca.eval()(x).data
ca.train()
tt.manual_seed(1)
samples = np.stack([ca(x).data for _ in range(400 if QUICK else 6400)])
print("N        平均值与 eval 输出之差的均方根")
errors = {}
for n in ([25, 100, 400] if QUICK else [100, 400, 1600, 6400]):
    errors[n] = float(np.sqrt(((samples[:n].mean(0) - target) ** 2).mean()))
    print(f"{n:<8} {errors[n]:.4f}")
ns = sorted(errors)
assert errors[ns[-1]] < errors[ns[0]]

# %% [markdown]
# 误差随 N 增大而减小。理论上它按 `1/√N` 减小（N 乘 4，误差减半）；单次实验的数字围绕这个趋势起伏，
# 相邻两档的比值不会恰好是 2。

# %% [markdown]
# ## 练习 4：从高效版拆回单头
#
# 把 `W_query.weight`（形状 `(nh·hs, d_in)`）按行切成 `nh` 段，第 `h` 段就是第 `h` 个头的权重；`K`、`V`、偏置同理。
# 这要求 `out_proj` 是恒等映射（权重为单位矩阵、偏置为 0），因为 wrapper 没有输出投影。

# %%
def wrapper_from_multihead(mha: NA.MultiHeadAttention, context_length: int) -> NA.MultiHeadAttentionWrapper:
    w, b = mha.out_proj.weight.data, mha.out_proj.bias.data
    if not (np.array_equal(w, np.eye(len(w))) and not b.any()):
        raise ValueError("out_proj 不是恒等映射，拆不成没有输出投影的 wrapper")
    nh, hs = mha.num_heads, mha.head_dim
    has_bias = mha.W_query.bias is not None
    d_in = mha.W_query.weight.shape[1]
    wrapper = NA.MultiHeadAttentionWrapper(d_in, mha.d_out, context_length, 0.0, nh, has_bias)
    state = {}
    for h in range(nh):
        for name in ("W_query", "W_key", "W_value"):
            lin = getattr(mha, name)
            state[f"heads.{h}.{name}.weight"] = lin.weight.data[h * hs : (h + 1) * hs]
            if has_bias:
                state[f"heads.{h}.{name}.bias"] = lin.bias.data[h * hs : (h + 1) * hs]
    wrapper.to(mha.W_query.weight.dtype)
    wrapper.load_state_dict(state)
    return wrapper


tt.manual_seed(0)
original = NA.MultiHeadAttentionWrapper(4, 6, 8, 0.0, num_heads=3, qkv_bias=True).double()
mha = NA.multihead_from_wrapper(original)  # 高效版，out_proj 为恒等
back = wrapper_from_multihead(mha, 8)
print("拆回的 wrapper 与高效版输出的最大差：", np.abs(back(x).data - mha(x).data).max())
assert np.abs(back(x).data - mha(x).data).max() < 1e-12

try:
    wrapper_from_multihead(NA.MultiHeadAttention(4, 6, 8, 0.0, num_heads=3), 8)
except ValueError as e:
    print("随机初始化的 out_proj：", e)

# %% [markdown]
# `out_proj` 不是恒等映射时一般拆不成：它的每个输出分量都混合了所有头的结果，`out = Σ_h ctx_h W_oᵀ[h 段] + b`，
# 是各头的**加和**而不是**拼接**；wrapper 只能拼接，再在后面接一个线性层才等价。

# %% [markdown]
# ## 练习 5：数参数
#
# 三个投影各 `d × d`，带偏置时再各加 `d`；输出投影 `d × d` 加偏置 `d`。
# 合计 `4d² + d + 3d·[qkv_bias]`，与头数 `nh` 无关——多头只是把同样的维度切成几段。

# %%
def n_params(d: int, qkv_bias: bool) -> int:
    return 4 * d * d + d + (3 * d if qkv_bias else 0)


for d, nh in [(768, 12), (1024, 16), (1280, 20), (1600, 25)]:
    for bias in (False, True):
        m = NA.MultiHeadAttention(d, d, 8, 0.0, num_heads=nh, qkv_bias=bias)
        actual = sum(p.numel() for p in m.parameters())
        assert actual == n_params(d, bias)
    one_head = sum(p.numel() for p in NA.MultiHeadAttention(d, d, 8, 0.0, num_heads=1).parameters())
    assert one_head == n_params(d, False)
    print(f"d={d:<5} nh={nh:<3} 参数 {n_params(d, False):>10,}（带 qkv 偏置 {n_params(d, True):,}）；nh=1 时同样是 {one_head:,}")
