"""DESIGN.md §3 的 API 契约：创建函数与 dtype 推断、随机种子、张量属性、模块级函数、不求导的辅助函数。
与 torch 逐个对照的部分在 test_ops_torch.py；这里不需要 torch。"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
import tinytensor.nn.functional as F


def test_dtypes_are_numpy_dtypes() -> None:
    assert tt.float32 == np.float32 and tt.float64 == np.float64 and tt.int64 == np.int64
    assert tt.get_default_dtype() == tt.float32


@pytest.mark.parametrize(
    "data,dtype",
    [
        ([1.0, 2.0], np.float32),  # Python 浮点 → float32
        (3.5, np.float32),
        ([1, 2.5], np.float32),
        ([[1, 2], [3, 4]], np.int64),  # Python 整数 → int64
        (7, np.int64),
        ([True, False], np.bool_),
        (np.zeros(3), np.float64),  # ndarray 保留自己的 dtype
        (np.zeros(3, dtype=np.float32), np.float32),
        (np.arange(3, dtype=np.int32), np.int32),
        (np.float64(2.0), np.float64),
    ],
)
def test_tensor_dtype_inference(data, dtype) -> None:
    t = tt.tensor(data)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.data, np.asarray(data))


def test_tensor_copies_and_explicit_dtype() -> None:
    a = np.zeros(3)
    t = tt.tensor(a)
    a[0] = 5
    assert t.data[0] == 0  # tt.tensor 复制数据（与 torch.tensor 相同）
    assert tt.tensor([1, 2], dtype=tt.float64).dtype == tt.float64
    assert tt.tensor(np.zeros(2), dtype=tt.float32).dtype == tt.float32
    u = tt.tensor(t)
    assert u.dtype == t.dtype and not np.shares_memory(u.data, t.data)
    f = tt.from_numpy(a)
    assert np.shares_memory(f.data, a)


def test_default_dtype_switch() -> None:
    tt.set_default_dtype(tt.float64)
    try:
        assert tt.tensor([1.0]).dtype == tt.float64
        assert tt.zeros(2).dtype == tt.float64 and tt.randn(2).dtype == tt.float64
    finally:
        tt.set_default_dtype(tt.float32)
    assert tt.tensor([1.0]).dtype == tt.float32


@pytest.mark.parametrize("name", ["zeros", "ones", "randn", "rand", "empty"])
def test_factories(name: str) -> None:
    fn = getattr(tt, name)
    for args in [(2, 3), ((2, 3),), ([2, 3],)]:
        t = fn(*args)
        assert t.shape == (2, 3) and t.dtype == tt.float32 and not t.requires_grad
    t = fn(4, dtype=tt.float64, requires_grad=True)
    assert t.dtype == tt.float64 and t.requires_grad and t.is_leaf
    assert fn(()).shape == ()


def test_factory_values() -> None:
    np.testing.assert_array_equal(tt.zeros(2, 2).data, 0)
    np.testing.assert_array_equal(tt.ones(3).data, 1)
    r = tt.rand(2000).data
    assert r.min() >= 0 and r.max() < 1 and abs(r.mean() - 0.5) < 0.05
    n = tt.randn(4000, dtype=tt.float64).data
    assert abs(n.mean()) < 0.1 and abs(n.std() - 1) < 0.1
    np.testing.assert_array_equal(tt.arange(5).data, np.arange(5))
    np.testing.assert_array_equal(tt.arange(2, 8, 2).data, [2, 4, 6])
    assert tt.arange(5).dtype == tt.int64 and tt.arange(0.0, 1.0, 0.5).dtype == tt.float32
    assert tt.full((2,), 1.5).dtype == tt.float32 and tt.full((2,), 2).dtype == tt.int64
    np.testing.assert_array_equal(tt.eye(3).data, np.eye(3))


@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "randn_like", "rand_like", "empty_like"])
def test_like_factories(name: str) -> None:
    fn = getattr(tt, name)
    x = tt.ones(2, 3, dtype=tt.float64)
    y = fn(x)
    assert y.shape == (2, 3) and y.dtype == tt.float64 and not y.requires_grad
    z = fn(x, dtype=tt.float32)
    assert z.dtype == tt.float32
    assert fn(x, requires_grad=True).requires_grad
    if name == "zeros_like":
        assert not np.any(y.data)
    if name == "ones_like":
        np.testing.assert_array_equal(y.data, 1)
    assert tt.full_like(x, 7.0).data.tolist() == [[7.0] * 3] * 2


def test_manual_seed_reproducible() -> None:
    tt.manual_seed(123)
    a = (tt.randn(3, 4), tt.rand(5), tt.randint(0, 10, (6,)), F.dropout(tt.ones(8), 0.5))
    tt.manual_seed(123)
    b = (tt.randn(3, 4), tt.rand(5), tt.randint(0, 10, (6,)), F.dropout(tt.ones(8), 0.5))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.data, y.data)
    tt.manual_seed(124)
    assert not np.array_equal(tt.randn(3, 4).data, a[0].data)


def test_rng_state_roundtrip() -> None:
    tt.manual_seed(5)
    tt.randn(3)
    state = tt.get_rng_state()
    x = tt.randn(4)
    tt.set_rng_state(state)
    np.testing.assert_array_equal(tt.randn(4).data, x.data)


def test_tensor_attributes() -> None:
    x = tt.tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.dim() == 3
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.numel() == 24 and len(x) == 2
    assert isinstance(x.numpy(), np.ndarray) and x.numpy() is x.data
    assert tt.tensor([[2.5]]).item() == 2.5 and isinstance(tt.tensor([3]).item(), int)
    assert float(tt.tensor(1.5)) == 1.5 and int(tt.tensor(4)) == 4
    m = tt.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(m.T.data, m.data.T)
    assert x.T.shape == (4, 3, 2)  # 多维时倒转全部维度
    assert x.mT.shape == (2, 4, 3)
    assert x.device == "cpu" and x.tolist() == x.data.tolist()
    assert [r.shape for r in m] == [(3,), (3,)]


def test_detach_and_numpy() -> None:
    x = tt.ones(3, requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), [1, 1, 1])


def test_type_conversions() -> None:
    x = tt.tensor([1.7, -2.2])
    assert x.double().dtype == tt.float64 and x.float() is x
    np.testing.assert_array_equal(x.long().data, [1, -2])
    assert x.long().dtype == tt.int64 and x.to(tt.float64).dtype == tt.float64
    assert x.bool().dtype == tt.bool_


def test_clone_is_a_copy_with_grad() -> None:
    x = tt.tensor([1.0, 2.0], requires_grad=True)
    c = x.clone()
    assert not np.shares_memory(c.data, x.data) and c.requires_grad
    (c * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 3.0])


@pytest.mark.parametrize(
    "name",
    "exp log sqrt tanh sigmoid relu abs clamp matmul tril triu softmax log_softmax sum mean var max min "
    "argmax topk reshape flatten transpose permute unsqueeze squeeze split chunk masked_fill gather".split(),
)
def test_module_level_functions_exist(name: str) -> None:
    assert callable(getattr(tt, name))


def test_module_level_functions_equal_methods() -> None:
    x = tt.tensor(np.random.default_rng(0).uniform(0.5, 2, (3, 4)))
    m = x.data > 1
    pairs = [
        (tt.exp(x), x.exp()),
        (tt.log(x), x.log()),
        (tt.sqrt(x), x.sqrt()),
        (tt.tanh(x), x.tanh()),
        (tt.sigmoid(x), x.sigmoid()),
        (tt.relu(x - 1), (x - 1).relu()),
        (tt.abs(x - 1), (x - 1).abs()),
        (tt.clamp(x, 0.8, 1.2), x.clamp(0.8, 1.2)),
        (tt.matmul(x, x.T), x @ x.T),
        (tt.tril(x), x.tril()),
        (tt.triu(x, 1), x.triu(1)),
        (tt.softmax(x, -1), x.softmax(-1)),
        (tt.log_softmax(x, 0), x.log_softmax(0)),
        (tt.sum(x, 1), x.sum(1)),
        (tt.mean(x), x.mean()),
        (tt.reshape(x, (4, 3)), x.reshape(4, 3)),
        (tt.transpose(x, 0, 1), x.transpose(0, 1)),
        (tt.masked_fill(x, m, 0.0), x.masked_fill(m, 0.0)),
        (tt.where(m, x, -x), tt.tensor(np.where(m, x.data, -x.data))),
        (tt.cat([x, x], 1), tt.tensor(np.concatenate([x.data, x.data], 1))),
        (tt.stack([x, x], 1), tt.tensor(np.stack([x.data, x.data], 1))),
        (tt.concat([x, x]), tt.cat([x, x])),
    ]
    for got, want in pairs:
        np.testing.assert_array_equal(got.data, want.data)


def test_numerics_against_numpy() -> None:
    """基本语义（对照 NumPy，不依赖 torch）。"""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 4))
    x = tt.tensor(a)
    np.testing.assert_allclose(x.var().item(), a.var(ddof=1))
    np.testing.assert_allclose(x.var(1, correction=0).data, a.var(1))
    np.testing.assert_allclose(x.std(0).data, a.std(0, ddof=1))
    np.testing.assert_allclose(x.softmax(-1).data.sum(-1), 1.0)
    np.testing.assert_allclose(x.log_softmax(-1).exp().data, x.softmax(-1).data)
    np.testing.assert_array_equal(x.tril(-1).data, np.tril(a, -1))
    np.testing.assert_array_equal(x.repeat(2, 1).data, np.tile(a, (2, 1)))
    np.testing.assert_array_equal(x.gather(1, np.array([[0], [1], [3]])).data[:, 0], a[[0, 1, 2], [0, 1, 3]])
    assert [c.shape for c in tt.ones(7, 2).chunk(3)] == [(3, 2), (3, 2), (1, 2)]
    assert [c.shape for c in tt.ones(5, 2).split(2)] == [(2, 2), (2, 2), (1, 2)]


def test_softmax_fully_masked_row_is_zero_not_nan() -> None:
    x = tt.tensor([[0.0, 1.0], [-np.inf, -np.inf]], requires_grad=True)
    y = x.softmax(-1)
    np.testing.assert_array_equal(y.data[1], [0.0, 0.0])
    y.backward(np.ones((2, 2)))
    assert np.all(np.isfinite(x.grad.data))


def test_argmax_topk_clamp_are_not_differentiable() -> None:
    x = tt.randn(3, 5, requires_grad=True)
    assert not x.argmax(-1).requires_grad and x.argmax().dtype == tt.int64
    v, i = x.topk(2)
    assert v.shape == (3, 2) and i.dtype == tt.int64
    np.testing.assert_array_equal(v.data, np.take_along_axis(x.data, i.data, -1))
    np.testing.assert_array_equal(v.data, -np.sort(-x.data, -1)[:, :2])
    c = tt.clamp(x.detach(), -0.1, 0.1)
    assert c.data.min() >= -0.1 and c.data.max() <= 0.1


def test_multinomial_seeded_and_distribution() -> None:
    p = tt.tensor([[0.1, 0.2, 0.7], [0.5, 0.0, 0.5]])
    tt.manual_seed(0)
    a = tt.multinomial(p, 5000, replacement=True)
    tt.manual_seed(0)
    b = tt.multinomial(p, 5000, replacement=True)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.shape == (2, 5000) and a.dtype == tt.int64
    freq = np.stack([np.bincount(r, minlength=3) / 5000 for r in a.data])
    np.testing.assert_allclose(freq, p.data, atol=0.03)
    assert not np.any(a.data[1] == 1)  # 概率 0 的类别从不出现
    # 权重不必归一化；不放回抽样各不相同
    c = tt.multinomial(tt.tensor([2.0, 1.0, 1.0, 4.0]), 4)
    assert sorted(c.data.tolist()) == [0, 1, 2, 3]
    assert tt.multinomial(tt.tensor([0.0, 3.0]), 1).item() == 1


def test_max_min_dim_returns_values_indices() -> None:
    x = tt.tensor([[1.0, 5.0, 3.0], [7.0, 0.0, 2.0]])
    r = x.max(dim=1)
    v, i = r
    assert r.values is v and r.indices is i
    assert v.tolist() == [5.0, 7.0] and i.tolist() == [1, 0] and i.dtype == tt.int64
    v, i = tt.min(x, dim=0, keepdim=True)
    assert v.tolist() == [[1.0, 0.0, 2.0]] and i.tolist() == [[0, 1, 1]]
    assert x.max().item() == 7.0 and x.min().item() == 0.0


def test_sdpa_dropout_applies_under_no_grad_like_torch() -> None:
    """torch 只看 dropout_p（推理时调用方传 0），与是否记录梯度无关。"""
    q = tt.randn(1, 4, 3)
    with tt.no_grad():
        a = F.scaled_dot_product_attention(q, q, q, dropout_p=0.0)
        tt.manual_seed(0)
        b = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    assert not np.allclose(a.data, b.data)
