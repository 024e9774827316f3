"""gpt_numpy 模型与检查点的错误处理：输入过长、词元 id 越界、配置不符、检查点缺失或损坏。"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gpt_testutil import numpy_model, tiny_cfg

import tinytensor as tt
from gpt_numpy.model import GPTModel
from llmcore.checkpoint import CheckpointError, load_model_state


def test_input_longer_than_context():
    m = GPTModel(tiny_cfg())
    m(np.zeros((1, 12), dtype=np.int64))  # 恰好等于上下文长度没问题
    with pytest.raises(ValueError, match=r"输入长度 13 超过了模型的上下文长度 context_length=12"):
        m(np.zeros((1, 13), dtype=np.int64))


@pytest.mark.parametrize("bad", [37, 1000, -1, -5])
def test_token_id_out_of_range_names_the_id(bad):
    m = GPTModel(tiny_cfg())
    ids = np.array([[1, 2, bad, 3]])
    with pytest.raises(IndexError, match=rf"词元 id {bad} 超出嵌入表范围 \[0, 37\)"):
        m(ids)


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        GPTModel(tiny_cfg())(np.zeros(5, dtype=np.int64))


def test_config_mismatch_names_key_and_shapes():
    a = GPTModel(tiny_cfg())
    b = GPTModel(tiny_cfg(vocab_size=40))
    shape_msg = r"'tok_emb.weight' 形状不匹配：检查点中为 \(37, 16\)，模型需要 \(40, 16\)"
    with pytest.raises(CheckpointError, match=shape_msg):
        b.load_arrays(a.state_arrays())
    c = GPTModel(tiny_cfg(qkv_bias=True))
    with pytest.raises(CheckpointError, match=r"缺少的键：\['trf_blocks.0.att.W_query.bias'"):
        c.load_arrays(a.state_arrays())


def test_round_trip_and_tied_stays_tied(tmp_path):
    m = numpy_model(tiny_cfg(tie_weights=True), 0)
    m.save(tmp_path / "ck")
    state, cfg, meta = load_model_state(tmp_path / "ck")
    assert cfg == m.cfg and meta["format"] == "llm-zh-gpt"
    m2 = GPTModel.load(tmp_path / "ck")
    assert m2.out_head.weight is m2.tok_emb.weight
    assert [k for k, _ in m2.named_parameters()] == [k for k, _ in m.named_parameters()]
    x = np.array([[1, 5, 7, 36]])
    with tt.no_grad():
        np.testing.assert_array_equal(m(x).data, m2(x).data)
    with tt.no_grad():
        m2.tok_emb.weight.data[0] += 1.0
    np.testing.assert_array_equal(m2.out_head.weight.data, m2.tok_emb.weight.data)


def test_load_rejects_untied_values_into_tied_model():
    src = numpy_model(tiny_cfg(tie_weights=False), 0)
    dst = GPTModel(tiny_cfg(tie_weights=True))
    with pytest.raises(CheckpointError, match="共享"):
        dst.load_arrays(src.state_arrays())


def test_load_float64_checkpoint_into_float32(tmp_path):
    m = numpy_model(tiny_cfg(), 1)
    m.to(np.float64).save(tmp_path)
    m2 = GPTModel.load(tmp_path)
    assert m2.tok_emb.weight.dtype == np.float32
    m3 = GPTModel.load(tmp_path, dtype=np.float64)
    np.testing.assert_array_equal(m3.tok_emb.weight.data, m.tok_emb.weight.data)


def test_missing_and_corrupted_files(tmp_path):
    d = tmp_path / "ck"
    numpy_model(tiny_cfg(), 0).save(d)
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="已损坏"):
        GPTModel.load(d)
    w.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="已损坏"):
        GPTModel.load(d)
    w.unlink()
    with pytest.raises(CheckpointError, match="缺少文件 .*model.safetensors"):
        GPTModel.load(d)
    numpy_model(tiny_cfg(), 0).save(d)
    (d / "manifest.json").unlink()  # 下面改动 config.json：不让清单的校验和先报错，看配置本身的检查
    cfg_path = d / "config.json"
    meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg_path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="不是合法的 JSON"):
        GPTModel.load(d)
    cfg_path.write_text(json.dumps({**meta, "format": "other"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="不是本项目的模型检查点"):
        GPTModel.load(d)
    cfg_path.write_text(json.dumps({**meta, "model": {**meta["model"], "n_heads": 5}}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="模型配置无效"):
        GPTModel.load(d)
    cfg_path.unlink()
    with pytest.raises(CheckpointError, match="缺少 config.json"):
        GPTModel.load(d)
    with pytest.raises(CheckpointError):
        GPTModel.load(tmp_path / "nowhere")
