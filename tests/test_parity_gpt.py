"""两条轨道的整模型一致性：logits、损失、每个参数的梯度（按名字），以及 10 步 AdamW 后的损失。"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt_testutil import batch, default_dtype, numpy_model, tiny_cfg, torch_threads  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy.model import GPTModel as NumpyGPT  # noqa: E402
from gpt_torch.model import GPTModel as TorchGPT  # noqa: E402
from llmcore.config import GPTConfig  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield

VARIANTS = [(seed, tied, bias) for seed in (0, 1, 2) for tied in (False, True) for bias in (False, True)]
F64 = dict(rtol=1e-9, atol=1e-12)
F32 = dict(rtol=2e-4, atol=2e-5)


@pytest.fixture
def f64():
    """测试期间 tinytensor 默认精度为 float64，结束后恢复。"""
    with default_dtype(tt.float64):
        yield


def torch_twin(nm: NumpyGPT, dtype: torch.dtype, attn_impl: str = "sdpa") -> TorchGPT:
    """同配置、同参数值的 torch 模型。"""
    tm = TorchGPT(nm.cfg, attn_impl=attn_impl).to(dtype)
    tm.load_arrays(nm.state_arrays())
    return tm


def numpy_loss_grads(nm: NumpyGPT, x: np.ndarray, y: np.ndarray):
    logits = nm(x)
    loss = tt.nn.functional.cross_entropy(logits.reshape(-1, nm.cfg.vocab_size), y.reshape(-1))
    nm.zero_grad()
    loss.backward()
    grads = {k: p.grad.data.copy() for k, p in nm.named_parameters()}
    return logits.data.copy(), loss.item(), grads


def torch_loss_grads(tm: TorchGPT, x: np.ndarray, y: np.ndarray):
    logits = tm(torch.as_tensor(x))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, tm.cfg.vocab_size), torch.as_tensor(y).reshape(-1))
    tm.zero_grad()
    loss.backward()
    grads = {k: p.grad.detach().numpy().copy() for k, p in tm.named_parameters()}
    return logits.detach().numpy(), loss.item(), grads


def assert_grads_close(gn: dict, gt: dict, tol: dict) -> None:
    assert list(gn) == list(gt), "两条轨道的参数名或顺序不同"
    for k in gn:
        scale = max(1.0, float(np.abs(gt[k]).max()))
        np.testing.assert_allclose(gn[k], gt[k], rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=k)


@pytest.mark.parametrize("seed,tied,bias", VARIANTS)
def test_forward_backward_float64(f64, seed, tied, bias):
    nm = numpy_model(tiny_cfg(tie_weights=tied, qkv_bias=bias), seed)
    tm = torch_twin(nm, torch.float64)
    x, y = batch(nm.cfg, seed, b=3, t=9 + seed)
    ln, lossn, gn = numpy_loss_grads(nm, x, y)
    lt, losst, gt = torch_loss_grads(tm, x, y)
    assert ln.dtype == np.float64
    np.testing.assert_allclose(ln, lt, **F64)
    assert lossn == pytest.approx(losst, rel=1e-12)
    assert_grads_close(gn, gt, F64)
    # 每个梯度都不平凡（W_key 的偏置理论上为 0：softmax 对每行加常数不变）
    for k, g in gt.items():
        if not k.endswith("W_key.bias"):
            assert np.abs(g).max() > 1e-6, k


@pytest.mark.parametrize("seed,tied,bias", VARIANTS[::3])
def test_forward_backward_float32(seed, tied, bias):
    nm = numpy_model(tiny_cfg(tie_weights=tied, qkv_bias=bias), seed)
    tm = torch_twin(nm, torch.float32)
    x, y = batch(nm.cfg, seed)
    ln, lossn, gn = numpy_loss_grads(nm, x, y)
    lt, losst, gt = torch_loss_grads(tm, x, y)
    assert ln.dtype == np.float32 and gn["tok_emb.weight"].dtype == np.float32
    np.testing.assert_allclose(ln, lt, rtol=F32["rtol"], atol=F32["atol"] * np.abs(lt).max())
    assert lossn == pytest.approx(losst, rel=1e-5)
    assert_grads_close(gn, gt, F32)


def test_backward_twice_is_bit_identical(f64):
    nm = numpy_model(tiny_cfg(qkv_bias=True, tie_weights=True), 4)
    x, y = batch(nm.cfg, 4)
    _, l1, g1 = numpy_loss_grads(nm, x, y)
    _, l2, g2 = numpy_loss_grads(nm, x, y)
    assert l1 == l2
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)


def test_parity_detects_a_changed_weight(f64):
    """一致性检查本身能失败：改动一个参数后 logits 与梯度都对不上。"""
    nm = numpy_model(tiny_cfg(), 0)
    tm = torch_twin(nm, torch.float64)
    with torch.no_grad():
        tm.trf_blocks[1].norm2.shift[3] += 1e-6
    x, y = batch(nm.cfg, 0)
    ln, _, gn = numpy_loss_grads(nm, x, y)
    lt, _, gt = torch_loss_grads(tm, x, y)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(ln, lt, **F64)
    with pytest.raises(AssertionError):
        assert_grads_close(gn, gt, F64)


@pytest.mark.parametrize("dtype,tied,bias,rtol", [("float64", True, True, 1e-9), ("float64", False, False, 1e-9),
                                                   ("float32", True, False, 2e-4)])
def test_adamw_ten_steps(dtype, tied, bias, rtol):
    with default_dtype(getattr(tt, dtype)):
        nm = numpy_model(tiny_cfg(tie_weights=tied, qkv_bias=bias), 3)
        tm = torch_twin(nm, getattr(torch, dtype))
        hp = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        opt_n = tt.optim.AdamW(nm.parameters(), **hp)
        opt_t = torch.optim.AdamW(tm.parameters(), **hp)
        losses_n, losses_t = [], []
        for step in range(10):
            x, y = batch(nm.cfg, 100 + step, b=2)
            _, ln, _ = numpy_loss_grads(nm, x, y)
            _, lt, _ = torch_loss_grads(tm, x, y)
            opt_n.step()
            opt_t.step()
            losses_n.append(ln)
            losses_t.append(lt)
    np.testing.assert_allclose(losses_n, losses_t, rtol=rtol)
    assert losses_n[-1] < losses_n[0]  # 确实在学习
    tp = dict(tm.named_parameters())
    for k, p in nm.named_parameters():
        np.testing.assert_allclose(p.data, tp[k].detach().numpy(), rtol=rtol * 10, atol=rtol, err_msg=k)
    if tied:
        assert nm.out_head.weight is nm.tok_emb.weight and tm.out_head.weight is tm.tok_emb.weight


@pytest.mark.parametrize("bias", [False, True])
def test_torch_attention_impls_agree(f64, bias):
    nm = numpy_model(tiny_cfg(qkv_bias=bias, tie_weights=True), 5)
    x, y = batch(nm.cfg, 5, t=7)
    results = [torch_loss_grads(torch_twin(nm, torch.float64, impl), x, y) for impl in ("sdpa", "explicit")]
    (l1, s1, g1), (l2, s2, g2) = results
    np.testing.assert_allclose(l1, l2, **F64)
    assert s1 == pytest.approx(s2, rel=1e-12)
    assert_grads_close(g1, g2, F64)


def test_attention_impls_agree_with_dropout_off_in_eval():
    cfg = tiny_cfg(drop_rate=0.2)
    torch.manual_seed(0)
    a = TorchGPT(cfg, attn_impl="sdpa").eval()
    b = TorchGPT(cfg, attn_impl="explicit").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tied,bias", [(False, False), (True, True)])
def test_state_dict_keys_identical(tied, bias):
    cfg = tiny_cfg(tie_weights=tied, qkv_bias=bias, n_layers=3)
    sn = NumpyGPT(cfg).state_dict()
    st = TorchGPT(cfg).state_dict()
    assert list(sn) == list(st)
    assert {k: tuple(v.shape) for k, v in sn.items()} == {k: tuple(v.shape) for k, v in st.items()}
    assert list(dict(NumpyGPT(cfg).named_parameters())) == list(dict(TorchGPT(cfg).named_parameters()))
    assert ("trf_blocks.0.att.W_query.bias" in sn) == bias


@pytest.mark.parametrize("tied,bias", [(False, False), (False, True), (True, False), (True, True)])
def test_num_parameters_small_configs(tied, bias):
    cfg = tiny_cfg(tie_weights=tied, qkv_bias=bias)
    expected = cfg.num_parameters(include_tied=False)
    assert NumpyGPT(cfg).num_parameters() == expected
    assert TorchGPT(cfg).num_parameters() == expected == sum(p.numel() for p in TorchGPT(cfg).parameters())
    assert cfg.num_parameters() == expected + (cfg.vocab_size * cfg.emb_dim if tied else 0)


def test_gpt2_small_formula():
    assert GPTConfig.preset("gpt2-small").num_parameters() == 163_009_536
    hf = GPTConfig.preset("gpt2-small", qkv_bias=True, tie_weights=True)
    assert hf.num_parameters(include_tied=False) == 124_439_808  # Hugging Face 报告的 GPT-2 124M 参数数


@pytest.mark.slow
def test_gpt2_small_models_count():
    cfg = GPTConfig.preset("gpt2-small")
    with torch.device("meta"):  # 只数参数，不分配内存
        assert TorchGPT(cfg).num_parameters() == 163_009_536
    nm = NumpyGPT(cfg)  # tinytensor 没有 meta 设备：真的分配约 650 MB（float32）
    assert nm.num_parameters() == 163_009_536
