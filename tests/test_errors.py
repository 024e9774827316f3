"""坏输入给出清楚的（中文）报错：说出是哪个算子、哪些形状 / 哪个下标。不需要 torch。"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tinytensor as tt
import tinytensor.nn.functional as F


def shp(*s: int) -> str:
    """形状在报错里的写法，转义成正则。"""
    return re.escape(str(tuple(s)))


# ---------------------------------------------------------------------------- 形状不匹配


@pytest.mark.parametrize(
    "op,fn",
    [
        ("add", lambda a, b: a + b),
        ("sub", lambda a, b: a - b),
        ("mul", lambda a, b: a * b),
        ("div", lambda a, b: a / b),
        ("pow", lambda a, b: a**b),
    ],
)
def test_broadcast_mismatch_names_op_and_shapes(op: str, fn) -> None:
    a, b = tt.ones(2, 3), tt.ones(4)
    with pytest.raises(RuntimeError, match=f"{op}.*{shp(2, 3)}.*{shp(4)}.*广播"):
        fn(a, b)


def test_broadcast_mismatch_reverse_and_ndarray() -> None:
    with pytest.raises(RuntimeError, match=f"add.*{shp(4)}.*{shp(2, 3)}"):
        np.ones(4) + tt.ones(2, 3)
    with pytest.raises(RuntimeError, match=f"mul.*{shp(2, 3)}.*{shp(2, 4)}"):
        tt.ones(2, 3) * np.ones((2, 4))


def test_matmul_mismatch() -> None:
    with pytest.raises(RuntimeError, match=f"matmul.*{shp(2, 3)}.*{shp(4, 5)}"):
        tt.ones(2, 3) @ tt.ones(4, 5)
    with pytest.raises(RuntimeError, match=f"matmul.*{shp(3)}.*{shp(4)}"):
        tt.ones(3) @ tt.ones(4)
    with pytest.raises(RuntimeError, match=f"matmul.*{shp(2, 3, 4)}.*{shp(3, 4, 5)}"):
        tt.ones(2, 3, 4) @ tt.ones(3, 4, 5)  # 批维无法广播
    with pytest.raises(RuntimeError, match="matmul"):
        tt.tensor(2.0) @ tt.ones(3)


def test_reshape_mismatch() -> None:
    with pytest.raises(RuntimeError, match=f"reshape.*{shp(2, 3)}.*{shp(4, 2)}"):
        tt.ones(2, 3).reshape(4, 2)
    with pytest.raises(RuntimeError, match=f"{shp(2, 3)}.*{shp(-1, 4)}"):
        tt.ones(2, 3).view(-1, 4)


def test_cat_stack_mismatch() -> None:
    with pytest.raises(RuntimeError, match=f"cat.*{shp(2, 4)}.*{shp(2, 3)}"):
        tt.cat([tt.ones(2, 3), tt.ones(2, 4)])
    with pytest.raises(RuntimeError, match=f"cat.*{shp(3)}.*{shp(2, 3)}"):
        tt.cat([tt.ones(2, 3), tt.ones(3)])
    with pytest.raises(RuntimeError, match=f"stack.*{shp(3, 2)}.*{shp(2, 3)}"):
        tt.stack([tt.ones(2, 3), tt.ones(3, 2)])
    with pytest.raises(RuntimeError, match="cat"):
        tt.cat([])


def test_other_shape_errors() -> None:
    with pytest.raises(RuntimeError, match=f"expand.*{shp(2, 3)}.*{shp(4, 3)}"):
        tt.ones(2, 3).expand(4, 3)
    with pytest.raises(RuntimeError, match=f"where.*{shp(4)}"):
        tt.where(tt.ones(2, 3) > 0, tt.ones(4), tt.ones(2, 3))
    with pytest.raises(RuntimeError, match=f"masked_fill.*{shp(4)}.*{shp(2, 3)}"):
        tt.ones(2, 3).masked_fill(tt.ones(4) > 0, 0.0)
    with pytest.raises(RuntimeError, match=f"linear.*{shp(4, 5)}"):
        F.linear(tt.ones(2, 3), tt.ones(4, 5))
    with pytest.raises(RuntimeError, match="scaled_dot_product_attention"):
        F.scaled_dot_product_attention(tt.ones(2, 3, 4), tt.ones(2, 3, 5), tt.ones(2, 3, 4))
    with pytest.raises(RuntimeError, match="layer_norm"):
        F.layer_norm(tt.ones(2, 3), (4,))
    with pytest.raises(RuntimeError, match="split"):
        tt.ones(5).split([2, 2])
    with pytest.raises(RuntimeError, match="permute"):
        tt.ones(2, 3).permute(0, 0)
    with pytest.raises(RuntimeError, match="permute"):
        tt.ones(2, 3).permute(0, 2)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.sum(dim=2),
        lambda x: x.mean(dim=-3),
        lambda x: x.transpose(0, 2),
        lambda x: x.unsqueeze(3),
        lambda x: x.unsqueeze(-4),
        lambda x: x.squeeze(2),
        lambda x: x.gather(2, np.zeros((2, 3), dtype=np.int64)),
        lambda x: x.flatten(0, 2),
        lambda x: x.split(1, dim=2),
        lambda x: tt.cat([x, x], dim=2),
        lambda x: tt.stack([x, x], dim=3),
        lambda x: x.max(dim=2),
    ],
)
def test_dim_out_of_range_raises_instead_of_wrapping(fn) -> None:
    """越界的维度要报错（与 torch 相同），而不是取模绕回到另一维。"""
    with pytest.raises(IndexError):
        fn(tt.ones(2, 3))


# ---------------------------------------------------------------------------- 反向传播


def test_backward_on_non_scalar_without_gradient() -> None:
    y = tt.ones(2, 3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=f"标量.*{shp(2, 3)}.*gradient"):
        y.backward()


def test_backward_gradient_wrong_shape() -> None:
    y = tt.ones(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=f"gradient.*{shp(3)}.*{shp(2)}"):
        y.backward(np.ones(3))


def test_backward_on_tensor_without_grad() -> None:
    with pytest.raises(RuntimeError, match="requires_grad"):
        tt.ones(2).sum().backward()


def test_second_backward_through_freed_graph_suggests_retain_graph() -> None:
    x = tt.ones(3, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        y.backward()


def test_backward_through_freed_shared_subgraph() -> None:
    """从另一个 root 出发、但穿过已释放的公共子图，同样报错。"""
    x = tt.ones(3, requires_grad=True)
    h = x.exp()
    h.sum().backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        (h * 3).sum().backward()


def test_requires_grad_on_integer_tensor() -> None:
    with pytest.raises(RuntimeError, match="浮点.*int64"):
        tt.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="int64"):
        tt.arange(3).requires_grad_()
    with pytest.raises(RuntimeError, match="int64"):
        tt.zeros(3, dtype=tt.int64, requires_grad=True)
    with pytest.raises(RuntimeError, match="bool"):
        tt.tensor([True], requires_grad=True)


def test_in_place_write_into_graph_is_refused() -> None:
    x = tt.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        x[0] = 2.0
    with tt.no_grad():
        x[0] = 2.0  # 优化器的写法
    assert x.data[0] == 2.0


def test_numpy_on_requires_grad_tensor() -> None:
    with pytest.raises(RuntimeError, match=r"detach\(\)"):
        tt.ones(3, requires_grad=True).numpy()


# ---------------------------------------------------------------------------- 下标越界


@pytest.mark.parametrize(
    "key,bad",
    [(5, "5"), (-4, "-4"), ((1, 4), "4"), (np.array([0, 3]), "3"), ([0, -5], "-5")],
)
def test_index_out_of_range(key, bad: str) -> None:
    x = tt.ones(3, 4) if isinstance(key, tuple) else tt.ones(3)
    with pytest.raises(IndexError, match=f"越界.*{re.escape(str(x.shape))}.*{bad}"):
        x[key]


def test_gather_index_out_of_range() -> None:
    with pytest.raises(IndexError, match=r"gather.*下标 3.*\[0, 3\)"):
        tt.ones(2, 3).gather(1, np.array([[0], [3]]))
    with pytest.raises(RuntimeError, match=r"gather.*\(3, 1\).*\(2, 3\)"):
        tt.ones(2, 3).gather(1, np.zeros((3, 1), dtype=np.int64))


@pytest.mark.parametrize("bad", [7, 5, -1])
def test_embedding_id_out_of_range_names_the_id(bad: int) -> None:
    w = tt.ones(5, 2, requires_grad=True)
    with pytest.raises(IndexError, match=rf"id {bad} .*\[0, 5\)"):
        F.embedding(np.array([[0, 1], [bad, 2]]), w)


def test_embedding_rejects_float_ids() -> None:
    with pytest.raises(TypeError, match="整数"):
        F.embedding(np.array([0.0, 1.0]), tt.ones(5, 2))


@pytest.mark.parametrize("bad", [5, 9, -2])
def test_cross_entropy_target_out_of_range(bad: int) -> None:
    logits = tt.ones(3, 5, requires_grad=True)
    with pytest.raises(IndexError, match=rf"cross_entropy.*类别 {bad} .*\[0, 5\)"):
        F.cross_entropy(logits, np.array([0, bad, 1]))
    with pytest.raises(IndexError, match=rf"nll_loss.*类别 {bad} "):
        F.nll_loss(logits, np.array([0, bad, 1]))


def test_cross_entropy_3d_target_out_of_range() -> None:
    with pytest.raises(IndexError, match=r"类别 5 .*\[0, 5\)"):
        F.cross_entropy(tt.ones(2, 5, 3), np.array([[0, 1, 2], [3, 5, 0]]))


def test_cross_entropy_ignore_index_outside_classes_is_fine() -> None:
    """ignore_index 可以不在 [0, V) 内（例如 V 本身），前向反向都正常，被忽略的行没有梯度。"""
    x = tt.tensor(np.random.default_rng(0).standard_normal((3, 5)), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0, 7, 1]), ignore_index=7)
    loss.backward()
    assert np.all(x.grad.data[1] == 0) and np.all(np.isfinite(x.grad.data))
    ref = F.cross_entropy(tt.tensor(x.data[[0, 2]]), np.array([0, 1]))
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-12)


def test_cross_entropy_bad_target_shape_and_reduction() -> None:
    with pytest.raises(RuntimeError, match=f"target.*{shp(2)}.*{shp(3, 5)}"):
        F.cross_entropy(tt.ones(3, 5), np.array([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(tt.ones(3, 5), np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(TypeError, match="整数"):
        F.cross_entropy(tt.ones(3, 5), np.array([0.0, 1.0, 2.0]))


def test_misc_bad_inputs() -> None:
    with pytest.raises(RuntimeError, match=f"item.*{shp(2)}"):
        tt.ones(2).item()
    with pytest.raises(TypeError):
        tt.tensor("abc")
    with pytest.raises(ValueError, match="clamp"):
        tt.ones(2).clamp()
    with pytest.raises(TypeError, match="mask"):
        tt.ones(2).masked_fill(np.array([1, 0]), 0.0)
    with pytest.raises(TypeError, match="condition"):
        tt.where(np.array([1, 0]), tt.ones(2), tt.zeros(2))
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(tt.ones(2), p=1.5)
    with pytest.raises(ValueError, match="tanh"):
        F.gelu(tt.ones(2), approximate="none")
    with pytest.raises(RuntimeError, match="topk"):
        tt.ones(3).topk(4)
    with pytest.raises(RuntimeError, match="multinomial"):
        tt.multinomial(tt.tensor([0.0, 0.0]), 1)
    with pytest.raises(RuntimeError, match="不放回"):
        tt.multinomial(tt.tensor([1.0, 0.0]), 2)
    with pytest.raises(TypeError, match="种子"):
        tt.manual_seed(1.5)
