"""第 4、5 章页面上的实现（标着 `# 章内实现` 的单元）与库的实现逐项一致。

只取出这些单元执行（不跑整个 notebook），在随机输入上与库比较（float64）：
第 4 章的 LayerNorm、GELU、前馈网络、残差网络、Transformer 块、GPTModel 的输出与全部梯度，贪心生成，
KV 缓存（缓存内容、逐步的 logits、生成的词元）；第 5 章的交叉熵（值与梯度）、训练的一步、评估、训练循环、
温度 / top-k / top-p 与抽样、生成循环、保存与加载。页面上的代码一旦与库分道扬镳，这里就会失败。
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chapter_inline import assert_modules_equal, fwd_bwd, inline_namespace  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy import generate as NG  # noqa: E402
from gpt_numpy import model as NM  # noqa: E402
from gpt_numpy.kv_cache import KVCache as LibKVCache  # noqa: E402
from gpt_numpy.train import NumpyBackend  # noqa: E402
from gpt_torch import generate as TG  # noqa: E402
from gpt_torch import model as TM  # noqa: E402
from llmcore import sampling  # noqa: E402
from llmcore.batches import StepBatches  # noqa: E402
from llmcore.checkpoint import load_model_state  # noqa: E402
from llmcore.config import GPTConfig, TrainConfig  # noqa: E402
from tinytensor.nn import functional as F  # noqa: E402

pytestmark = pytest.mark.torch

SMALL = GPTConfig(vocab_size=40, context_length=12, emb_dim=6, n_heads=2, n_layers=2, drop_rate=0.1)


@pytest.fixture(scope="module")
def ch04() -> dict[str, Any]:
    return inline_namespace("ch04")


@pytest.fixture(scope="module")
def ch05() -> dict[str, Any]:
    return inline_namespace("ch05")


def small_cfg(**kw: Any) -> GPTConfig:
    return GPTConfig(**{**SMALL.to_dict(), **kw})


def random_state(model: Any, seed: int) -> dict[str, np.ndarray]:
    """与 model 同名同形状的随机 float64 参数（LayerNorm 的 scale/shift 也随机，免得核对得太轻松）。"""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape) * 0.3 for k, v in model.state_dict().items()}


# ---------------- 第 4 章 ----------------


def test_layer_norm(ch04: dict[str, Any]) -> None:
    ours = ch04["LayerNorm"](6)
    ours.load_state_dict({k: v.astype(np.float32) for k, v in random_state(ours, 0).items()})
    assert_modules_equal(ours, NM.LayerNorm(6))
    assert_modules_equal(ours, TM.LayerNorm(6))
    twin = ch04["LayerNormTorch"](6)
    twin.load_state_dict({k: torch.from_numpy(v).float() for k, v in random_state(twin, 1).items()})
    assert_modules_equal(twin, TM.LayerNorm(6))
    assert_modules_equal(twin, ch04["LayerNorm"](6))


def test_gelu(ch04: dict[str, Any]) -> None:
    xb = np.random.default_rng(0).standard_normal((3, 4, 6)) * 4
    assert_modules_equal(ch04["GELU"](), tt.nn.GELU(approximate="tanh"), xb=xb)
    assert_modules_equal(ch04["GELU"](), torch.nn.GELU(approximate="tanh"), xb=xb)
    y, gx, _ = fwd_bwd(ch04["gelu"], xb, np.ones_like(xb))
    x = tt.tensor(xb, requires_grad=True)
    F.gelu(x, approximate="tanh").sum().backward()
    np.testing.assert_allclose(y, F.gelu(tt.tensor(xb), approximate="tanh").numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_feedforward_block_gpt(ch04: dict[str, Any], qkv_bias: bool) -> None:
    cfg = small_cfg(qkv_bias=qkv_bias)
    tt.manual_seed(0)
    assert_modules_equal(ch04["FeedForward"](cfg), NM.FeedForward(cfg))
    assert_modules_equal(ch04["FeedForward"](cfg), TM.FeedForward(cfg))
    block = ch04["TransformerBlock"](cfg)
    block.load_state_dict({k: v.astype(np.float32) for k, v in random_state(block, 2).items()})
    assert_modules_equal(block, NM.TransformerBlock(cfg))
    assert_modules_equal(block, TM.TransformerBlock(cfg))
    assert_modules_equal(block, TM.TransformerBlock(cfg, attn_impl="explicit"))
    gpt = ch04["GPTModel"](cfg)
    gpt.load_state_dict({k: v.astype(np.float32) for k, v in random_state(gpt, 3).items()})
    ids = np.random.default_rng(4).integers(0, cfg.vocab_size, size=(2, cfg.context_length))
    assert_modules_equal(gpt, NM.GPTModel(cfg), xb=ids)
    assert_modules_equal(gpt, TM.GPTModel(cfg), xb=ids)
    assert list(gpt.state_dict()) == list(NM.GPTModel(cfg).state_dict())


def test_inline_model_is_causal(ch04: dict[str, Any]) -> None:
    tt.manual_seed(0)
    gpt = ch04["GPTModel"](small_cfg()).double().eval()
    ids = np.random.default_rng(0).integers(0, 40, size=(1, 8))
    changed = ids.copy()
    changed[0, 5] = (changed[0, 5] + 1) % 40
    a, b = gpt(tt.tensor(ids)).detach().numpy(), gpt(tt.tensor(changed)).detach().numpy()
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 0


@pytest.mark.parametrize("use_shortcut", [False, True])
def test_shortcut_net_both_tracks(ch04: dict[str, Any], use_shortcut: bool) -> None:
    sizes = [3, 3, 3, 3, 1]
    tt.manual_seed(0)
    net_tt = ch04["make_deep_net"](tt.nn, sizes, use_shortcut)
    net_torch = ch04["make_deep_net"](torch.nn, sizes, use_shortcut)
    xb = np.random.default_rng(0).standard_normal((4, 3))
    assert_modules_equal(net_tt, net_torch, xb=xb)
    # 残差连接确实存在：形状相同的层，输出 = 输入 + f(输入)
    net = net_tt.double().eval()
    x = tt.tensor(xb)
    y = net.layers[0](x)
    expected = x.numpy() + y.detach().numpy() if use_shortcut else y.detach().numpy()
    h = expected
    for layer in list(net.layers)[1:]:
        out = layer(tt.tensor(h)).detach().numpy()
        h = h + out if use_shortcut and out.shape == h.shape else out
    np.testing.assert_allclose(net(x).detach().numpy(), h, rtol=1e-12)


def _trained_like(cfg: GPTConfig, seed: int) -> Any:
    """随机权重（尺度放大，logits 分得开，贪心不会因并列而含糊）的 float64 gpt_numpy 模型。"""
    tt.manual_seed(seed)
    m = NM.GPTModel(cfg).double().eval()
    rng = np.random.default_rng(seed)
    m.load_state_dict({k: v.numpy() + rng.standard_normal(v.shape) * 0.5 for k, v in m.state_dict().items()})
    return m


def test_generate_text_simple(ch04: dict[str, Any]) -> None:
    cfg = small_cfg(drop_rate=0.0)
    m = _trained_like(cfg, 0)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(2, 5))
    ours = ch04["generate_text_simple"](m, ids, 15, cfg.context_length)  # 超过上下文长度：要裁剪
    np.testing.assert_array_equal(ours, NG.generate_text_simple(m, ids, 15, cfg.context_length))
    mt = TM.GPTModel(cfg).double().eval()
    mt.load_arrays(m.state_arrays())
    twin = ch04["generate_text_simple_torch"](mt, torch.from_numpy(ids), 15, cfg.context_length)
    lib_twin = TG.generate_text_simple(mt, torch.from_numpy(ids), 15, cfg.context_length)
    np.testing.assert_array_equal(twin.numpy(), lib_twin.numpy())
    np.testing.assert_array_equal(twin.numpy(), ours)


def test_kv_cache_structure(ch04: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    ours, lib = ch04["KVCache"](2, 3, 2, 10, 4, np.float64), LibKVCache(2, 3, 2, 10, 4, np.float64)
    for tn in (4, 1, 1, 3):
        for layer in range(2):
            k, v = rng.standard_normal((3, 2, tn, 4)), rng.standard_normal((3, 2, tn, 4))
            a, b = ours.update(layer, k, v), lib.update(layer, k, v)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
        ours.advance(tn)
        lib.advance(tn)
        assert ours.pos == lib.pos
    with pytest.raises(RuntimeError):
        ours.update(0, np.zeros((3, 2, 2, 4)), np.zeros((3, 2, 2, 4)))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_kv_cache_forward_and_generate(ch04: dict[str, Any], qkv_bias: bool) -> None:
    cfg = small_cfg(drop_rate=0.0, qkv_bias=qkv_bias, context_length=16)
    m = _trained_like(cfg, 1)
    ids = np.random.default_rng(2).integers(0, cfg.vocab_size, size=(2, 6))
    ours = ch04["KVCache"](cfg.n_layers, 2, cfg.n_heads, cfg.context_length, cfg.head_dim, np.float64)
    lib = m.new_cache(2)
    seq = ids
    logits = ch04["gpt_forward_cached"](m, ids, ours)  # 预填充
    np.testing.assert_allclose(logits, m.infer(ids, lib), rtol=1e-10, atol=1e-12)
    for _ in range(6):  # 逐个解码
        full = m(tt.tensor(seq)).detach().numpy()[:, -1]
        np.testing.assert_allclose(logits, full, rtol=1e-10, atol=1e-12)
        nxt = np.argmax(logits, -1)[:, None]
        seq = np.concatenate([seq, nxt], axis=1)
        logits = ch04["gpt_forward_cached"](m, nxt, ours)
        np.testing.assert_allclose(logits, m.infer(nxt, lib), rtol=1e-10, atol=1e-12)
        assert ours.pos == lib.pos == seq.shape[1]
        n = ours.pos
        for layer in range(cfg.n_layers):
            np.testing.assert_allclose(ours.keys[layer][:, :, :n], lib.keys[layer][:, :, :n], atol=1e-12)
            np.testing.assert_allclose(ours.values[layer][:, :, :n], lib.values[layer][:, :, :n], atol=1e-12)
    out = ch04["generate_cached"](m, cfg, ids, 10)
    np.testing.assert_array_equal(out, NG.generate(m, ids, 10))
    np.testing.assert_array_equal(out, NG.generate(m, ids, 10, use_cache=False))
    np.testing.assert_array_equal(out, ch04["generate_text_simple"](m, ids, 10, cfg.context_length))
    with pytest.raises(ValueError):
        ch04["generate_cached"](m, cfg, ids, 11)


# ---------------- 第 5 章 ----------------


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy(ch05: dict[str, Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    z, t = rng.standard_normal((9, 13)) * 5, rng.integers(0, 13, size=9)
    z[0, 0] = 200.0  # 大 logits：必须数值稳定
    vals, grads = [], []
    for fn in (ch05["cross_entropy"], F.cross_entropy):
        x = tt.tensor(z, requires_grad=True)
        loss = fn(x, t)
        loss.backward()
        vals.append(loss.item())
        grads.append(x.grad.numpy())
    for fn in (ch05["cross_entropy_torch"], torch.nn.functional.cross_entropy):
        x = torch.tensor(z, requires_grad=True)
        loss = fn(x, torch.from_numpy(t))
        loss.backward()
        vals.append(loss.item())
        grads.append(x.grad.numpy())
    assert np.isfinite(vals).all()
    for v, g in zip(vals[1:], grads[1:]):
        assert abs(v - vals[0]) < 1e-12
        np.testing.assert_allclose(g, grads[0], rtol=1e-10, atol=1e-14)
    assert ch05["perplexity"](np.log(7.0)) == pytest.approx(7.0)


def _backend_and_model(
    ch05: dict[str, Any], seed: int = 0, vocab_size: int = 40
) -> tuple[NumpyBackend, Any, Any, TrainConfig]:
    """NumPy 轨道的训练后端（float64、学习率不变、不裁剪、对全部参数做权重衰减）与一个权重相同的模型和 AdamW。"""
    cfg = small_cfg(drop_rate=0.0, vocab_size=vocab_size)
    tcfg = TrainConfig(dtype="float64", lr=3e-3, min_lr=3e-3, schedule="constant", warmup_steps=0, grad_clip=0.0,
                       weight_decay=0.1, decay_all=True, seed=seed)
    try:
        backend = NumpyBackend(cfg, tcfg)
        model = NM.GPTModel(cfg)
        model.load_arrays({k: v.copy() for k, v in backend.model_arrays().items()})
    finally:
        tt.set_default_dtype(tt.float32)
    opt = tt.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=1e-8,
                         weight_decay=tcfg.weight_decay)
    return backend, model, opt, tcfg


def test_train_step_and_evaluate(ch05: dict[str, Any]) -> None:
    backend, model, opt, tcfg = _backend_and_model(ch05)
    ids = np.random.default_rng(0).integers(0, SMALL.vocab_size, size=500)
    batches = StepBatches(ids, batch_size=3, context_length=SMALL.context_length, seed=0)
    model.train()
    for step in range(4):
        x, y = batches.get(step)
        ours = ch05["train_step"](model, opt, x, y)
        backend.zero_grad()
        lib = backend.forward_backward(x, y, 1.0)
        backend.optimizer_step(tcfg.lr)
        assert abs(ours - lib) < 1e-12
    lib_arrays = backend.model_arrays()
    for k, v in model.state_arrays().items():
        np.testing.assert_allclose(v, lib_arrays[k], rtol=1e-10, atol=1e-12, err_msg=k)
    fixed = [batches.get(i) for i in (10, 11)]
    assert abs(ch05["evaluate"](model, fixed) - backend.eval_loss(fixed)) < 1e-12
    assert model.training  # evaluate 之后回到训练模式
    ours_loss = ch05["calc_loss_batch"](model, *fixed[0]).item()
    np.testing.assert_allclose(ours_loss, model.loss(*fixed[0]).item(), rtol=1e-12)


def test_train_model_simple(ch05: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from llmcore.tokenizers import CharTokenizer

    text = "新华社北京一月一日电今天天气很好我们去公园散步看见很多人在跑步唱歌跳舞"
    tok = CharTokenizer.train(text)
    backend, model, opt, tcfg = _backend_and_model(ch05, seed=3, vocab_size=tok.vocab_size)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, tok.vocab_size, size=400)
    batches = StepBatches(ids, batch_size=2, context_length=SMALL.context_length, seed=1)
    eval_train, eval_val = [batches.get(100)], [batches.get(101)]
    hist = ch05["train_model_simple"](model, opt, batches, eval_train, eval_val, steps=5, eval_every=2,
                                      tokenizer=tok, prompt="新华社", n_new=4)
    assert hist["eval_step"] == [2, 4, 5]
    assert len(hist["samples"]) == 3 and all(s.startswith("新华社") for s in hist["samples"])
    assert "第   2 步" in capsys.readouterr().out
    lib_losses, lib_eval = [], []
    for step in range(5):
        backend.zero_grad()
        lib_losses.append(backend.forward_backward(*batches.get(step), 1.0))
        backend.optimizer_step(tcfg.lr)
        if step + 1 in hist["eval_step"]:
            lib_eval.append((backend.eval_loss(eval_train), backend.eval_loss(eval_val)))
    np.testing.assert_allclose(hist["loss"], lib_losses, rtol=1e-10)
    np.testing.assert_allclose(hist["train_loss"], [a for a, _ in lib_eval], rtol=1e-10)
    np.testing.assert_allclose(hist["val_loss"], [b for _, b in lib_eval], rtol=1e-10)


def test_train_step_torch(ch05: dict[str, Any]) -> None:
    cfg = small_cfg(drop_rate=0.0)
    a, b = TM.GPTModel(cfg).double(), TM.GPTModel(cfg).double()
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.AdamW(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, 13))
    x, y = ids[:, :-1], ids[:, 1:]
    for _ in range(3):
        la = ch05["train_step_torch"](a, oa, x, y)
        logits = b(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
        ob.zero_grad()
        loss.backward()
        ob.step()
        assert abs(la - loss.item()) < 1e-12
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filters(ch05: dict[str, Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((4, 50)) * 2
    z[1, :5] = 3.0  # 并列的最大值
    for k in (1, 3, 5, 50):
        want = sampling.filter_logits(z, top_k=k)
        np.testing.assert_array_equal(ch05["top_k_filter"](z, k), want)
        np.testing.assert_array_equal(ch05["top_k_filter_torch"](torch.from_numpy(z), k).numpy(), want)
    for p in (0.05, 0.5, 0.9, 0.999, 1.0):
        want = sampling.filter_logits(z, top_p=p)
        np.testing.assert_array_equal(ch05["top_p_filter"](z, p), want)
        np.testing.assert_array_equal(ch05["top_p_filter_torch"](torch.from_numpy(z), p).numpy(), want)
    np.testing.assert_allclose(ch05["softmax_np"](z), sampling.softmax(z), rtol=1e-14)
    np.testing.assert_allclose(ch05["apply_temperature"](z, 0.7), z / 0.7)


@pytest.mark.parametrize("kw", [{"temperature": 0.0}, {"temperature": 0.7}, {"temperature": 1.3, "top_k": 5},
                                {"temperature": 1.0, "top_p": 0.8}, {"temperature": 0.9, "top_k": 10, "top_p": 0.7}])
def test_sample_next(ch05: dict[str, Any], kw: dict[str, Any]) -> None:
    z = np.random.default_rng(0).standard_normal((3, 30)) * 2
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(200):
        np.testing.assert_array_equal(ch05["sample_next"](z, rng=r1, **kw), sampling.sample_next(z, rng=r2, **kw))


@pytest.mark.parametrize(
    "kw", [{"temperature": 0.0}, {"temperature": 0.8, "top_k": 8}, {"temperature": 1.0, "top_p": 0.9}]
)
def test_generate_simple(ch05: dict[str, Any], kw: dict[str, Any]) -> None:
    cfg = small_cfg(drop_rate=0.0)
    m = _trained_like(cfg, 4)
    ids = np.random.default_rng(2).integers(0, cfg.vocab_size, size=(2, 4))
    ours = ch05["generate_simple"](m, ids, 14, cfg.context_length, seed=11, **kw)  # 超过上下文长度
    np.testing.assert_array_equal(ours, NG.generate(m, ids, 14, seed=11, use_cache=False, **kw))
    np.testing.assert_array_equal(ours, NG.generate(m, ids, 14, seed=11, **kw))


def test_save_load(ch05: dict[str, Any], tmp_path: Path) -> None:
    cfg = small_cfg(qkv_bias=True)
    tt.manual_seed(0)
    m = NM.GPTModel(cfg)
    d = ch05["save_weights"](m, tmp_path / "ours")
    state, cfg2, _ = load_model_state(d)  # 库读我们写的文件
    assert cfg2 == cfg
    for k, v in m.state_arrays().items():
        np.testing.assert_array_equal(state[k], v)
    for cls in (NM.GPTModel, TM.GPTModel):
        back = ch05["load_weights"](cls, d)
        for k, v in back.state_dict().items():
            np.testing.assert_array_equal(v.detach().numpy(), state[k])
    lib_dir = TM.GPTModel.load(d).save(tmp_path / "lib")  # 库写的文件，我们来读
    back = ch05["load_weights"](NM.GPTModel, lib_dir)
    for k, v in back.state_arrays().items():
        np.testing.assert_array_equal(v, state[k])
