"""tt.nn：Module 的登记/遍历/保存/恢复，各层与 torch.nn 的前向+反向一致性。"""

from __future__ import annotations

import copy
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import tinytensor as tt
from tinytensor import nn
from tinytensor.nn import functional as F

# ---------------------------------------------------------------- 辅助


class Block(nn.Module):
    """带缓冲区、子模块与权重共享的小模型（torch 版本见 _torch_block）。"""

    def __init__(self, vocab: int = 7, dim: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.ln = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)])
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight  # 权重共享
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.register_buffer("mask", tt.tril(tt.ones(3, 3)))
        self.register_buffer("cache", tt.zeros(2), persistent=False)

    def forward(self, idx):
        x = self.ln(self.emb(idx))
        for layer in self.layers:
            x = F.gelu(layer(x))
        return self.head(x) * self.scale


BLOCK_PARAM_NAMES = [
    "scale",
    "emb.weight",
    "ln.weight",
    "ln.bias",
    "layers.0.weight",
    "layers.0.bias",
    "layers.1.weight",
]
BLOCK_STATE_KEYS = [
    "scale",
    "mask",
    "emb.weight",
    "ln.weight",
    "ln.bias",
    "layers.0.weight",
    "layers.0.bias",
    "layers.1.weight",
    "head.weight",
]


def _grads(params):
    return [None if p.grad is None else p.grad.data.copy() for p in params]


# ---------------------------------------------------------------- 登记与遍历


def test_named_parameters_order_and_shared_params_once():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    assert names == BLOCK_PARAM_NAMES  # 自身参数在前，再按子模块定义顺序；共享的 head.weight 只出现一次
    assert len(list(m.parameters())) == len(BLOCK_PARAM_NAMES)
    assert m.head.weight is m.emb.weight
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in m.named_parameters(prefix="model")][:2] == ["model.scale", "model.emb.weight"]
    all_names = [n for n, _ in m.named_parameters(remove_duplicate=False)]
    assert all_names == BLOCK_PARAM_NAMES + ["head.weight"]
    assert m.num_parameters() == 1 + 7 * 4 + 4 + 4 + 16 + 4 + 16
    # 共享参数的梯度是两条路径之和（一次反向累加到同一个 .grad）
    m(np.array([[1, 2, 3]])).sum().backward()
    assert m.emb.weight.grad is m.head.weight.grad


def test_state_dict_keys_buffers_and_shared():
    m = Block()
    sd = m.state_dict()
    assert list(sd) == BLOCK_STATE_KEYS  # 共享参数在两个名字下都有；非持久缓冲区 cache 不在
    assert "cache" not in sd
    assert [n for n, _ in m.named_buffers()] == ["mask", "cache"]
    assert all(not v.requires_grad for v in sd.values())
    # 值与模型共享内存（与 torch 相同）；keep_vars=True 给出参数本身
    assert np.shares_memory(sd["emb.weight"].data, m.emb.weight.data)
    assert m.state_dict(keep_vars=True)["emb.weight"] is m.emb.weight


def test_module_named_modules_children_get_submodule():
    m = Block()
    names = [n for n, _ in m.named_modules()]
    assert names == ["", "emb", "ln", "layers", "layers.0", "layers.1", "head"]
    assert [n for n, _ in m.named_children()] == ["emb", "ln", "layers", "head"]
    assert m.get_submodule("layers.1") is m.layers[1]
    assert m.get_submodule("") is m
    with pytest.raises(AttributeError, match="nope"):
        m.get_submodule("layers.nope")
    # 同一个子模块挂在两处：named_modules 只给一次
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, shared)
    assert [n for n, _ in seq.named_modules()] == ["", "0"]
    assert [n for n, _ in seq.named_modules(remove_duplicate=False)] == ["", "0", "1"]
    assert [n for n, _ in seq.named_modules(prefix="net")] == ["net", "net.0"]
    assert len(list(seq.parameters())) == 2


def test_register_buffer_persistence_and_errors():
    m = nn.Module()
    m.register_buffer("a", tt.ones(2))
    m.register_buffer("b", tt.ones(3), persistent=False)
    m.register_buffer("c", None)
    assert list(m.state_dict()) == ["a"]
    assert [n for n, _ in m.named_buffers()] == ["a", "b"]
    m.register_buffer("b", tt.zeros(3), persistent=True)  # 重新登记为持久
    assert list(m.state_dict()) == ["a", "b"]
    m.b = tt.ones(3) * 5.0  # 给已登记的缓冲区赋值
    assert np.all(m.state_dict()["b"].data == 5.0)
    with pytest.raises(TypeError, match="缓冲区"):
        m.b = np.zeros(3)
    with pytest.raises(KeyError, match="不合法"):
        m.register_buffer("x.y", tt.ones(1))
    with pytest.raises(KeyError, match="不合法"):
        m.register_buffer("", tt.ones(1))
    with pytest.raises(TypeError, match="Tensor"):
        m.register_buffer("d", np.ones(2))
    m.plain = 3
    with pytest.raises(KeyError, match="已存在"):
        m.register_buffer("plain", tt.ones(1))
    del m.b
    assert "b" not in dict(m.named_buffers())


