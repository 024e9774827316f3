"""算子测试的公共部分：一张“算子用例表”与生成输入、与 torch 对照的工具。

用例表 CASES 里每个用例的 ``fn(m, *xs)`` 同时适用于 tinytensor 和 torch（m 是 ``tt`` 或 ``torch``），
因为 tinytensor 的 API 与 torch 同名——这本身就是一条被检验的契约。API 不同的地方另给 ``torch_fn``。
同一张表驱动三组测试：float64 有限差分 (test_ops_gradcheck)、与 torch 逐算子对照 (test_ops_torch)、
float32 全程保持 float32 (test_ops_gradcheck)。
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import tinytensor as tt

# ---------------------------------------------------------------------------- 输入取值范围


def _away(x: np.ndarray, points: Sequence[float], margin: float = 0.05) -> np.ndarray:
    """把离不可导点太近的元素推开（有限差分与 float32 对照都不能落在拐点上）。"""
    for p in points:
        close = np.abs(x - p) < margin
        x = np.where(close, x + 2 * margin * np.sign(x - p + 1e-12), x)
    return x


def make_value(domain: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """按取值范围生成 float64 数组。"""
    if domain == "normal":
        return rng.standard_normal(shape)
    if domain == "pos":  # log / sqrt / 幂的底数
        return rng.uniform(0.5, 2.0, shape)
    if domain == "away0":  # relu / abs / 除数
        n = rng.standard_normal(shape)
        return np.sign(n + 1e-12) * (0.2 + np.abs(n))
    if domain == "clamp":  # 避开 clamp 的边界 ±0.5 与 0.2、-0.1
        return _away(rng.standard_normal(shape), (-0.5, 0.5, 0.2, -0.1))
    if domain == "distinct":  # max/min：互不相等且间隔 ≥ 0.2，避免并列
        n = int(np.prod(shape, dtype=np.int64))
        v = (rng.permutation(n) - n / 2) * 0.3 + rng.uniform(0, 0.1, n)
        return v.reshape(shape)
    if domain == "wide":  # sigmoid / tanh 的饱和区
        return rng.standard_normal(shape) * 4
    raise ValueError(domain)


def case_rng(name: str, salt: int = 0) -> np.random.Generator:
    """每个用例一个固定种子，失败可复现。"""
    return np.random.default_rng(zlib.crc32(name.encode()) + salt)


# ---------------------------------------------------------------------------- 用例表


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]
    shapes: tuple[tuple[int, ...], ...]
    domains: tuple[str, ...] | str = "normal"
    torch_fn: Callable[..., Any] | None = None  # API 与 torch 不同时
    torch: bool = True  # 是否与 torch 对照（如 torch 不支持负步幅切片）
    grad: tuple[bool, ...] | None = None  # 哪些输入需要梯度，默认全部
    rtol32: float = 1e-4
    atol32: float = 1e-5
    keeps_dtype: bool = True  # 输出 dtype 与输入相同（.double() 之类除外）
    gradcheck: bool = True  # 中间结果是 float32 的用例不能做 float64 有限差分

    def domain_of(self, i: int) -> str:
        return self.domains if isinstance(self.domains, str) else self.domains[i]

    def needs_grad(self, i: int) -> bool:
        return True if self.grad is None else self.grad[i]

    def arrays(self, salt: int = 0) -> list[np.ndarray]:
        rng = case_rng(self.name, salt)
        return [make_value(self.domain_of(i), s, rng) for i, s in enumerate(self.shapes)]

    def torch_callable(self) -> Callable[..., Any]:
        return self.torch_fn if self.torch_fn is not None else self.fn


def F(m: Any) -> Any:  # noqa: N802
    """m 的 nn.functional（tt.nn.functional 或 torch.nn.functional）。"""
    return m.nn.functional


def single(m: Any, out: Any) -> Any:
    """多输出（split/chunk）拼成一个一维张量，以便用一个上游梯度检查全部输出。"""
    if isinstance(out, (tuple, list)):
        return m.cat([o.reshape(-1) for o in out])
    return out


def _const(m: Any, arr: np.ndarray, like: Any = None) -> Any:
    """把常量数组（下标、掩码、浮点掩码）变成 m 的张量；浮点常量随 like 的 dtype。"""
    if like is not None and arr.dtype.kind == "f":
        return m.tensor(arr, dtype=like.dtype)
    return m.tensor(arr)


_rng = np.random.default_rng(20240601)
IDX_DUP = np.array([0, 2, 0, 3, 2, 2])  # 有重复的下标
IDX_ROW = np.array([0, 1, 0, 3])
IDX_COL = np.array([2, 2, 4, 0])
MASK_45 = _rng.random((4, 5)) < 0.5
MASK_ROW = np.array([True, False, True, True])
GATHER_IDX1 = _rng.integers(0, 4, (3, 6))  # 沿 dim 1 取，长度 6 > 4 必有重复
GATHER_IDX0 = _rng.integers(0, 3, (5, 4))
GATHER_SHORT = _rng.integers(0, 4, (2, 6))  # 在第 0 维比输入短：只取前 2 行
COND_34 = _rng.random((3, 4)) < 0.5
EMB_IDS = np.array([[1, 3, 1, 0, 5], [5, 5, 2, 1, 3]])  # 重复 id
CE_T = np.array([3, 0, 6, 2, 3])
CE_T_IGN = np.array([3, -100, 6, -100, 1])
CE_T3 = np.array([[1, 6, 0], [4, 4, 2]])
CE_T_IGN3 = np.array([3, 3, 6, 2, 0])  # 配合 ignore_index=3
CAUSAL_LIKE = np.tril(np.ones((5, 5), dtype=bool)) | (_rng.random((5, 5)) < 0.3)
MASK_FULLROW = np.tril(np.ones((5, 5), dtype=bool))
MASK_FULLROW[2] = False  # 整行被遮蔽：两边都应输出 0、梯度 0
FLOAT_MASK = np.where(_rng.random((5, 5)) < 0.3, -np.inf, _rng.standard_normal((5, 5)))
FLOAT_MASK[np.arange(5), np.arange(5)] = 0.0  # 每行至少一个有限值
DROP_MASK = (_rng.random((3, 4)) >= 0.3) / 0.7

BINARY_SHAPES = [
    ((3, 4), (3, 4)),
    ((2, 3, 4), (4,)),
    ((3, 1), (1, 4)),
    ((2, 1, 4), (3, 1)),
    ((), (2, 3)),
    ((2, 3), ()),
]


def _binary_cases() -> list[Case]:
    out = []
    for i, (sa, sb) in enumerate(BINARY_SHAPES):
        out += [
            Case(f"add-{i}", lambda m, a, b: a + b, (sa, sb)),
            Case(f"sub-{i}", lambda m, a, b: a - b, (sa, sb)),
            Case(f"mul-{i}", lambda m, a, b: a * b, (sa, sb)),
            Case(f"div-{i}", lambda m, a, b: a / b, (sa, sb), ("normal", "away0")),
            Case(f"pow-tensor-{i}", lambda m, a, b: a**b, (sa, sb), ("pos", "normal")),
        ]
    return out


def _matmul_cases() -> list[Case]:
    shapes = [
        ((3,), (3,)),  # 1-D · 1-D → 标量
        ((2, 3), (3, 4)),
        ((3,), (3, 4)),
        ((2, 3), (3,)),
        ((2, 3, 4), (2, 4, 5)),  # 批量
        ((2, 3, 4), (4, 5)),  # 共享权重
        ((4,), (2, 4, 5)),
        ((2, 3, 4), (4,)),
        ((2, 1, 3, 4), (5, 4, 2)),  # 批维广播
        ((3, 4), (2, 4, 5)),
    ]
    return [Case(f"matmul-{i}", lambda m, a, b: a @ b, s) for i, s in enumerate(shapes)] + [
        Case("matmul-fn", lambda m, a, b: m.matmul(a, b), ((2, 3), (3, 2))),
        Case("matmul-method", lambda m, a, b: a.matmul(b), ((3, 2), (2,))),
        # 同一个权重用在两次矩阵乘里（梯度相加）
        Case("matmul-shared-weight", lambda m, x, w: (x @ w).tanh() @ w.T, ((2, 3, 4), (4, 4))),
    ]


S3 = (2, 3, 4)

CASES: list[Case] = [
    *_binary_cases(),
    # ---- 与 Python 标量运算（反向运算符）
    Case("add-scalar", lambda m, x: x + 2.0, (S3,)),
    Case("radd-scalar", lambda m, x: 2.0 + x, (S3,)),
    Case("rsub-scalar", lambda m, x: 2.0 - x, (S3,)),
    Case("sub-scalar", lambda m, x: x - 1, (S3,)),
    Case("rmul-scalar", lambda m, x: -1.5 * x, (S3,)),
    Case("rdiv-scalar", lambda m, x: 3.0 / x, (S3,), "away0"),
    Case("div-scalar", lambda m, x: x / 4, (S3,)),
    Case("neg", lambda m, x: -x, (S3,)),
    Case("neg-method", lambda m, x: x.neg(), (S3,)),
    Case("pow-2", lambda m, x: x**2, (S3,)),
    Case("pow-3", lambda m, x: x**3, (S3,)),
    Case("pow-0.5", lambda m, x: x**0.5, (S3,), "pos"),
    Case("pow--1.5", lambda m, x: x**-1.5, (S3,), "pos"),
    Case("pow--2", lambda m, x: x**-2, (S3,), "away0"),
    Case("pow-0", lambda m, x: x**0, (S3,)),
    Case("pow-method", lambda m, x: x.pow(2.5), (S3,), "pos"),
    Case("rpow", lambda m, x: 2.0**x, (S3,)),
    *_matmul_cases(),
    # ---- 一元
    Case("exp", lambda m, x: m.exp(x), (S3,)),
    Case("log", lambda m, x: m.log(x), (S3,), "pos"),
    Case("sqrt", lambda m, x: m.sqrt(x), (S3,), "pos"),
    Case("rsqrt", lambda m, x: x.rsqrt(), (S3,), "pos"),
    Case("reciprocal", lambda m, x: x.reciprocal(), (S3,), "away0"),
    Case("square", lambda m, x: x.square(), (S3,)),
    Case("tanh", lambda m, x: m.tanh(x), (S3,), "wide"),
    Case("sigmoid", lambda m, x: m.sigmoid(x), (S3,), "wide"),
    Case("relu", lambda m, x: m.relu(x), (S3,), "away0"),
    Case("relu-F", lambda m, x: F(m).relu(x), (S3,), "away0"),
    Case("abs", lambda m, x: m.abs(x), (S3,), "away0"),
    Case("abs-op", lambda m, x: abs(x), (S3,), "away0"),
    Case("clamp", lambda m, x: x.clamp(min=-0.5, max=0.5), (S3,), "clamp"),
    Case("clamp-min", lambda m, x: m.clamp(x, min=0.2), (S3,), "clamp"),
    Case("clamp-max", lambda m, x: x.clamp(max=-0.1), (S3,), "clamp"),
    Case("double", lambda m, x: x.double() * 2, (S3,), keeps_dtype=False),
    Case("float", lambda m, x: x.float() * 2, (S3,), keeps_dtype=False, gradcheck=False),
    # ---- 归约
    Case("sum-all", lambda m, x: x.sum(), (S3,)),
    Case("sum-dim", lambda m, x: x.sum(dim=1), (S3,)),
    Case("sum-neg-keepdim", lambda m, x: x.sum(dim=-1, keepdim=True), (S3,)),
    Case("sum-tuple", lambda m, x: x.sum(dim=(0, 2)), (S3,)),
    Case("sum-tuple-keepdim", lambda m, x: m.sum(x, dim=(0, -1), keepdim=True), (S3,)),
    Case("sum-1d", lambda m, x: x.sum(0), ((5,),)),
    Case("mean-all", lambda m, x: x.mean(), (S3,)),
    Case("mean-dim", lambda m, x: x.mean(dim=1), (S3,)),
    Case("mean-keepdim", lambda m, x: m.mean(x, dim=-1, keepdim=True), (S3,)),
    Case("mean-tuple", lambda m, x: x.mean(dim=(0, 2)), (S3,)),
    Case("var-all", lambda m, x: x.var(), (S3,)),
    Case("var-all-c0", lambda m, x: x.var(correction=0), (S3,)),
    Case("var-dim-c1", lambda m, x: x.var(dim=1), (S3,)),
    Case("var-dim-c0-keepdim", lambda m, x: x.var(dim=-1, keepdim=True, correction=0), (S3,)),
    Case("var-tuple", lambda m, x: m.var(x, dim=(0, 2), correction=1), (S3,)),
    Case("var-tuple-c0-keepdim", lambda m, x: x.var(dim=(1, 2), keepdim=True, correction=0), (S3,)),
    Case("var-unbiased-false", lambda m, x: x.var(1, unbiased=False), (S3,)),
    Case("std", lambda m, x: x.std(dim=1), (S3,)),
    Case("max-all", lambda m, x: x.max(), (S3,), "distinct"),
    Case("min-all", lambda m, x: m.min(x), (S3,), "distinct"),
    Case("max-dim", lambda m, x: x.max(dim=1).values, (S3,), "distinct"),
    Case("max-dim-keepdim", lambda m, x: x.max(0, keepdim=True)[0], (S3,), "distinct"),
    Case("min-dim", lambda m, x: x.min(dim=-1).values, (S3,), "distinct"),
    Case("max-fn-dim", lambda m, x: m.max(x, dim=2).values, (S3,), "distinct"),
    # ---- 形状
    Case("reshape", lambda m, x: x.reshape(6, 4), (S3,)),
    Case("reshape-neg1", lambda m, x: x.reshape(-1), (S3,)),
    Case("reshape-tuple", lambda m, x: m.reshape(x, (4, -1)), (S3,)),
    # torch 的 view 不接受非连续输入，对照时用等价的 reshape
    Case("view", lambda m, x: x.view(2, 12), (S3,), torch_fn=lambda m, x: x.reshape(2, 12)),
    Case("view-0d", lambda m, x: x.view(1, 1), ((),)),
    Case("transpose", lambda m, x: x.transpose(0, 2), (S3,)),
    Case("transpose-neg", lambda m, x: m.transpose(x, -1, -2), (S3,)),
    Case("permute", lambda m, x: x.permute(2, 0, 1), (S3,)),
    Case("permute-tuple", lambda m, x: m.permute(x, (1, 2, 0)), (S3,)),
    Case("T-2d", lambda m, x: x.T, ((3, 5),)),
    Case("t-2d", lambda m, x: x.t(), ((3, 5),)),
    Case("mT", lambda m, x: x.mT, (S3,)),
    Case("unsqueeze-0", lambda m, x: x.unsqueeze(0), (S3,)),
    Case("unsqueeze-neg", lambda m, x: m.unsqueeze(x, -1), (S3,)),
    Case("unsqueeze-mid", lambda m, x: x.unsqueeze(2), (S3,)),
    Case("squeeze-all", lambda m, x: x.squeeze(), ((2, 1, 3, 1),)),
    Case("squeeze-dim", lambda m, x: x.squeeze(1), ((2, 1, 3, 1),)),
    Case("squeeze-neg", lambda m, x: m.squeeze(x, -1), ((2, 1, 3, 1),)),
    Case("squeeze-noop", lambda m, x: x.squeeze(0), ((2, 1, 3, 1),)),
    Case("expand", lambda m, x: x.expand(3, 4), ((1, 4),)),
    Case("expand-new-dims", lambda m, x: x.expand(2, 3, 4), ((3, 1),)),
    Case("expand-neg1", lambda m, x: x.expand(2, -1, 5), ((3, 1),)),
    Case("expand-as", lambda m, x, y: x.expand_as(y) * y, ((3, 1), (2, 3, 4))),
    Case("flatten", lambda m, x: x.flatten(), (S3,)),
    Case("flatten-1", lambda m, x: m.flatten(x, 1), (S3,)),
    Case("flatten-0-1", lambda m, x: x.flatten(0, 1), (S3,)),
    Case("repeat", lambda m, x: x.repeat(2, 3), ((2, 3),)),
    Case("repeat-more-dims", lambda m, x: x.repeat(2, 1, 3), ((2, 3),)),
    # ---- 索引
    Case("index-int", lambda m, x: x[1], ((4, 5),)),
    Case("index-neg-int", lambda m, x: x[-1], ((4, 5),)),
    Case("index-slice", lambda m, x: x[1:3], ((4, 5),)),
    Case("index-step", lambda m, x: x[::2, 1::2], ((4, 5),)),
    Case("index-neg-slice", lambda m, x: x[1:, :-1], ((4, 5),)),
    Case("index-int-slice", lambda m, x: x[0, :, 1:3], (S3,)),
    Case("index-ellipsis", lambda m, x: x[..., 2], (S3,)),
    Case("index-ellipsis-neg", lambda m, x: x[..., -1], (S3,)),
    Case("index-none", lambda m, x: x[None], ((4, 5),)),
    Case("index-none-int", lambda m, x: x[:, None, 1], ((4, 5),)),
    Case("index-ellipsis-none", lambda m, x: x[..., None], ((4, 5),)),
    Case("index-int-array-dup", lambda m, x: x[_const(m, IDX_DUP)], ((4, 5),)),
    Case("index-list", lambda m, x: x[[0, 3, 0]], ((4, 5),)),
    Case("index-two-arrays", lambda m, x: x[_const(m, IDX_ROW), _const(m, IDX_COL)], ((4, 5),)),
    Case("index-slice-array", lambda m, x: x[:, _const(m, np.array([4, 0, 4]))], ((4, 5),)),
    Case("index-bool-2d", lambda m, x: x[_const(m, MASK_45)], ((4, 5),)),
    Case("index-bool-rows", lambda m, x: x[_const(m, MASK_ROW)], ((4, 5),)),
    Case("index-neg-step", lambda m, x: x[::-1, ::-2], ((4, 5),), torch=False),  # torch 不支持负步幅
    # ---- gather / cat / stack / split
    Case("gather-1", lambda m, x: x.gather(1, _const(m, GATHER_IDX1)), ((3, 4),)),
    Case("gather-short", lambda m, x: x.gather(1, _const(m, GATHER_SHORT)), ((3, 4),)),
    Case("gather-0", lambda m, x: m.gather(x, 0, _const(m, GATHER_IDX0)), ((3, 4),)),
    Case("cat-0", lambda m, a, b: m.cat([a, b], dim=0), ((2, 3), (4, 3))),
    Case("cat-neg", lambda m, a, b: m.cat([a, b], dim=-1), ((2, 3), (2, 1))),
    Case("cat-three", lambda m, a, b, c: m.cat([a, b, c], dim=1), ((2, 1, 4), (2, 3, 4), (2, 2, 4))),
    Case("cat-reuse", lambda m, a: m.cat([a, a * 2, a], dim=0), ((2, 3),)),
    Case("stack-0", lambda m, a, b, c: m.stack([a, b, c]), ((2, 3),) * 3),
    Case("stack-neg", lambda m, a, b: m.stack([a, b], dim=-1), ((2, 3),) * 2),
    Case("stack-mid", lambda m, a, b: m.stack((a, b), dim=1), ((2, 3),) * 2),
    Case("split-int", lambda m, x: x.split(2, dim=1), ((3, 5),)),
    Case("split-list", lambda m, x: m.split(x, [1, 3, 1], dim=1), ((3, 5),)),
    Case("split-first", lambda m, x: x.split(3)[1], ((7, 2),)),
    Case("chunk", lambda m, x: x.chunk(3, dim=0), ((7, 2),)),
    Case("chunk-neg", lambda m, x: m.chunk(x, 2, dim=-1), ((3, 4),)),
    # ---- 掩码 / 选择 / 三角
    Case("masked-fill", lambda m, x: x.masked_fill(_const(m, COND_34), -1.5), ((3, 4),)),
    Case("masked-fill-bcast", lambda m, x: x.masked_fill(_const(m, MASK_ROW[None, :]), 0.0), ((3, 4),)),
    Case("masked-fill-fn", lambda m, x: m.masked_fill(x, _const(m, COND_34), -1e4), ((3, 4),)),
    Case("where", lambda m, a, b: m.where(_const(m, COND_34), a, b), ((3, 4), (3, 4))),
    Case("where-bcast", lambda m, a, b: m.where(_const(m, COND_34), a, b), ((3, 1), (4,))),
    Case("where-scalar", lambda m, a: m.where(_const(m, COND_34), a, 0.0), ((3, 4),)),
    Case("where-scalar-first", lambda m, b: m.where(_const(m, COND_34), 2.0, b), ((3, 4),)),
    Case("tril", lambda m, x: m.tril(x), ((3, 5),)),
    Case("tril-neg", lambda m, x: x.tril(-1), ((2, 4, 4),)),
    Case("triu", lambda m, x: m.triu(x, diagonal=1), ((2, 4, 4),)),
    Case("triu-0", lambda m, x: x.triu(), ((5, 3),)),
    # ---- softmax
    Case("softmax", lambda m, x: x.softmax(dim=-1), ((3, 4, 5),)),
    Case("softmax-0", lambda m, x: m.softmax(x, dim=0), ((3, 4, 5),), "wide"),
    Case("softmax-F", lambda m, x: F(m).softmax(x, dim=1), ((3, 4, 5),)),
    Case("log-softmax", lambda m, x: x.log_softmax(dim=-1), ((3, 4, 5),), "wide"),
    Case("log-softmax-1", lambda m, x: F(m).log_softmax(x, dim=1), ((3, 4, 5),)),
    Case("log-softmax-fn", lambda m, x: m.log_softmax(x, 0), ((3, 4),)),
    # ---- nn.functional
    Case("linear-bias", lambda m, x, w, b: F(m).linear(x, w, b), ((2, 3, 4), (5, 4), (5,))),
    Case("linear-nobias", lambda m, x, w: F(m).linear(x, w), ((3, 4), (5, 4))),
    Case("linear-1d", lambda m, x, w, b: F(m).linear(x, w, b), ((4,), (5, 4), (5,))),
    Case("linear-tied", lambda m, x, w: F(m).linear(F(m).linear(x, w).tanh(), w), ((3, 4), (4, 4))),
    Case("embedding", lambda m, w: F(m).embedding(_const(m, EMB_IDS), w), ((6, 3),)),
    Case("embedding-1d", lambda m, w: F(m).embedding(_const(m, np.array([2, 2, 0])), w), ((4, 3),)),
    Case(
        "layer-norm-affine",
        lambda m, x, w, b: F(m).layer_norm(x, (6,), w, b),
        ((2, 3, 6), (6,), (6,)),
        atol32=5e-5,
    ),
    Case("layer-norm-plain", lambda m, x: F(m).layer_norm(x, (6,)), ((4, 6),), atol32=5e-5),
    Case("layer-norm-weight", lambda m, x, w: F(m).layer_norm(x, [6], w), ((4, 6), (6,)), atol32=5e-5),
    Case(
        "layer-norm-bias",
        lambda m, x, b: F(m).layer_norm(x, 6, bias=b),
        ((4, 6), (6,)),
        torch_fn=lambda m, x, b: F(m).layer_norm(x, (6,), None, b),
        atol32=5e-5,
    ),
    Case("layer-norm-eps", lambda m, x: F(m).layer_norm(x, (5,), eps=1e-2), ((3, 5),), atol32=5e-5),
    Case("ce-mean", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T)), ((5, 7),)),
    Case("ce-sum", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T), reduction="sum"), ((5, 7),)),
    Case("ce-none", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T), reduction="none"), ((5, 7),)),
    Case("ce-ignore-default", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T_IGN)), ((5, 7),)),
    Case(
        "ce-ignore-none",
        lambda m, x: F(m).cross_entropy(x, _const(m, CE_T_IGN), reduction="none"),
        ((5, 7),),
    ),
    Case("ce-ignore-3", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T_IGN3), ignore_index=3), ((5, 7),)),
    Case(
        "ce-ignore-3-sum",
        lambda m, x: F(m).cross_entropy(x, _const(m, CE_T_IGN3), ignore_index=3, reduction="sum"),
        ((5, 7),),
    ),
    Case("ce-3d", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T3)), ((2, 7, 3),)),
    Case("ce-3d-none", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T3), reduction="none"), ((2, 7, 3),)),
    Case("ce-1d", lambda m, x: F(m).cross_entropy(x, _const(m, np.array(4))), ((7,),)),
    Case("ce-wide", lambda m, x: F(m).cross_entropy(x, _const(m, CE_T)), ((5, 7),), "wide"),
    Case("nll", lambda m, x: F(m).nll_loss(x.log_softmax(-1), _const(m, CE_T)), ((5, 7),)),
    Case("nll-sum", lambda m, x: F(m).nll_loss(x, _const(m, CE_T), reduction="sum"), ((5, 7),)),
    Case("nll-none", lambda m, x: F(m).nll_loss(x, _const(m, CE_T), reduction="none"), ((5, 7),)),
    Case("nll-ignore", lambda m, x: F(m).nll_loss(x, _const(m, CE_T_IGN3), ignore_index=3), ((5, 7),)),
    Case("gelu", lambda m, x: F(m).gelu(x, approximate="tanh"), ((3, 4, 5),), "wide"),
    Case("mse", lambda m, x, y: F(m).mse_loss(x, y), ((3, 4), (3, 4))),
    Case("mse-sum", lambda m, x, y: F(m).mse_loss(x, y, reduction="sum"), ((3, 4), (3, 4))),
    Case("mse-none", lambda m, x, y: F(m).mse_loss(x, y, reduction="none"), ((3, 4), (3, 4))),
    Case("dropout-p0", lambda m, x: F(m).dropout(x, p=0.0) * 2, ((3, 4),)),
    Case("dropout-eval", lambda m, x: F(m).dropout(x, p=0.5, training=False) * 2, ((3, 4),)),
    Case(
        "dropout-mask",
        lambda m, x: tt.ops.elementwise.Dropout.apply(x, mask=DROP_MASK.astype(x.dtype)),
        ((3, 4),),
        torch_fn=lambda m, x: x * _const(m, DROP_MASK, like=x),
    ),
    # ---- 注意力 (B, nh, T, hs)
    Case(
        "sdpa",
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v),
        ((2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4)),
        atol32=3e-5,
    ),
    Case(
        "sdpa-causal",
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v, is_causal=True),
        ((2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4)),
        atol32=3e-5,
    ),
    Case(
        "sdpa-bool-mask",
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v, attn_mask=_const(m, CAUSAL_LIKE)),
        ((2, 5, 4), (2, 5, 4), (2, 5, 3)),
        atol32=3e-5,
    ),
    Case(
        "sdpa-full-masked-row",
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v, attn_mask=_const(m, MASK_FULLROW)),
        ((2, 5, 4), (2, 5, 4), (2, 5, 3)),
        atol32=3e-5,
    ),
    Case(
        "sdpa-float-mask",
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v, attn_mask=_const(m, FLOAT_MASK, like=q)),
        ((2, 5, 4), (2, 5, 4), (2, 5, 3)),
        atol32=3e-5,
    ),
    Case(
        "sdpa-scale",
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v, scale=0.3),
        ((3, 4), (5, 4), (5, 2)),
        atol32=3e-5,
    ),
    Case(
        "sdpa-causal-rect",  # Tq < Tk：与 torch 一样左上角对齐
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v, is_causal=True),
        ((2, 3, 4), (2, 6, 4), (2, 6, 5)),
        atol32=3e-5,
    ),
    Case(
        "sdpa-bcast-kv",  # k、v 的批维广播
        lambda m, q, k, v: F(m).scaled_dot_product_attention(q, k, v),
        ((2, 3, 4), (1, 3, 4), (1, 3, 4)),
        atol32=3e-5,
    ),
]

CASE_BY_NAME = {c.name: c for c in CASES}
assert len(CASE_BY_NAME) == len(CASES), "用例名重复"


# ---------------------------------------------------------------------------- 运行


def tt_inputs(case: Case, dtype: Any, salt: int = 0) -> list[tt.Tensor]:
    """按用例生成 tinytensor 叶子输入（连续内存）。"""
    return [
        tt.tensor(a.astype(dtype), requires_grad=case.needs_grad(i)) for i, a in enumerate(case.arrays(salt))
    ]


def run_tt(case: Case, xs: Sequence[tt.Tensor]) -> tt.Tensor:
    return single(tt, case.fn(tt, *xs))


def upstream(shape: tuple[int, ...], dtype: Any, seed: int = 1) -> np.ndarray:
    """随机上游梯度 dL/dy（两边用同一个）。"""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
