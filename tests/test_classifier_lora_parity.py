"""分类与 LoRA 的跨轨道一致性（float64，逐个参数按名字比较梯度），合并前后 logits 相同，适配器两边互读。"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt_testutil import default_dtype, numpy_model, tiny_cfg, torch_threads  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy import classifier as ncls  # noqa: E402
from gpt_numpy import lora as nlora  # noqa: E402
from gpt_torch import classifier as tcls  # noqa: E402
from gpt_torch import lora as tlora  # noqa: E402
from gpt_torch.model import GPTModel as TorchGPT  # noqa: E402
from llmcore.checkpoint import CheckpointError  # noqa: E402

pytestmark = pytest.mark.torch
F64 = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(autouse=True)
def _env():
    with torch_threads(1), default_dtype(tt.float64):
        yield


def cls_batch(cfg, seed, b=4):
    rng = np.random.default_rng(seed)
    t = cfg.context_length - 2
    ids = rng.integers(0, cfg.vocab_size, (b, t))
    lengths = rng.integers(1, t + 1, b)
    lengths[0] = t
    for i, n in enumerate(lengths):
        ids[i, n:] = 0  # 右侧补齐
    return ids, lengths, rng.integers(0, 2, b)


def twins(seed=0, lora=False, tied=False, bias=False, targets="all"):
    nm = numpy_model(tiny_cfg(tie_weights=tied, qkv_bias=bias), seed)
    tm = TorchGPT(nm.cfg).double()
    tm.load_arrays(nm.state_arrays())
    ncls.to_classifier(nm, 2, seed=7)
    tcls.to_classifier(tm, 2, seed=7)
    if lora:
        nlora.replace_linear_with_lora(nm, rank=3, alpha=6.0, targets=targets, seed=11)
        tlora.replace_linear_with_lora(tm, rank=3, alpha=6.0, targets=targets, seed=11)
        # B 初始为 0 时 A 的梯度恒为 0；为了让比较有意义，两边放进同样的非零 B
        rng = np.random.default_rng(seed + 50)
        tparams = dict(tm.named_parameters())
        for n, p in nm.named_parameters():
            if n.endswith(".lora.B"):
                p.data[...] = rng.normal(0, 0.3, p.shape)
                with torch.no_grad():
                    tparams[n].copy_(torch.as_tensor(p.data))
    return nm, tm


def grads(nm, tm, batch):
    ids, lengths, labels = batch
    ln = ncls.class_loss(nm, ids, lengths, labels)
    nm.zero_grad()
    ln.backward()
    lt = tcls.class_loss(tm, ids, lengths, labels)
    tm.zero_grad()
    lt.backward()
    gn = {n: p.grad.data for n, p in nm.named_parameters() if p.requires_grad}
    gt = {n: p.grad.numpy() for n, p in tm.named_parameters() if p.requires_grad}
    return ln.item(), lt.item(), gn, gt


@pytest.mark.parametrize("mode", ["full", "last-block", "head"])
@pytest.mark.parametrize("seed,tied,bias", [(0, False, False), (1, True, True)])
def test_classifier_parity(mode, seed, tied, bias):
    nm, tm = twins(seed, tied=tied, bias=bias)
    names_n = ncls.set_trainable(nm, mode)
    names_t = tcls.set_trainable(tm, mode)
    assert names_n == names_t and [n for n, _ in nm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    batch = cls_batch(nm.cfg, seed)
    np.testing.assert_allclose(ncls.class_logits(nm, *batch[:2]).data,
                               tcls.class_logits(tm, *batch[:2]).detach().numpy(), **F64)
    ln, lt, gn, gt = grads(nm, tm, batch)
    assert ln == pytest.approx(lt, rel=1e-12)
    assert list(gn) == list(gt) == names_n
    for n in gn:
        np.testing.assert_allclose(gn[n], gt[n], **F64, err_msg=n)
        assert np.abs(gt[n]).max() > 0 or n.endswith("W_key.bias"), n
    if mode == "last-block":
        assert all(n.startswith(("trf_blocks.1.", "final_norm.", "out_head.")) for n in names_n)
        assert nm.tok_emb.weight.grad is None and tm.tok_emb.weight.grad is None


def test_padding_does_not_change_logits():
    nm, tm = twins(2)
    ids, lengths, _ = cls_batch(nm.cfg, 2)
    other = ids.copy()
    for i, n in enumerate(lengths):
        other[i, n:] = 5  # 换一种补齐词元
    np.testing.assert_allclose(ncls.class_logits(nm, ids, lengths).data, ncls.class_logits(nm, other, lengths).data,
                               **F64)
    a = tcls.class_logits(tm, ids, lengths).detach().numpy()
    np.testing.assert_allclose(a, tcls.class_logits(tm, other, lengths).detach().numpy(), **F64)
    with pytest.raises(ValueError, match="lengths"):
        ncls.class_logits(nm, ids, np.zeros(len(ids), dtype=int))


@pytest.mark.parametrize("targets", ["all", "qv"])
def test_lora_parity(targets):
    nm, tm = twins(3, lora=True, bias=True, targets=targets)
    ncls.set_trainable(nm, "lora")
    tcls.set_trainable(tm, "lora")
    assert [n for n, _ in nm.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert "trf_blocks.0.att.W_query.lora.A" in dict(nm.named_parameters())
    ln, lt, gn, gt = grads(nm, tm, cls_batch(nm.cfg, 3))
    assert ln == pytest.approx(lt, rel=1e-12)
    assert list(gn) == list(gt)
    assert all(".lora." in n or n.startswith("out_head.") for n in gn)
    n_lora = sum(".lora." in n for n in gn)
    assert n_lora == 2 * nm.cfg.n_layers * (6 if targets == "all" else 2)
    for n in gn:
        np.testing.assert_allclose(gn[n], gt[n], **F64, err_msg=n)
        assert np.abs(gt[n]).max() > 0, n
    tr_n, tot_n = nlora.count_parameters(nm)
    assert (tr_n, tot_n) == tlora.count_parameters(tm)
    assert tr_n == sum(p.numel() for n, p in nm.named_parameters() if n in gn)


def test_lora_starts_as_identity_and_merge_matches():
    nm = numpy_model(tiny_cfg(qkv_bias=True), 4)
    ncls.to_classifier(nm, 2, seed=1)
    ids, lengths, _ = cls_batch(nm.cfg, 4)
    before = ncls.class_logits(nm, ids, lengths).data.copy()
    nlora.replace_linear_with_lora(nm, rank=2, alpha=4.0, seed=3)
    np.testing.assert_allclose(ncls.class_logits(nm, ids, lengths).data, before, **F64)  # B = 0
    rng = np.random.default_rng(0)
    for n, p in nm.named_parameters():
        if n.endswith(".lora.B"):
            p.data[...] = rng.normal(0, 0.3, p.shape)
    unmerged = ncls.class_logits(nm, ids, lengths).data.copy()
    assert np.abs(unmerged - before).max() > 1e-3
    tm = TorchGPT(nm.cfg).double()
    tcls.to_classifier(tm, 2)
    tlora.replace_linear_with_lora(tm, rank=2, alpha=4.0)
    tm.load_state_dict({k: torch.as_tensor(v.data) for k, v in nm.state_dict().items()})
    t_unmerged = tcls.class_logits(tm, ids, lengths).detach().numpy()
    np.testing.assert_allclose(t_unmerged, unmerged, **F64)
    nlora.merge_lora(nm)
    tlora.merge_lora(tm)
    assert not nlora.lora_modules(nm) and not tlora.lora_modules(tm)
    assert "trf_blocks.0.att.W_query.weight" in dict(nm.named_parameters())
    np.testing.assert_allclose(ncls.class_logits(nm, ids, lengths).data, unmerged, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tcls.class_logits(tm, ids, lengths).detach().numpy(), unmerged, rtol=1e-10,
                               atol=1e-12)
    # 合并后的权重与生成用的 infer（NumPy 轨道）也一致
    with tt.no_grad():
        full = nm.features(ids).data
    feats = nm.final_norm.infer(nm.trf_blocks[1].infer(nm.trf_blocks[0].infer(
        nm.tok_emb.weight.data[ids] + nm.pos_emb.weight.data[: ids.shape[1]])))
    np.testing.assert_allclose(feats, full, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("direction", ["numpy->torch", "torch->numpy"])
def test_adapter_roundtrip_across_tracks(tmp_path, direction):
    nm, tm = twins(5, lora=True)
    ncls.set_trainable(nm, "lora")
    tcls.set_trainable(tm, "lora")
    ids, lengths, _ = cls_batch(nm.cfg, 5)
    # 在来源模型上改动分类头，确认它随适配器一起保存
    src_is_numpy = direction == "numpy->torch"
    if src_is_numpy:
        nm.out_head.bias.data[...] += 0.5
        path = nlora.save_adapter(nm, tmp_path / "a", extra={"num_classes": 2})
        want = ncls.class_logits(nm, ids, lengths).data
    else:
        with torch.no_grad():
            tm.out_head.bias += 0.5
        path = tlora.save_adapter(tm, tmp_path / "a", extra={"num_classes": 2})
        want = tcls.class_logits(tm, ids, lengths).detach().numpy()
    from safetensors.numpy import load_file

    keys = set(load_file(str(path)))
    assert keys == {n for n, _ in nm.named_parameters() if ".lora." in n or n.startswith("out_head.")}
    # 目标：一个只有基座与随机分类头、没有 LoRA 的新模型；load_adapter 自己加上 LoRA 层
    fresh_n = numpy_model(tiny_cfg(), 5)
    fresh_t = TorchGPT(fresh_n.cfg).double()
    fresh_t.load_arrays(fresh_n.state_arrays())
    ncls.to_classifier(fresh_n, 2, seed=99)
    tcls.to_classifier(fresh_t, 2, seed=99)
    if src_is_numpy:
        meta = tlora.load_adapter(fresh_t, path)
        got = tcls.class_logits(fresh_t, ids, lengths).detach().numpy()
    else:
        meta = nlora.load_adapter(fresh_n, path)
        got = ncls.class_logits(fresh_n, ids, lengths).data
    assert meta["rank"] == 3 and meta["alpha"] == 6.0 and meta["extra"] == {"num_classes": 2}
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_adapter_errors(tmp_path):
    nm, _ = twins(6, lora=True)
    path = nlora.save_adapter(nm, tmp_path / "x.safetensors")
    other = numpy_model(tiny_cfg(emb_dim=24), 6)
    ncls.to_classifier(other, 2)
    with pytest.raises(CheckpointError, match="形状"):
        nlora.load_adapter(other, path)
    with pytest.raises(ValueError, match="没有 LoRA 层"):
        nlora.save_adapter(numpy_model(tiny_cfg(), 0), tmp_path / "y")
    with pytest.raises(ValueError, match="没有匹配任何线性层"):
        nlora.replace_linear_with_lora(numpy_model(tiny_cfg(), 0), 2, 2.0, targets="nothing")


def test_classifier_checkpoint_across_tracks(tmp_path):
    nm, tm = twins(7)
    ids, lengths, _ = cls_batch(nm.cfg, 7)
    ncls.save_classifier(nm, tmp_path / "n", {"classes": ["负面", "正面"]})
    tcls.save_classifier(tm, tmp_path / "t")
    tm2, meta = tcls.load_classifier(tmp_path / "n", dtype=torch.float64)
    nm2, _ = ncls.load_classifier(tmp_path / "t")
    assert meta["classes"] == ["负面", "正面"] and meta["num_classes"] == 2
    want = ncls.class_logits(nm, ids, lengths).data
    np.testing.assert_allclose(tcls.class_logits(tm2, ids, lengths).detach().numpy(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ncls.class_logits(nm2, ids, lengths).data, want, rtol=1e-6, atol=1e-6)
    nm.save(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="不是分类模型"):
        ncls.load_classifier(tmp_path / "lm")
