"""Hypothesis 形状模糊测试：随机的可广播形状对、归约维、排列、reshape 目标、切片……
每个例子都与 torch 对照前向和反向，输入随机取连续或非连续布局、float64 或 float32。
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from helpers_ops import make_value  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from torch_compare import LAYOUTS, same_dtype  # noqa: E402
from torch_compare import compare as _compare  # noqa: E402

import tinytensor as tt  # noqa: E402

pytestmark = pytest.mark.torch

# 例子数可用环境变量调大做一次长跑：TT_FUZZ_EXAMPLES=1000 pytest tests/test_ops_fuzz.py
FUZZ = settings(max_examples=int(os.environ.get("TT_FUZZ_EXAMPLES", "30")), deadline=None)

layouts = st.sampled_from(LAYOUTS)
dtypes = st.sampled_from([np.float64, np.float32])
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)
seeds = st.integers(0, 2**31 - 1)


def compare(fn_tt, fn_torch, arrays, dtype, layout):
    """float32 时放宽绝对误差：随机形状最多 256 个元素，求和的舍入误差比用例表里的大。"""
    atol = 5e-5 if dtype == np.float32 else None
    return _compare(fn_tt, fn_torch, arrays, dtype, layout, atol=atol)


def _vals(domain: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return make_value(domain, shape, np.random.default_rng(seed))


BINARY = {
    "add": (lambda a, b: a + b, "normal"),
    "sub": (lambda a, b: a - b, "normal"),
    "mul": (lambda a, b: a * b, "normal"),
    "div": (lambda a, b: a / b, "away0"),
    "pow": (lambda a, b: a.abs() ** b, "away0"),
}


@FUZZ
@given(
    shp=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
    op=st.sampled_from(sorted(BINARY)),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
)
def test_binary_broadcast(shp, op, dtype, layout, seed) -> None:
    fn, dom = BINARY[op]
    sa, sb = shp.input_shapes
    arrays = [_vals(dom, sa, seed), _vals("normal" if op != "div" else "away0", sb, seed + 1)]
    out, _ = compare(fn, fn, arrays, dtype, layout)
    assert out.shape == shp.result_shape


@FUZZ
@given(
    shp=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
)
def test_where_broadcast(shp, dtype, layout, seed) -> None:
    sc, sa, sb = shp.input_shapes
    cond = np.random.default_rng(seed).random(sc) < 0.5
    compare(
        lambda a, b: tt.where(tt.tensor(cond), a, b),
        lambda a, b: torch.where(torch.tensor(cond), a, b),
        [_vals("normal", sa, seed), _vals("normal", sb, seed + 1)],
        dtype,
        layout,
    )


@st.composite
def reduce_args(draw):
    shape = draw(shapes)
    nd = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        dim = None
    elif kind == "int":
        dim = draw(st.integers(-nd, nd - 1))
    else:
        dim = tuple(draw(st.lists(st.integers(-nd, nd - 1), min_size=1, max_size=nd, unique_by=lambda d: d % nd)))
    return shape, dim


@FUZZ
@given(
    args=reduce_args(),
    op=st.sampled_from(["sum", "mean", "var0", "var1", "std"]),
    keepdim=st.booleans(),
    dtype=dtypes,
    layout=layouts,
    seed=seeds,
)
def test_reductions(args, op, keepdim, dtype, layout, seed) -> None:
    shape, dim = args
    dims = range(len(shape)) if dim is None else ([dim] if isinstance(dim, int) else dim)
    count = int(np.prod([shape[d] for d in dims]))
    if op in ("var1", "std") and count < 2:
        return  # N - 1 = 0：无偏方差无定义

    def fn(x):
        if op in ("sum", "mean"):
            if dim is None:
                return getattr(x, op)()
            return getattr(x, op)(dim=dim, keepdim=keepdim)
        c = 0 if op == "var0" else 1
        name = "std" if op == "std" else "var"
        return getattr(x, name)(dim=dim, keepdim=keepdim, correction=c)

    compare(fn, fn, [_vals("normal", shape, seed)], dtype, layout)


@FUZZ
@given(
    shape=shapes, data=st.data(), largest=st.booleans(), keepdim=st.booleans(), dtype=dtypes, layout=layouts,
    seed=seeds,
)
def test_max_min_dim(shape, data, largest, keepdim, dtype, layout, seed) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    name = "max" if largest else "min"
    x = _vals("distinct", shape, seed)
    compare(lambda a: getattr(a, name)(dim, keepdim).values, lambda a: getattr(a, name)(dim, keepdim).values,
            [x], dtype, layout)
    compare(lambda a: getattr(a, name)(), lambda a: getattr(a, name)(), [x], dtype, layout)
    got = getattr(tt.tensor(x), name)(dim, keepdim).indices
    want = getattr(torch.tensor(x), name)(dim, keepdim).indices
    np.testing.assert_array_equal(got.data, want.numpy())


@FUZZ
@given(shape=shapes, data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)
def test_permute_transpose(shape, data, dtype, layout, seed) -> None:
    nd = len(shape)
    perm = data.draw(st.permutations(range(nd)))
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    x = _vals("normal", shape, seed)
    compare(lambda a: a.permute(*perm) * 2, lambda a: a.permute(*perm) * 2, [x], dtype, layout)
    compare(lambda a: a.transpose(d0, d1).exp(), lambda a: a.transpose(d0, d1).exp(), [x], dtype, layout)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@FUZZ
@given(shape=shapes, data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)
def test_reshape(shape, data, dtype, layout, seed) -> None:
    rem = int(np.prod(shape))
    target = []
    for _ in range(data.draw(st.integers(0, 3))):
        d = data.draw(st.sampled_from(_divisors(rem)))
        target.append(d)
        rem //= d
    target.append(rem)
    target = data.draw(st.permutations(target))
    if data.draw(st.booleans()):
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    x = _vals("normal", shape, seed)
    # 先做一次运算，使 reshape 的输入在 torch 里也可能是非连续的
    compare(lambda a: (a * 1.5).reshape(target), lambda a: (a * 1.5).reshape(target), [x], dtype, layout)


@st.composite
def index_key(draw, shape):
    key = []
    for s in shape:
        kind = draw(st.sampled_from(["slice", "slice", "int", "full"]))
        if kind == "int":
            key.append(draw(st.integers(-s, s - 1)))
        elif kind == "full":
            key.append(slice(None))
        else:
            start = draw(st.none() | st.integers(-s - 1, s + 1))
            stop = draw(st.none() | st.integers(-s - 1, s + 1))
            step = draw(st.none() | st.integers(1, 3))
            key.append(slice(start, stop, step))
    if draw(st.booleans()):
        key.insert(draw(st.integers(0, len(key))), None)
    return tuple(key)


@FUZZ
@given(shape=shapes, data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)
def test_basic_indexing(shape, data, dtype, layout, seed) -> None:
    key = data.draw(index_key(shape))
    x = _vals("normal", shape, seed)
    compare(lambda a: a[key], lambda a: a[key], [x], dtype, layout)


@FUZZ
@given(shape=shapes, data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)
def test_advanced_indexing(shape, data, dtype, layout, seed) -> None:
    """整数数组（可重复、可为负）与布尔掩码。"""
    rng = np.random.default_rng(seed)
    n = data.draw(st.integers(1, 6))
    idx = rng.integers(-shape[0], shape[0], n)
    mask = rng.random(shape[-1:]) < 0.5
    x = _vals("normal", shape, seed)
    compare(lambda a: a[tt.tensor(idx)], lambda a: a[torch.tensor(idx)], [x], dtype, layout)
    compare(lambda a: a[..., tt.tensor(mask)], lambda a: a[..., torch.tensor(mask)], [x], dtype, layout)


@st.composite
def matmul_shapes(draw):
    bshp = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    sa = (k,) if draw(st.integers(0, 5)) == 0 else bshp.input_shapes[0] + (n, k)
    sb = (k,) if draw(st.integers(0, 5)) == 0 else bshp.input_shapes[1] + (k, m)
    return sa, sb


@FUZZ
@given(shp=matmul_shapes(), dtype=dtypes, layout=layouts, seed=seeds)
def test_matmul(shp, dtype, layout, seed) -> None:
    sa, sb = shp
    compare(lambda a, b: a @ b, lambda a, b: a @ b, [_vals("normal", sa, seed), _vals("normal", sb, seed + 1)],
            dtype, layout)


@FUZZ
@given(shape=shapes, data=st.data(), log=st.booleans(), dtype=dtypes, layout=layouts, seed=seeds)
def test_softmax(shape, data, log, dtype, layout, seed) -> None:
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    name = "log_softmax" if log else "softmax"
    compare(lambda a: getattr(a, name)(dim), lambda a: getattr(a, name)(dim), [_vals("wide", shape, seed)],
            dtype, layout)


@FUZZ
@given(shape=shapes, data=st.data(), stack=st.booleans(), dtype=dtypes, layout=layouts, seed=seeds)
def test_cat_stack(shape, data, stack, dtype, layout, seed) -> None:
    nd = len(shape)
    k = data.draw(st.integers(1, 3))
    if stack:
        dim = data.draw(st.integers(-nd - 1, nd))
        shps = [shape] * k
    else:
        dim = data.draw(st.integers(-nd, nd - 1))
        shps = [shape[: dim % nd] + (data.draw(st.integers(1, 3)),) + shape[dim % nd + 1 :] for _ in range(k)]
    arrays = [_vals("normal", s, seed + i) for i, s in enumerate(shps)]
    name = "stack" if stack else "cat"
    compare(lambda *xs: getattr(tt, name)(list(xs), dim=dim), lambda *xs: getattr(torch, name)(list(xs), dim=dim),
            arrays, dtype, layout)


@FUZZ
@given(shape=shapes, data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)
def test_expand_squeeze_unsqueeze(shape, data, dtype, layout, seed) -> None:
    nd = len(shape)
    ones = tuple(1 if data.draw(st.booleans()) else s for s in shape)  # 一些维变成 1
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    target = lead + tuple(data.draw(st.integers(1, 3)) if s == 1 else s for s in ones)
    x = _vals("normal", ones, seed)
    compare(lambda a: a.expand(*target), lambda a: a.expand(*target), [x], dtype, layout)
    d = data.draw(st.integers(-nd - 1, nd))
    compare(lambda a: a.unsqueeze(d) * 2, lambda a: a.unsqueeze(d) * 2, [x], dtype, layout)
    sd = data.draw(st.integers(-nd, nd - 1))
    compare(lambda a: a.squeeze(sd) * 2, lambda a: a.squeeze(sd) * 2, [x], dtype, layout)
    compare(lambda a: a.squeeze() * 2, lambda a: a.squeeze() * 2, [x], dtype, layout)


@FUZZ
@given(shape=shapes, data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)
def test_gather(shape, data, dtype, layout, seed) -> None:
    nd = len(shape)
    dim = data.draw(st.integers(-nd, nd - 1))
    ishape = tuple(data.draw(st.integers(1, s)) for s in shape)
    ishape = ishape[: dim % nd] + (data.draw(st.integers(1, 5)),) + ishape[dim % nd + 1 :]
    idx = np.random.default_rng(seed).integers(0, shape[dim], ishape)
    compare(lambda a: a.gather(dim, tt.tensor(idx)), lambda a: a.gather(dim, torch.tensor(idx)),
            [_vals("normal", shape, seed)], dtype, layout)


@FUZZ
@given(shape=shapes, data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)
def test_split_chunk(shape, data, dtype, layout, seed) -> None:
    nd = len(shape)
    dim = data.draw(st.integers(-nd, nd - 1))
    size = data.draw(st.integers(1, 4))
    chunks = data.draw(st.integers(1, 4))
    x = _vals("normal", shape, seed)

    def both(m):
        return lambda a: m.cat([p.reshape(-1) * (i + 1) for i, p in enumerate(a.split(size, dim))]
                               + [p.reshape(-1) for p in a.chunk(chunks, dim)])

    compare(both(tt), both(torch), [x], dtype, layout)
    assert len(tt.tensor(x).chunk(chunks, dim)) == len(torch.tensor(x).chunk(chunks, dim))


@FUZZ
@given(
    b=st.integers(1, 3), t=st.integers(1, 6), c=st.integers(1, 5), v=st.integers(2, 7),
    dtype=dtypes, layout=layouts, seed=seeds,
)
def test_cross_entropy_shapes(b, t, c, v, dtype, layout, seed) -> None:
    """(B, T, V) 的 logits 展平后算交叉熵，含被忽略的位置。"""
    rng = np.random.default_rng(seed)
    tgt = rng.integers(0, v, (b, t))
    tgt[rng.random((b, t)) < 0.2] = -100
    tgt[0, 0] = 0  # 至少一个有效位置

    def fn(m):
        return lambda x: m.nn.functional.cross_entropy(x.reshape(-1, v), m.tensor(tgt).reshape(-1))

    out, q = compare(fn(tt), fn(torch), [_vals("wide", (b, t, v), seed)], dtype, layout)
    assert same_dtype(out, q)
