"""Qwen3：两条轨道的 logits 与 transformers 的 Qwen3ForCausalLM 对齐（预填充与带缓存的逐词元解码），
两条轨道在 float64 下互相一致，int8 / bf16 权重与 float32 的差距在给定范围内，错误输入报出清楚的错误。"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from qwen3_testutil import write_tiny_qwen3  # noqa: E402

from gpt_numpy.qwen3 import Qwen3Model  # noqa: E402
from gpt_torch.qwen3 import Qwen3ForCausalLM  # noqa: E402
from llmcore.qwen3 import Qwen3Config, open_checkpoint  # noqa: E402
from llmcore.qwen3.weights import bf16_to_float32, float32_to_bf16  # noqa: E402

pytestmark = pytest.mark.torch
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def ckpt(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen3")
    hf = write_tiny_qwen3(d, tie=request.param, seed=1)
    return d, hf


def _ids(b=2, t=19, seed=0):
    return np.random.default_rng(seed).integers(0, 300, (b, t))


def _hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor(ids)).logits.numpy()


def _load(track, d, **kw):
    if track == "numpy":
        return Qwen3Model.from_pretrained(d, **kw)
    return Qwen3ForCausalLM.from_pretrained(d, device="cpu", **kw)


@pytest.mark.parametrize("track", ["numpy", "torch"])
def test_prefill_matches_transformers(ckpt, track):
    d, hf = ckpt
    ids = _ids()
    ref = _hf_logits(hf, ids)
    assert np.abs(ref).max() > 1.0  # 权重足够大，比较才有意义
    model = _load(track, d)
    np.testing.assert_allclose(model.infer(ids, last_only=False), ref, **TOL)
    np.testing.assert_allclose(model.infer(ids), ref[:, -1], **TOL)


@pytest.mark.parametrize("track", ["numpy", "torch"])
def test_cached_decoding_matches_transformers(ckpt, track):
    """先预填充 7 个词元，再分块（3 个）、再逐个送入：每一步的 logits 等于不用缓存的整段前向。"""
    d, hf = ckpt
    ids = _ids()
    ref = _hf_logits(hf, ids)
    model = _load(track, d)
    cache = model.new_cache(batch_size=2, max_len=32)
    got = [model.infer(ids[:, :7], cache, last_only=False)]
    got.append(model.infer(ids[:, 7:10], cache, last_only=False))
    for i in range(10, ids.shape[1]):
        got.append(model.infer(ids[:, i : i + 1], cache, last_only=False))
    np.testing.assert_allclose(np.concatenate(got, axis=1), ref, **TOL)
    assert cache.pos == ids.shape[1]


def test_transformers_cached_generation_agrees(ckpt):
    """transformers 自己带缓存的贪心生成，与 NumPy 轨道带缓存的贪心生成给出相同的词元。"""
    d, hf = ckpt
    ids = _ids(1, 6, seed=3)
    with torch.no_grad():
        out = hf.generate(torch.tensor(ids), max_new_tokens=12, do_sample=False, pad_token_id=0)
    model = _load("numpy", d)
    cache = model.new_cache(max_len=32)
    logits = model.infer(ids, cache)
    toks = []
    for _ in range(12):
        t = int(logits.argmax(-1)[0])
        toks.append(t)
        logits = model.infer(np.array([[t]]), cache)
    assert toks == out[0, 6:].tolist()


def test_tracks_agree_in_float64(ckpt):
    d, _ = ckpt
    ids = _ids()
    a = Qwen3Model.from_pretrained(d, dtype=np.float64).infer(ids, last_only=False)
    b = Qwen3ForCausalLM.from_pretrained(d, dtype=torch.float64, device="cpu").infer(ids, last_only=False)
    assert a.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_bf16_checkpoint(tmp_path):
    """磁盘上是 bf16（真实 Qwen3 就是）：逐张量读取转 float32，与 transformers 读同一文件的结果一致。"""
    from transformers import Qwen3ForCausalLM as HF

    write_tiny_qwen3(tmp_path, dtype="bfloat16", seed=2)
    ck = open_checkpoint(tmp_path)
    assert ck.is_bf16("model.embed_tokens.weight")
    hf = HF.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = _ids()
    ref = _hf_logits(hf, ids)
    np.testing.assert_allclose(_load("numpy", tmp_path).infer(ids, last_only=False), ref, **TOL)
    np.testing.assert_allclose(_load("torch", tmp_path).infer(ids, last_only=False), ref, **TOL)
    # bf16 权重原样放进 bf16 格式（不经 float32 的完整副本），与 float32 的结果一致到 float32 求和误差
    np.testing.assert_allclose(_load("numpy", tmp_path, scheme="bf16").infer(ids, last_only=False), ref, **TOL)


def test_bf16_roundtrip():
    x = np.array([1.0, -2.5, 3.14159, 1e-30, 65504.0, np.inf, -0.0], np.float32)
    back = bf16_to_float32(float32_to_bf16(x))
    np.testing.assert_allclose(back, x, rtol=2**-8)
    u = float32_to_bf16(np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8], np.float32))  # 平局取偶
    np.testing.assert_array_equal(bf16_to_float32(u), np.array([1.0, 1.0 + 2**-6], np.float32))
    assert np.isnan(bf16_to_float32(float32_to_bf16(np.array([np.nan], np.float32))))[0]


@pytest.mark.parametrize("scheme,bound", [("bf16", 0.02), ("int8", 0.08)])
def test_quantized_close_to_fp32(ckpt, scheme, bound):
    """量化权重的 logits 与 float32 的差距：最大误差不超过 logits 幅度的 bound，贪心选词几乎全同；
    带缓存的逐词元解码与整段前向在同一量化格式下一致。int8 的激活也量化 (W8A8)，两边的误差相加，
    所以界比 bf16（只有权重舍入）宽；训练过的权重上的影响见第 8 章的困惑度与 top-1。"""
    d, _ = ckpt
    ids = _ids(2, 40, seed=5)
    ref = _load("numpy", d).infer(ids, last_only=False)
    qm = _load("numpy", d, scheme=scheme)
    got = qm.infer(ids, last_only=False)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < bound, rel
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) > 0.9
    cache = qm.new_cache(2, 64)
    steps = [qm.infer(ids[:, :30], cache, last_only=False)]
    steps += [qm.infer(ids[:, i : i + 1], cache, last_only=False) for i in range(30, 40)]
    np.testing.assert_allclose(np.concatenate(steps, 1), got, rtol=1e-4, atol=1e-4)
    fp = _load("numpy", d)
    assert qm.weight_bytes() < fp.weight_bytes() * (0.55 if scheme == "bf16" else 0.35)


# ---------------------------------------------------------------- 错误输入


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        open_checkpoint(tmp_path)
    write_tiny_qwen3(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        open_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="不存在"):
        open_checkpoint(tmp_path / "nope")


def test_missing_key_and_wrong_shape(tmp_path):
    from safetensors.numpy import load_file, save_file

    write_tiny_qwen3(tmp_path)
    f = tmp_path / "model.safetensors"
    state = load_file(f)
    bad = dict(state)
    del bad["model.layers.1.mlp.up_proj.weight"]
    save_file(bad, f)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        _load("numpy", tmp_path)
    bad = dict(state)
    bad["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
    save_file(bad, f)
    with pytest.raises(ValueError, match=r"k_proj\.weight 的形状是 \(16, 64\)，按 config.json 应为 \(32, 64\)"):
        _load("torch", tmp_path)


def test_unsupported_architecture(tmp_path):
    write_tiny_qwen3(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"] = ["Qwen3MoeForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Qwen3MoeForCausalLM.*支持：Qwen3ForCausalLM"):
        open_checkpoint(tmp_path)
    cfg["architectures"] = ["Qwen3ForCausalLM"]
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="RoPE 缩放"):
        open_checkpoint(tmp_path)


def test_config_from_real_qwen3_fields():
    """Qwen3-0.6B 的 config.json（transformers 4 的写法：rope_theta 在顶层）。"""
    d = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936, "hidden_size": 1024, "num_hidden_layers": 28,
         "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072,
         "rope_theta": 1000000, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 40960,
         "rope_scaling": None, "hidden_act": "silu", "attention_bias": False, "use_sliding_window": False}
    cfg = Qwen3Config.from_hf_dict(d)
    assert cfg == Qwen3Config()
    assert cfg.num_parameters() == 596_049_920  # 嵌入与输出层共享，只算一次
    assert cfg.num_parameters(count_tied_head=True) == 596_049_920 + 151936 * 1024
    with pytest.raises(ValueError, match="num_key_value_heads"):
        Qwen3Config.from_hf_dict({**d, "num_key_value_heads": 5})


@pytest.mark.parametrize("track", ["numpy", "torch"])
def test_too_long_and_bad_ids(ckpt, track):
    d, _ = ckpt
    model = _load(track, d)
    with pytest.raises(ValueError, match="超过了模型的上下文长度 128"):
        model.infer(np.zeros((1, 129), np.int64))
    cache = model.new_cache(max_len=8)
    model.infer(np.zeros((1, 6), np.int64), cache)
    with pytest.raises(ValueError, match="超过了KV 缓存长度 8"):
        model.infer(np.zeros((1, 3), np.int64), cache)
    with pytest.raises(IndexError, match="词元 id 300 超出词表范围"):
        model.infer(np.array([[1, 300]]))


def test_sharded_checkpoint(tmp_path, ckpt):
    """分片的检查点（大模型的布局）：按索引读取各分片。"""
    d, hf = ckpt
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    shutil.copy(d / "config.json", tmp_path / "config.json")
    ids = _ids()
    np.testing.assert_allclose(_load("numpy", tmp_path).infer(ids), _hf_logits(hf, ids)[:, -1], **TOL)