def test_setattr_rules():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(RuntimeError, match="super"):
        Bad()
    m = nn.Linear(2, 3)
    with pytest.raises(TypeError, match="Parameter"):
        m.weight = tt.ones(3, 2)  # 普通张量不能顶替参数
    m.bias = None  # None 可以：等于去掉偏置
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    assert m(tt.ones(1, 2)).shape == (1, 3)
    with pytest.raises(TypeError):
        m.add_module("sub", 3)
    with pytest.raises(TypeError, match="Parameter"):
        m.register_parameter("p", tt.ones(1))
    with pytest.raises(AttributeError, match="没有属性"):
        m.nonexistent


# ---------------------------------------------------------------- state_dict 往返与错误


def test_state_dict_round_trip_including_buffers():
    tt.manual_seed(0)
    a = Block()
    a.mask = tt.ones(3, 3) * 2.0
    tt.manual_seed(1)
    b = Block()
    assert not np.allclose(a.emb.weight.data, b.emb.weight.data)
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        np.testing.assert_array_equal(va.data, vb.data)
    assert b.head.weight is b.emb.weight  # 加载不破坏共享
    assert not np.shares_memory(a.emb.weight.data, b.emb.weight.data)
    idx = np.array([[0, 3, 6]])
    np.testing.assert_array_equal(a(idx).data, b(idx).data)
    # 非持久缓冲区不被加载
    b.cache.data[...] = 9
    b.load_state_dict(a.state_dict())
    assert np.all(b.cache.data == 9)


def test_load_state_dict_strict_errors_name_keys():
    m = Block()
    sd = dict(m.state_dict())
    before = m.emb.weight.data.copy()
    bad = {k: v for k, v in sd.items() if k != "ln.bias"}
    bad["emb.weight"] = tt.zeros(7, 4)
    with pytest.raises(RuntimeError, match=r"缺少.*ln\.bias"):
        m.load_state_dict(bad)
    np.testing.assert_array_equal(m.emb.weight.data, before)  # 出错时不写入任何值

    extra = {**sd, "lm_head.bias": tt.zeros(3)}
    with pytest.raises(RuntimeError, match=r"多余.*lm_head\.bias"):
        m.load_state_dict(extra)

    wrong = {**sd, "layers.0.weight": tt.zeros(4, 5), "emb.weight": tt.zeros(7, 4)}
    with pytest.raises(RuntimeError, match=r"layers\.0\.weight.*\(4, 5\).*\(4, 4\)") as ei:
        m.load_state_dict(wrong)
    assert "形状" in str(ei.value)
    np.testing.assert_array_equal(m.emb.weight.data, before)
    with pytest.raises(RuntimeError, match=r"layers\.0\.weight"):  # 形状错误与 strict 无关
        m.load_state_dict(wrong, strict=False)


def test_load_state_dict_non_strict_returns_missing_unexpected():
    m = Block()
    sd = {"ln.weight": np.full(4, 3.0), "foo.bar": np.zeros(2)}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert unexpected == ["foo.bar"]
    assert missing == [k for k in BLOCK_STATE_KEYS if k != "ln.weight"]
    assert np.all(m.ln.weight.data == 3.0)
    assert m.ln.weight.dtype == np.float32  # 转成模型的 dtype


# ---------------------------------------------------------------- 模式与工具


def test_train_eval_propagation_and_override():
    calls = []

    class Custom(nn.Module):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(mode)

    m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5), Custom()))
    assert all(x.training for x in m.modules())
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    assert calls == [False, True]  # 子类覆盖的 train() 也被调用（与 torch 相同）
    with pytest.raises(ValueError):
        m.train("no")


