"""GPT-2 权重（Hugging Face 布局）→ gpt_numpy：键名映射、转置、qkv 切分、配置转换与错误。

检查点由测试自己按 DESIGN.md §6 的键名与形状写出；正确性用一个直接在 HF 布局数组上写的
独立 NumPy 前向（Conv1D 即 x @ W + b）核对。
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gpt_testutil import gpt2_reference_logits, hf_config, hf_state, write_hf_dir

import tinytensor as tt
from gpt_numpy.model import GPTModel
from gpt_numpy.pretrained import load_hf_gpt2
from llmcore.checkpoint import CheckpointError
from llmcore.hf_gpt2 import HFConversionError, config_from_hf, convert_hf_state

IDS = np.array([[3, 0, 36, 7, 7, 12, 5, 1, 30, 2, 9, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])


def numpy_logits(model: GPTModel, ids: np.ndarray = IDS) -> np.ndarray:
    with tt.no_grad():
        return model(ids).data


@pytest.mark.parametrize("prefix,masks", [("", True), ("transformer.", True), ("transformer.", False)])
def test_loads_and_matches_reference_forward(tmp_path, prefix, masks):
    cfg = hf_config()
    st = hf_state(cfg, seed=1, prefix=prefix, masks=masks)
    m = load_hf_gpt2(write_hf_dir(tmp_path, cfg, st), dtype=np.float64)
    assert not m.training
    assert m.cfg.qkv_bias and m.cfg.tie_weights and m.cfg.context_length == 12 and m.cfg.drop_rate == 0.1
    assert m.out_head.weight is m.tok_emb.weight
    ref = gpt2_reference_logits(st, n_head=4, ids=IDS)
    np.testing.assert_allclose(numpy_logits(m), ref, rtol=1e-9, atol=1e-9)
    m32 = load_hf_gpt2(tmp_path)  # 默认 float32
    assert m32.tok_emb.weight.dtype == np.float32
    np.testing.assert_allclose(numpy_logits(m32), ref, rtol=1e-4, atol=1e-4)


def test_mapping_of_each_tensor():
    """逐个核对：转置、q/k/v 的切分顺序、LayerNorm 的 scale/shift。"""
    cfg = hf_config(n_embd=8, n_head=2, n_layer=1)
    st = hf_state(cfg, seed=2)
    ours = convert_hf_state(st, config_from_hf(cfg))
    c = 8
    w = st["h.0.attn.c_attn.weight"]  # (C, 3C)
    np.testing.assert_array_equal(ours["trf_blocks.0.att.W_query.weight"], w[:, :c].T)
    np.testing.assert_array_equal(ours["trf_blocks.0.att.W_key.weight"], w[:, c : 2 * c].T)
    np.testing.assert_array_equal(ours["trf_blocks.0.att.W_value.weight"], w[:, 2 * c :].T)
    np.testing.assert_array_equal(ours["trf_blocks.0.att.W_value.bias"], st["h.0.attn.c_attn.bias"][2 * c :])
    np.testing.assert_array_equal(ours["trf_blocks.0.ff.layers.0.weight"], st["h.0.mlp.c_fc.weight"].T)
    np.testing.assert_array_equal(ours["trf_blocks.0.ff.layers.2.weight"], st["h.0.mlp.c_proj.weight"].T)
    np.testing.assert_array_equal(ours["trf_blocks.0.att.out_proj.weight"], st["h.0.attn.c_proj.weight"].T)
    np.testing.assert_array_equal(ours["trf_blocks.0.norm2.shift"], st["h.0.ln_2.bias"])
    np.testing.assert_array_equal(ours["final_norm.scale"], st["ln_f.weight"])
    np.testing.assert_array_equal(ours["pos_emb.weight"], st["wpe.weight"])
    assert ours["out_head.weight"] is ours["tok_emb.weight"]
    assert list(ours) == list(GPTModel(config_from_hf(cfg)).state_dict())
    assert all(a.flags.c_contiguous for a in ours.values())


def test_config_mapping_and_drop_rate():
    cfg = config_from_hf(hf_config(n_embd=24, n_layer=3, n_head=6, n_positions=20, vocab_size=50))
    assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads, cfg.context_length, cfg.vocab_size) == (24, 3, 6, 20, 50)
    assert cfg.drop_rate == 0.1
    assert config_from_hf(hf_config(resid_pdrop=0.0)).drop_rate == 0.0
    assert config_from_hf(hf_config(), drop_rate=0.0).drop_rate == 0.0
    bare = {k: v for k, v in hf_config().items() if not k.endswith("pdrop")}
    assert config_from_hf(bare).drop_rate == 0.0


@pytest.mark.parametrize(
    "change,msg",
    [
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon=1e-06 不受支持"),
        ({"activation_function": "relu"}, "activation_function='relu' 不受支持"),
        ({"model_type": "llama"}, "只支持 model_type='gpt2'"),
        ({"n_inner": 10}, "n_inner=10 不受支持"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ],
)
def test_unsupported_config(change, msg):
    with pytest.raises(HFConversionError, match=msg):
        config_from_hf(hf_config(**change))


def test_unexpected_missing_and_misshapen_keys():
    cfg = hf_config()
    gcfg = config_from_hf(cfg)
    st = hf_state(cfg)
    with pytest.raises(HFConversionError, match=r"无法识别的键 'h.0.attn.rotary.weight'"):
        convert_hf_state({**st, "h.0.attn.rotary.weight": np.zeros(3)}, gcfg)
    with pytest.raises(HFConversionError, match=r"无法识别的键 'transformer.h.2.ln_1.weight'"):
        convert_hf_state({**st, "transformer.h.2.ln_1.weight": np.zeros(16)}, gcfg)  # 层数多于配置
    with pytest.raises(HFConversionError, match=r"无法识别的键 'score.weight'"):
        convert_hf_state({**st, "score.weight": np.zeros(3)}, gcfg)
    missing = {k: v for k, v in st.items() if k != "h.1.mlp.c_fc.bias"}
    with pytest.raises(HFConversionError, match=r"缺少参数.*trf_blocks.1.ff.layers.0.bias"):
        convert_hf_state(missing, gcfg)
    bad = {**st, "h.0.attn.c_attn.weight": np.zeros((16, 40), np.float32)}
    with pytest.raises(HFConversionError, match=r"'h.0.attn.c_attn.weight' 形状不匹配：检查点中为 \(16, 40\)"):
        convert_hf_state(bad, gcfg)
    bad = {**st, "wpe.weight": np.zeros((10, 16), np.float32)}
    msg = r"'pos_emb.weight'（来自 'wpe.weight'）形状不匹配：检查点中为 \(10, 16\)，配置需要 \(12, 16\)"
    with pytest.raises(HFConversionError, match=msg):
        convert_hf_state(bad, gcfg)


def test_lm_head_tied_and_untied(tmp_path):
    cfg = hf_config()
    st = hf_state(cfg, seed=3)
    ok = convert_hf_state({**st, "lm_head.weight": st["wte.weight"].copy()}, config_from_hf(cfg))
    assert ok["out_head.weight"] is ok["tok_emb.weight"]
    head = st["wte.weight"] + 1.0
    with pytest.raises(HFConversionError, match="lm_head.weight 与 wte.weight 不相同"):
        convert_hf_state({**st, "lm_head.weight": head}, config_from_hf(cfg))
    ucfg = hf_config(tie_word_embeddings=False)
    m = load_hf_gpt2(write_hf_dir(tmp_path, ucfg, {**st, "lm_head.weight": head}))
    assert not m.cfg.tie_weights and m.out_head.weight is not m.tok_emb.weight
    np.testing.assert_array_equal(m.out_head.weight.data, head)
    with pytest.raises(HFConversionError, match="没有 lm_head.weight"):
        convert_hf_state(st, config_from_hf(ucfg))


def test_directory_errors(tmp_path):
    with pytest.raises(HFConversionError, match="缺少 config.json"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf_config()), encoding="utf-8")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(HFConversionError, match="pytorch_model.bin"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="已损坏"):
        load_hf_gpt2(tmp_path)


def test_sharded_checkpoint(tmp_path):
    from safetensors.numpy import save_file

    cfg = hf_config()
    st = hf_state(cfg, seed=4, prefix="transformer.")
    keys = sorted(st)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: st[k] for k in ks}, str(tmp_path / name))
    weight_map = {k: name for name, ks in shards.items() for k in ks}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    m = load_hf_gpt2(tmp_path, dtype=np.float64)
    np.testing.assert_allclose(numpy_logits(m), gpt2_reference_logits(st, 4, IDS), rtol=1e-9, atol=1e-9)
