"""计算图与反向传播引擎：菱形图、重复使用、共享权重、万层深链、retain_graph、梯度累加、
no_grad / enable_grad、detach、retain_grad、.grad 独占内存、确定性、requires_grad 的传播。不需要 torch。
"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
import tinytensor.nn.functional as F
from tinytensor.autograd import Function, unbroadcast


def f64(*shape: int, seed: int = 0) -> tt.Tensor:
    return tt.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


# ---------------------------------------------------------------------------- 图的形状


def test_diamond() -> None:
    a = tt.tensor(1.5, requires_grad=True)
    b = a + a
    c = b + b
    c.backward()
    assert a.grad.item() == 4.0


def test_diamond_tensor_and_mixed_paths() -> None:
    a = f64(3, 4)
    y = a * a + a.exp() * 2 - a  # 三条路径汇合到 a
    y.backward(np.ones(a.shape))
    np.testing.assert_allclose(a.grad.data, 2 * a.data + 2 * np.exp(a.data) - 1, rtol=1e-14)


def test_tensor_used_many_times() -> None:
    x = f64(2, 3)
    y = x
    for _ in range(300):
        y = y + x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.full(x.shape, 301.0))


def test_tensor_used_many_times_in_one_op() -> None:
    x = f64(2, 3)
    tt.stack([x] * 7).sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.full(x.shape, 7.0))


def test_tied_weight_in_two_matmuls() -> None:
    """同一个权重用在两次矩阵乘里：梯度是两条路径的和。"""
    x, w = f64(5, 4, seed=1), f64(4, 4, seed=2)
    loss = ((x @ w).tanh() @ w).sum()
    loss.backward()
    # 分开算：w1、w2 是 w 的两份拷贝
    w1 = tt.tensor(w.data.copy(), requires_grad=True)
    w2 = tt.tensor(w.data.copy(), requires_grad=True)
    ((x.detach() @ w1).tanh() @ w2).sum().backward()
    np.testing.assert_allclose(w.grad.data, w1.grad.data + w2.grad.data, rtol=1e-13)
    assert not np.allclose(w1.grad.data, w2.grad.data)  # 两条路径确实不同


def test_tied_embedding_and_output_head() -> None:
    """GPT-2 的权重共享：嵌入表同时当作输出层，梯度来自两处。"""
    wte = f64(6, 4, seed=3)
    ids = np.array([[1, 2, 1]])
    h = F.embedding(ids, wte)  # (1, 3, 4)
    logits = h @ wte.T  # (1, 3, 6)
    loss = F.cross_entropy(logits.reshape(-1, 6), np.array([2, 0, 5]))
    loss.backward()
    assert tt.gradcheck(lambda w: F.cross_entropy((F.embedding(ids, w) @ w.T).reshape(-1, 6), np.array([2, 0, 5])),
                        [tt.tensor(wte.data, requires_grad=True)])


def test_deep_chain_10000() -> None:
    """迭代式拓扑排序：一万层的链不会触发递归上限。"""
    x = tt.tensor([1.0, 2.0], dtype=tt.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, np.full(2, 1.0001**10_000), rtol=1e-10)


def test_deep_chain_of_mixed_ops() -> None:
    x = tt.tensor(0.3, dtype=tt.float64, requires_grad=True)
    y = x
    for _ in range(2_500):  # 4 种算子 × 2,500 = 10,000 层
        y = (y + 1.0).reshape(1).squeeze(0) - 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_wide_graph_then_deep() -> None:
    x = f64(3)
    parts = [x * float(i) for i in range(100)]
    s = parts[0]
    for p in parts[1:]:
        s = s + p
    s.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.full(3, float(sum(range(100)))))


# ---------------------------------------------------------------------------- 多次反向与累加


def _net(x: tt.Tensor, w: tt.Tensor, b: tt.Tensor) -> tt.Tensor:
    h = F.gelu(x @ w + b)
    h = F.layer_norm(h, (h.shape[-1],))
    return F.cross_entropy(h.softmax(-1).log() * 3.0, np.array([0, 2, 1, 3, 0]))


def test_backward_twice_retain_graph_is_bit_identical_and_accumulates() -> None:
    x, w, b = f64(5, 3, seed=1), f64(3, 4, seed=2), f64(4, seed=3)
    loss = _net(x, w, b)
    loss.backward(retain_graph=True)
    first = [t.grad.data.copy() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    loss.backward(retain_graph=True)
    for t, g in zip((x, w, b), first):
        np.testing.assert_array_equal(t.grad.data, g)  # 逐位相同
    loss.backward()  # 第三次：累加
    for t, g in zip((x, w, b), first):
        np.testing.assert_array_equal(t.grad.data, 2 * g)


def test_retain_graph_then_free_then_error() -> None:
    x = f64(3)
    y = (x * 2).exp().sum()
    y.backward(retain_graph=True)
    y.backward()  # 这次释放
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_graph_is_freed_after_backward() -> None:
    x = f64(3)
    mid = x.exp()
    y = (mid * mid).sum()
    node = mid.grad_fn
    assert node.saved_tensors  # exp 保存了输出
    y.backward()
    assert node.freed and node.saved_tensors == ()  # 保存的数组已释放


def test_gradient_accumulates_over_two_losses() -> None:
    x = f64(2, 3)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 3 + 2 * x.data, rtol=1e-15)


def test_zero_grad_by_setting_none() -> None:
    x = f64(2)
    (x * 3).sum().backward()
    x.grad = None
    (x * 5).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [5.0, 5.0])


def test_grad_owns_its_memory() -> None:
    """y = a + b：两个叶子的 .grad 不能共享内存（Add 的反向两边返回同一个数组）。"""
    a, b = f64(2, 3, seed=1), f64(2, 3, seed=2)
    g = np.ones((2, 3))
    (a + b).backward(g)
    a.grad.data += 1
    np.testing.assert_array_equal(b.grad.data, np.ones((2, 3)))
    g[...] = 7  # 传入的上游梯度被改也不影响
    np.testing.assert_array_equal(b.grad.data, np.ones((2, 3)))
    assert not np.shares_memory(a.grad.data, b.grad.data)


def test_grad_owns_memory_broadcast_and_leaf_root() -> None:
    x = f64(3, 4)
    x.sum().backward()  # Sum 的反向是 broadcast_to 视图
    assert x.grad.data.flags.writeable and x.grad.data.flags.owndata
    x.grad.data[0, 0] = 5.0  # 可写，且只改一个元素
    assert np.count_nonzero(x.grad.data == 5.0) == 1
    leaf = f64(3)
    g = np.array([1.0, 2.0, 3.0])
    leaf.backward(g)  # 叶子自己就是 root
    g[0] = 100.0
    np.testing.assert_array_equal(leaf.grad.data, [1.0, 2.0, 3.0])


def test_grad_does_not_alias_data() -> None:
    x = f64(3)
    x.backward(x.data)
    assert not np.shares_memory(x.grad.data, x.data)


def test_backward_gradient_as_tensor() -> None:
    x = f64(2, 2)
    (x * 2).backward(tt.tensor(np.full((2, 2), 0.5)))
    np.testing.assert_array_equal(x.grad.data, np.ones((2, 2)))


def test_determinism_same_computation_twice() -> None:
    runs = []
    for _ in range(2):
        x, w, b = f64(5, 3, seed=1), f64(3, 4, seed=2), f64(4, seed=3)
        _net(x, w, b).backward()
        runs.append([t.grad.data.copy() for t in (x, w, b)])
    for g1, g2 in zip(*runs):
        np.testing.assert_array_equal(g1, g2)


# ---------------------------------------------------------------------------- 梯度开关


def test_no_grad_builds_no_graph() -> None:
    x = f64(3)
    with tt.no_grad():
        y = x * 2 + 1
        assert not tt.is_grad_enabled()
    assert tt.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf


def test_no_grad_as_decorator() -> None:
    x = f64(3)

    @tt.no_grad()
    def f(t):
        return t * 2

    @tt.no_grad
    def g(t):  # 与 torch 一样，不带括号也可以
        return t * 2

    assert not f(x).requires_grad
    assert not g(x).requires_grad
    assert f.__name__ == "f" and g.__name__ == "g"
    assert (x * 2).requires_grad


def test_enable_grad_inside_no_grad() -> None:
    x = f64(3)
    with tt.no_grad():
        with tt.enable_grad():
            y = x * 2
        z = x * 2
    assert y.requires_grad and y.grad_fn is not None
    assert not z.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 2.0, 2.0])


def test_grad_mode_restored_after_exception() -> None:
    with pytest.raises(ValueError):
        with tt.no_grad():
            raise ValueError
    assert tt.is_grad_enabled()


def test_set_grad_enabled_like_torch() -> None:
    x = f64(3)
    with tt.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert tt.is_grad_enabled()
    tt.set_grad_enabled(False)  # 与 torch 相同：直接调用就生效
    try:
        assert not tt.is_grad_enabled()
        assert not (x * 2).requires_grad
    finally:
        tt.set_grad_enabled(True)
    assert tt.is_grad_enabled()

    @tt.set_grad_enabled(False)
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert tt.is_grad_enabled()


def test_detach() -> None:
    x = f64(3)
    d = x.detach()
    assert not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.data, x.data)  # 与 torch 相同：共享数据
    (x.detach() * x).sum().backward()  # 梯度不穿过 detach
    np.testing.assert_array_equal(x.grad.data, x.data)


def test_retain_grad_on_non_leaf() -> None:
    x = f64(2, 3)
    h = x * 3
    h.retain_grad()
    other = x.exp()
    (h * h + other).sum().backward()
    np.testing.assert_allclose(h.grad.data, 2 * h.data, rtol=1e-15)
    assert other.grad is None  # 未 retain 的中间结果不保留梯度
    np.testing.assert_allclose(x.grad.data, 18 * x.data + np.exp(x.data), rtol=1e-14)


def test_requires_grad_propagation() -> None:
    a, b = f64(3), tt.randn(3, dtype=tt.float64)
    assert a.is_leaf and b.is_leaf and not b.requires_grad
    assert (a + b).requires_grad and not (b + b).requires_grad
    assert (a * 2).grad_fn is not None and (b * 2).grad_fn is None
    assert not (a > 0).requires_grad  # 比较结果是布尔张量
    assert not a.argmax().requires_grad
    assert a.max(0).values.requires_grad and not a.max(0).indices.requires_grad
    (a * b).sum().backward()
    assert b.grad is None
    b.requires_grad_()
    assert b.requires_grad and (a * b).requires_grad
    with pytest.raises(RuntimeError):
        (a * 2).requires_grad = False  # 非叶子不能关


def test_only_needed_grads_are_computed() -> None:
    """输入不需要梯度时，反向不为它计算（ctx.needs_input_grad）。"""
    a = f64(3, 4)
    b = tt.randn(4, 5, dtype=tt.float64)
    y = a @ b
    assert y.grad_fn.needs_input_grad == (True, False)
    y.sum().backward()
    assert b.grad is None and a.grad is not None


def test_float32_graph_stays_float32() -> None:
    x = tt.randn(5, 3, requires_grad=True)
    w = tt.randn(3, 4, requires_grad=True)
    b = tt.zeros(4, requires_grad=True)
    h = F.gelu(x @ w + b)
    h = F.layer_norm(h, (4,)) * 0.5 + 1.0
    h = h.var(dim=0) + h.mean() + (h**2).sum() / 7 + h.max() + h.abs().sqrt().sum()
    loss = h.sum() + F.cross_entropy(x @ w, np.array([0, 1, 2, 3, 0]))
    assert loss.dtype == tt.float32
    loss.backward()
    for t in (x, w, b):
        assert t.grad.dtype == tt.float32


# ---------------------------------------------------------------------------- 引擎内部


@pytest.mark.parametrize(
    "grad_shape,shape",
    [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 3), (1, 3)), ((4, 2, 3), (2, 1)), ((2, 3), ()), ((5, 1, 3), (1, 4, 1))],
)
def test_unbroadcast(grad_shape, shape) -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal(grad_shape)
    if shape == (1, 4, 1):  # grad 的维度 1 不能归约成 4
        with pytest.raises(RuntimeError, match="无法归约"):
            unbroadcast(g, shape)
        return
    out = unbroadcast(g, shape)
    assert out.shape == shape
    np.testing.assert_allclose(out.sum(), g.sum(), rtol=1e-12)  # 求和，不是取一份


def test_unbroadcast_rejects_fewer_dims() -> None:
    with pytest.raises(RuntimeError, match="维数"):
        unbroadcast(np.ones(3), (2, 3))


class _TwoGrads(Function):
    @staticmethod
    def forward(ctx, a):
        return a * 2

    @staticmethod
    def backward(ctx, g):
        return g, g  # 错：只有一个输入


def test_function_returning_wrong_number_of_grads() -> None:
    x = f64(3)
    with pytest.raises(RuntimeError, match="返回了 2 个梯度"):
        _TwoGrads.apply(x).sum().backward()