def test_apply_order_zero_grad_requires_grad():
    m = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.LayerNorm(3), nn.Linear(3, 1)))
    seen = []
    assert m.apply(lambda mod: seen.append(type(mod).__name__)) is m
    assert seen == ["Linear", "LayerNorm", "Linear", "Sequential", "Sequential"]  # 先子后父

    def init(mod):
        if isinstance(mod, nn.Linear):
            mod.weight.data[...] = 0.5

    m.apply(init)
    assert np.all(m[0].weight.data == 0.5) and np.all(m[1][1].weight.data == 0.5)

    m(tt.ones(4, 2)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.data.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())

    m[0].requires_grad_(False)
    out = m(tt.ones(4, 2)).sum()
    out.backward()
    assert m[0].weight.grad is None and m[0].bias.grad is None
    assert m[1][1].weight.grad is not None
    m.requires_grad_()
    assert all(p.requires_grad for p in m.parameters())


def test_call_forwards_args_and_kwargs():
    class Two(nn.Module):
        def forward(self, a, b=1.0, *, c=0.0):
            return a * b + c

    out = Two()(tt.ones(2), 3.0, c=1.0)
    np.testing.assert_array_equal(out.data, [4.0, 4.0])
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)


def test_to_double_deepcopy_pickle():
    tt.manual_seed(0)
    m = Block()
    m2 = copy.deepcopy(m)
    assert m2.head.weight is m2.emb.weight and m2.emb.weight is not m.emb.weight
    np.testing.assert_array_equal(m2.emb.weight.data, m.emb.weight.data)
    m3 = pickle.loads(pickle.dumps(m))
    assert list(m3.state_dict()) == BLOCK_STATE_KEYS
    m.double()
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m.mask.dtype == np.float64
    assert m(np.array([[1, 2]])).dtype == np.float64


def test_sequential_and_modulelist_containers():
    a, b, c = nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(sub.state_dict()) == ["2.weight", "2.bias"]  # 切片保留原名字（与 torch 相同）
    with pytest.raises(IndexError, match="超出范围"):
        s[3]
    x = tt.randn(5, 2)
    np.testing.assert_allclose(s(x).data, c(b(a(x))).data)
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.GELU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    s.append(nn.Linear(1, 1))
    assert list(s.state_dict())[-2:] == ["3.weight", "3.bias"]

    ml = nn.ModuleList([nn.Linear(2, 2)])
    ml.append(nn.Linear(2, 2)).extend([nn.LayerNorm(2)])
    assert len(ml) == 3 and isinstance(ml[-1], nn.LayerNorm)
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
    ml[1] = nn.Linear(2, 2, bias=False)
    assert [n for n, _ in ml.named_parameters()][2:] == ["1.weight", "2.weight", "2.bias"]
    assert isinstance(ml[:2], nn.ModuleList) and len(ml[:2]) == 2
    with pytest.raises(IndexError):
        ml[5]


# ---------------------------------------------------------------- 各层（不需要 torch 的部分）


def test_parameter_basics():
    p = nn.Parameter(np.zeros((2, 3)))
    assert isinstance(p, tt.Tensor) and p.requires_grad and p.is_leaf
    assert p.dtype == np.float64  # 保留 ndarray 的 dtype
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32  # Python 数据用默认 dtype
    assert not nn.Parameter(np.ones(2), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")
    with pytest.raises(RuntimeError, match="浮点"):
        nn.Parameter(np.arange(3))
    assert type(p * 2) is tt.Tensor and type(p.detach()) is tt.Tensor


def test_linear_shapes_and_init_distribution():
    tt.manual_seed(0)
    fan_in, fan_out = 400, 300
    lin = nn.Linear(fan_in, fan_out)
    assert lin.weight.shape == (fan_out, fan_in) and lin.bias.shape == (fan_out,)
    assert lin.weight.dtype == np.float32
    bound = 1 / math.sqrt(fan_in)
    w = lin.weight.data.astype(np.float64).ravel()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    n = w.size
    # U(-b, b)：均值 0，方差 b²/3；容差取 6 个标准误
    assert abs(w.mean()) < 6 * bound / math.sqrt(3 * n)
    assert abs(w.var() - bound**2 / 3) < 6 * bound**2 * math.sqrt(4 / 45 / n)
    hist, _ = np.histogram(w, bins=10, range=(-bound, bound))
    assert np.all(np.abs(hist - n / 10) < 6 * math.sqrt(n / 10))  # 各区间均匀
    assert np.abs(lin.bias.data).max() <= bound
    # 同一种子得到同样的初始化
    tt.manual_seed(5)
    w1 = nn.Linear(3, 2).weight.data.copy()
    tt.manual_seed(5)
    np.testing.assert_array_equal(nn.Linear(3, 2).weight.data, w1)
    assert nn.Linear(3, 2, dtype=tt.float64).weight.dtype == np.float64
    assert repr(nn.Linear(3, 2, bias=False)) == "Linear(in_features=3, out_features=2, bias=False)"


def test_embedding_init_and_errors():
    tt.manual_seed(0)
    e = nn.Embedding(500, 64)
    w = e.weight.data
    assert w.shape == (500, 64)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1)
    np.testing.assert_array_equal(e(tt.tensor([[3, 0]])).data, w[[[3, 0]]])  # tt 整数张量也可作输入
    with pytest.raises(IndexError, match="500"):
        e(np.array([1, 500]))
    with pytest.raises(TypeError, match="整数"):
        e(np.array([1.0]))


