"""与 torch 相同的防护：transpose 的维度检查、gather 不接受负下标、需要梯度的张量不能原地修改、只有 CPU。"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt


@pytest.mark.parametrize(("shape", "dims"), [((3,), (0, 1)), ((3,), (2, 0)), ((), (0, 1)), ((), (-2, 0))])
def test_transpose_of_low_dim_tensor_rejects_bad_dims(shape, dims) -> None:
    x = tt.ones(*shape)
    with pytest.raises(IndexError, match="超出范围"):
        x.transpose(*dims)


@pytest.mark.parametrize("shape", [(3,), ()])
@pytest.mark.parametrize("dims", [(0, 0), (0, -1), (-1, -1)])
def test_transpose_of_low_dim_tensor_with_valid_dims_is_identity(shape, dims) -> None:
    x = tt.tensor(np.arange(int(np.prod(shape))).reshape(shape).astype(np.float32))
    np.testing.assert_array_equal(x.transpose(*dims).numpy(), x.numpy())


def test_gather_rejects_negative_indices() -> None:
    x = tt.tensor([[1.0, 2.0, 3.0]])
    with pytest.raises(IndexError, match=r"下标 -1 .*\[0, 3\).*负下标"):
        x.gather(1, np.array([[0, -1]]))
    np.testing.assert_array_equal(x.gather(1, np.array([[2, 0]])).numpy(), [[3.0, 1.0]])


@pytest.mark.parametrize("op", ["zero_", "fill_", "copy_"])
def test_inplace_on_leaf_that_requires_grad_raises_outside_no_grad(op: str) -> None:
    w = tt.ones(3, requires_grad=True)
    args = {"zero_": (), "fill_": (2.0,), "copy_": (np.zeros(3, np.float32),)}[op]
    with pytest.raises(RuntimeError, match=f"{op}.*需要梯度的叶子张量.*no_grad"):
        getattr(w, op)(*args)
    np.testing.assert_array_equal(w.detach().numpy(), np.ones(3))  # 没有被改
    with tt.no_grad():
        getattr(w, op)(*args)
    want = {"zero_": 0.0, "fill_": 2.0, "copy_": 0.0}[op]
    np.testing.assert_array_equal(w.detach().numpy(), np.full(3, want))


def test_inplace_on_non_leaf_in_graph_raises_and_plain_tensors_are_fine() -> None:
    w = tt.ones(3, requires_grad=True)
    y = w * 2
    with pytest.raises(RuntimeError, match="计算图中的张量"):
        y.zero_()
    g = tt.ones(3)  # 不需要梯度（如 .grad）：照常原地修改
    assert g.fill_(5.0) is g and g.numpy().tolist() == [5.0] * 3


@pytest.mark.parametrize(
    "call", [lambda x: x.to("cuda"), lambda x: x.to(device="cuda:0"), lambda x: x.to(device="mps")]
)
def test_to_unusable_device_raises(call) -> None:
    with pytest.raises(RuntimeError, match="只在 CPU 上运行"):
        call(tt.ones(2))


def test_to_cpu_and_dtype_still_work() -> None:
    x = tt.ones(2)
    assert x.to("cpu") is x and x.to(device="cpu") is x and x.to(device="cpu:0") is x
    assert x.to(tt.float64).dtype == tt.float64
    m = tt.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="只在 CPU 上运行"):
        m.to("cuda")
    assert m.to("cpu") is m


def test_torch_behaves_the_same() -> None:
    """上面每条规则 torch 都是这样（若装了 torch）。"""
    torch = pytest.importorskip("torch")
    with pytest.raises(IndexError):
        torch.ones(3).transpose(0, 1)
    assert torch.ones(3).transpose(0, -1).shape == (3,)
    with pytest.raises(RuntimeError):
        torch.tensor([[1.0, 2.0, 3.0]]).gather(1, torch.tensor([[0, -1]]))
    w = torch.ones(3, requires_grad=True)
    for op, args in (("zero_", ()), ("fill_", (2.0,)), ("copy_", (torch.zeros(3),))):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            getattr(w, op)(*args)
