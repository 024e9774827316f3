"""SFT 与 DPO 训练循环的冒烟测试（小模型、几十步）：损失下降、DPO 从 log 2 起步且偏好准确率上升、
两条轨道前几步的损失相同（float64）、LoRA 的参照副本与模型输出相同、生成回答并打分。"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gpt_testutil import default_dtype

import tinytensor as tt
from gpt_numpy import instruct as ninst
from llmcore.config import GPTConfig
from llmcore.finetune import dpo_data as dd
from llmcore.finetune import instruct_data as idata
from llmcore.finetune import instruct_trainer as it
from llmcore.finetune import sft_data as sd
from llmcore.tokenizers import CharTokenizer

ENTRIES = [
    {"task": "sentiment", "instruction": "判断情感，只回答正面或负面。", "input": "很好用", "output": "正面"},
    {"task": "sentiment", "instruction": "判断情感，只回答正面或负面。", "input": "太差了", "output": "负面"},
    {"task": "pinyin", "instruction": "写出拼音。", "input": "瘫痪", "output": "tan huan"},
    {"task": "segment", "instruction": "分词。", "input": "我爱北京", "output": "我 爱 北京"},
]


@pytest.fixture(scope="module")
def setup():
    text = "".join(idata.format_example(e) for e in ENTRIES) + "bcdefgijklmopqrsvwxyz"
    tok = CharTokenizer.train(text)
    cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=96, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    data = sd.encode_entries(ENTRIES, tok, max_length=cfg.context_length)
    pairs = dd.encode_pairs(dd.make_rule_pairs(ENTRIES, seed=0), tok, max_length=cfg.context_length)
    return tok, cfg, data, pairs


def run_track(mod, cfg, tok, data, pairs, dtype="float32", sft_steps=25, dpo_steps=10, lora=False):
    model = mod.build_instruct_model(cfg, None, "lora" if lora else "full", seed=1, lora_rank=4, dtype=dtype)
    backend = mod.InstructBackend(model, lr=5e-3, weight_decay=0.0)
    eot = sd.eot_id_of(tok)
    sft = it.train_sft(backend, data, eot, steps=sft_steps, batch_size=4, lr=5e-3, val=data, eval_every=sft_steps)
    ref = mod.frozen_copy(model)
    dpo_backend = mod.InstructBackend(model, lr=5e-3, weight_decay=0.0, reference=ref)
    dpo = it.train_dpo(dpo_backend, pairs, eot, steps=dpo_steps, batch_size=4, beta=0.5, lr=5e-3)
    return backend, sft, dpo


def check_curves(sft, dpo):
    assert sft[-1]["loss"] < 0.5 * sft[0]["loss"]
    assert "val_loss" in sft[-1] and sft[-1]["val_loss"] < sft[0]["loss"]
    assert dpo[0]["loss"] == pytest.approx(math.log(2), rel=1e-5)  # 第一步策略 = 参照
    assert dpo[0]["margin"] == pytest.approx(0.0, abs=1e-5)
    assert dpo[-1]["accuracy"] == 1.0 and dpo[-1]["margin"] > 0.5 and dpo[-1]["loss"] < 0.4


def test_numpy_track_sft_dpo_and_eval(setup):
    tok, cfg, data, pairs = setup
    with default_dtype(tt.float32):
        backend, sft, dpo = run_track(ninst, cfg, tok, data, pairs)
        check_curves(sft, dpo)
        results, answers = it.evaluate_backend(backend, ENTRIES, tok, max_new_tokens=12,
                                               context_length=cfg.context_length)
    assert len(answers) == len(ENTRIES) and all(isinstance(a, str) for a in answers)
    assert results["all"]["n"] == len(ENTRIES) and set(results) == {"sentiment", "pinyin", "segment", "all"}


@pytest.mark.torch
def test_torch_track_and_cross_track_losses(setup):
    pytest.importorskip("torch")
    from gpt_testutil import torch_threads

    from gpt_torch import instruct as tinst

    tok, cfg, data, pairs = setup
    with torch_threads(1):
        _, sft_t, dpo_t = run_track(tinst, cfg, tok, data, pairs)
        check_curves(sft_t, dpo_t)
        with default_dtype(tt.float64):
            _, sft_n, dpo_n = run_track(ninst, cfg, tok, data, pairs, "float64", sft_steps=3, dpo_steps=3)
        _, sft_t, dpo_t = run_track(tinst, cfg, tok, data, pairs, "float64", sft_steps=3, dpo_steps=3)
    np.testing.assert_allclose([r["loss"] for r in sft_n], [r["loss"] for r in sft_t], rtol=1e-8)
    np.testing.assert_allclose([r["loss"] for r in dpo_n], [r["loss"] for r in dpo_t], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose([r["margin"] for r in dpo_n], [r["margin"] for r in dpo_t], rtol=1e-6, atol=1e-8)


def test_lora_reference_copy_matches(setup):
    tok, cfg, data, pairs = setup
    with default_dtype(tt.float64):
        model = ninst.build_instruct_model(cfg, None, "lora", seed=2, lora_rank=4, dtype="float64")
        rng = np.random.default_rng(0)
        for n, p in model.named_parameters():
            if n.endswith(".lora.B"):
                p.data[...] = rng.normal(0, 0.3, p.shape)
        ref = ninst.frozen_copy(model)
        x, _ = sd.collate(data.seqs, 0)
        with tt.no_grad():
            np.testing.assert_allclose(ref(x).data, model(x).data, rtol=1e-10, atol=1e-10)
        assert not any(p.requires_grad for p in ref.parameters())
        trainable, total = ninst.InstructBackend(model).num_parameters()
        assert 0 < trainable < total
    with pytest.raises(ValueError, match="训练方式"):
        ninst.build_instruct_model(cfg, None, "head")


def test_trainer_errors(setup):
    tok, cfg, data, pairs = setup
    with default_dtype(tt.float32):
        backend = ninst.InstructBackend(ninst.build_instruct_model(cfg, None, seed=3))
    from llmcore.errors import UsageError

    with pytest.raises(UsageError, match="为空"):
        it.train_sft(backend, data.subset(0), 0, steps=1)
    with pytest.raises(ValueError, match="参照模型"):
        it.train_dpo(backend, pairs, 0, steps=1)


@pytest.mark.torch
def test_torch_lora_reference_copy_matches(setup):
    torch = pytest.importorskip("torch")
    from gpt_torch import instruct as tinst

    tok, cfg, data, _ = setup
    model = tinst.build_instruct_model(cfg, None, "lora", seed=2, lora_rank=4, dtype="float64")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".lora.B"):
                p.normal_(0, 0.3)
    ref = tinst.frozen_copy(model)
    x = torch.as_tensor(sd.collate(data.seqs, 0)[0])
    with torch.no_grad():
        np.testing.assert_allclose(ref(x).numpy(), model(x).numpy(), rtol=1e-10, atol=1e-10)
    assert not any(p.requires_grad for p in ref.parameters())