def test_layernorm_errors_and_repr():
    with pytest.raises(ValueError, match="最后一维"):
        nn.LayerNorm((3, 4))
    ln = nn.LayerNorm(4)
    assert ln.weight.shape == (4,) and np.all(ln.weight.data == 1) and not ln.bias.data.any()
    with pytest.raises(RuntimeError, match="layer_norm"):
        ln(tt.ones(2, 5))
    assert [n for n, _ in nn.LayerNorm(3, elementwise_affine=False).named_parameters()] == []
    assert [n for n, _ in nn.LayerNorm(3, bias=False).named_parameters()] == ["weight"]


def test_dropout_train_eval_scaling_and_seed():
    x = tt.ones(200, 100, requires_grad=True)
    d = nn.Dropout(0.25)
    tt.manual_seed(0)
    y = d(x)
    vals = np.unique(y.data)
    np.testing.assert_allclose(vals, [0.0, 1 / 0.75], rtol=1e-6)  # 保留的元素乘 1/(1-p)
    frac = (y.data == 0).mean()
    assert abs(frac - 0.25) < 6 * math.sqrt(0.25 * 0.75 / x.numel())
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, y.data)  # dy/dx 就是掩码
    # 同一种子，同一掩码；不同种子，不同掩码
    tt.manual_seed(0)
    np.testing.assert_array_equal(d(x).data, y.data)
    tt.manual_seed(1)
    assert not np.array_equal(d(x).data, y.data)
    # eval：原样返回
    d.eval()
    assert d(x) is x
    # p = 0：原样；p = 1：全零且梯度为零
    assert nn.Dropout(0.0)(x) is x
    x.grad = None
    z = nn.Dropout(1.0)(x)
    assert not z.data.any()
    z.sum().backward()
    assert not x.grad.data.any()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="概率"):
            nn.Dropout(bad)
    assert repr(nn.Dropout(0.1)) == "Dropout(p=0.1, inplace=False)"


def test_sdpa_dropout_follows_dropout_p_not_grad_mode():
    q = tt.randn(1, 2, 4, 3)
    with tt.no_grad():
        ref = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        tt.manual_seed(0)
        dropped = F.scaled_dot_product_attention(q, q, q, is_causal=True, dropout_p=0.5)
        zero = F.scaled_dot_product_attention(q, q, q, is_causal=True, dropout_p=1.0)
    assert not np.allclose(ref.data, dropped.data)  # 与 torch 相同：no_grad 下也做 dropout
    assert not zero.data.any()
    with pytest.raises(ValueError, match="dropout_p"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)


def test_gelu_only_tanh():
    with pytest.raises(ValueError, match="tanh"):
        nn.GELU("none")
    with pytest.raises(ValueError, match="tanh"):
        F.gelu(tt.ones(2), approximate="none")


# ---------------------------------------------------------------- 与 torch 对照


torch_mark = pytest.mark.torch


def _torch():
    return pytest.importorskip("torch")


def _tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def _copy_into_torch(tm, m):
    torch = _torch()
    sd = {k: torch.from_numpy(np.array(v.data)) for k, v in m.state_dict().items()}
    tm.load_state_dict(sd)


def _compare_layer(m, tm, x_np, dtype, idx_input=False):
    """同一输入、同一上游梯度：比较输出、输入梯度与每个参数梯度（按名字）。"""
    torch = _torch()
    tm.to(getattr(torch, np.dtype(dtype).name))
    m.to(dtype)
    _copy_into_torch(tm, m)
    if idx_input:
        x, tx = x_np, torch.from_numpy(x_np)
    else:
        x = tt.tensor(x_np.astype(dtype), requires_grad=True)
        tx = torch.tensor(x_np.astype(dtype), requires_grad=True)
    y, ty = m(x), tm(tx)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **_tol(dtype))
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    if not idx_input:
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), **_tol(dtype))
    tparams = dict(tm.named_parameters())
    assert [n for n, _ in m.named_parameters()] == list(tparams)
    for n, p in m.named_parameters():
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad.data, tparams[n].grad.numpy(), **_tol(dtype), err_msg=n)


DTYPES = [np.float64, np.float32]


@torch_mark
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(dtype, bias):
    torch = _torch()
    x = np.random.default_rng(0).standard_normal((2, 3, 5))
    _compare_layer(nn.Linear(5, 4, bias=bias), torch.nn.Linear(5, 4, bias=bias), x, dtype)
    _compare_layer(nn.Linear(5, 4, bias=bias), torch.nn.Linear(5, 4, bias=bias), x[0, 0], dtype)  # 1 维输入


@torch_mark
@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_matches_torch(dtype):
    torch = _torch()
    idx = np.array([[0, 3, 3, 9], [9, 9, 1, 0]])  # 重复 id：梯度必须累加
    _compare_layer(nn.Embedding(10, 6), torch.nn.Embedding(10, 6), idx, dtype, idx_input=True)


@torch_mark
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [{}, {"elementwise_affine": False}, {"bias": False}])
def test_layernorm_matches_torch(dtype, kw):
    torch = _torch()
    x = np.random.default_rng(0).standard_normal((2, 3, 8)) * 3 + 1
    _compare_layer(nn.LayerNorm(8, **kw), torch.nn.LayerNorm(8, **kw), x, dtype)


@torch_mark
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_matches_torch(dtype):
    torch = _torch()
    x = np.random.default_rng(0).standard_normal((4, 7)) * 3
    _compare_layer(nn.GELU(), torch.nn.GELU(approximate="tanh"), x, dtype)


@torch_mark
@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_matches_torch_keys_and_values(dtype):
    torch = _torch()
    m = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.GELU(), nn.Dropout(0.5), nn.Linear(8, 3))
    tm = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.LayerNorm(8), torch.nn.GELU(approximate="tanh"), torch.nn.Dropout(0.5),
        torch.nn.Linear(8, 3),
    )
    assert list(m.state_dict()) == list(tm.state_dict())
    assert [n for n, _ in m.named_modules()] == [n for n, _ in tm.named_modules()]
    m.eval()
    tm.eval()
    _compare_layer(m, tm, np.random.default_rng(0).standard_normal((6, 5)), dtype)
    # 反方向：torch 的 state_dict 直接加载进 tinytensor
    m2 = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.GELU(), nn.Dropout(0.5), nn.Linear(8, 3))
    m2.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    for k, v in m2.state_dict().items():
        np.testing.assert_array_equal(v.data, tm.state_dict()[k].numpy().astype(np.float32))


@torch_mark
def test_modulelist_and_tied_model_keys_match_torch():
    torch = _torch()

    class TBlock(torch.nn.Module):
        def __init__(self, vocab=7, dim=4):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, dim)
            self.ln = torch.nn.LayerNorm(dim)
            self.layers = torch.nn.ModuleList([torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim, bias=False)])
            self.head = torch.nn.Linear(dim, vocab, bias=False)
            self.head.weight = self.emb.weight
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.register_buffer("mask", torch.tril(torch.ones(3, 3)))
            self.register_buffer("cache", torch.zeros(2), persistent=False)

        def forward(self, idx):
            x = self.ln(self.emb(idx))
            for layer in self.layers:
                x = torch.nn.functional.gelu(layer(x), approximate="tanh")
            return self.head(x) * self.scale

    m, tm = Block(), TBlock()
    assert list(m.state_dict()) == list(tm.state_dict()) == BLOCK_STATE_KEYS
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()] == BLOCK_PARAM_NAMES
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in tm.named_buffers()]
    assert [n for n, _ in m.named_modules()] == [n for n, _ in tm.named_modules()]
    _compare_layer(m, tm, np.array([[1, 2, 3], [6, 0, 1]]), np.float64, idx_input=True)


@torch_mark
def test_repr_matches_torch():
    torch = _torch()
    m = nn.Sequential(
        nn.Embedding(10, 4), nn.Linear(4, 8), nn.GELU(), nn.LayerNorm(8), nn.Dropout(0.1),
        nn.ModuleList([nn.Linear(8, 2, bias=False)]),
    )
    tm = torch.nn.Sequential(
        torch.nn.Embedding(10, 4), torch.nn.Linear(4, 8), torch.nn.GELU(approximate="tanh"), torch.nn.LayerNorm(8),
        torch.nn.Dropout(0.1), torch.nn.ModuleList([torch.nn.Linear(8, 2, bias=False)]),
    )
    assert repr(m) == repr(tm)
