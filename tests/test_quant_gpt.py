"""在训练过的（非随机的）GPT 上量化：int8 (W8A8) / bf16 后，下一个词元的 top-1 与 float32 基本一致、困惑度几乎不变；
量化副本的生成走真正的量化内核。"""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import run_cli, write_corpus

import tinytensor as tt
from gpt_numpy.model import GPTModel
from gpt_numpy.quant import BF16Weight, Int8Weight, evaluate_quantization, quantize_gpt
from llmcore.config import GPTConfig
from llmcore.tokenizers import load_tokenizer


@pytest.mark.parametrize("scheme,cls", [("int8", Int8Weight), ("bf16", BF16Weight)])
def test_quantized_copy_generates_through_kernels(scheme, cls):
    """量化副本：infer 用量化权重对象（int8 时激活也量化），带缓存逐个解码与整段前向一致；原模型不变。"""
    tt.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=97, context_length=32, emb_dim=64, n_heads=4, n_layers=2)).eval()
    before = model.state_arrays()["trf_blocks.0.ff.layers.0.weight"].copy()
    q = quantize_gpt(model, scheme, group=32)
    bw = q.trf_blocks[0].infer_weights()
    assert all(isinstance(w, cls) for w in (bw.w_qkv, bw.w_out, bw.w_fc1, bw.w_fc2, q.quantized_head))
    assert model.trf_blocks[0].quantized is None and model.quantized_head is None
    assert q.trf_blocks[0].infer_weights().w_fc1 is bw.w_fc1  # 现成的对象：不在每次调用时重新量化
    np.testing.assert_array_equal(model.state_arrays()["trf_blocks.0.ff.layers.0.weight"], before)
    ids = np.random.default_rng(1).integers(0, 97, (2, 20))
    full = q.infer(ids, last_only=False)
    cache = q.new_cache(2)
    steps = [q.infer(ids[:, :12], cache, last_only=False)]
    steps += [q.infer(ids[:, i : i + 1], cache, last_only=False) for i in range(12, 20)]
    np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-4, atol=1e-4)
    with tt.no_grad():
        fake = q(ids).data  # 训练用的前向：只有权重是伪量化的
    diff = np.abs(full - fake).max()
    if scheme == "int8":  # 激活量化带来的差别：不为 0，但远小于 logits 的幅度
        assert 0 < diff < 0.05 * np.abs(fake).max(), diff
    else:  # bf16 不量化激活：只差求和顺序
        assert diff < 1e-4, diff


@pytest.mark.slow
def test_quantization_quality_on_trained_gpt(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", 2000)
    out = tmp_path / "run"
    run_cli("gpt_numpy", ["train", f"--data={corpus}", f"--out_dir={out}", "--n_layers=2", "--emb_dim=64",
                          "--n_heads=2", "--context_length=32", "--batch_size=8", "--max_steps=150",
                          "--eval_interval=150", "--eval_batches=2", "--progress=false", "--sample_tokens=4",
                          "--warmup_steps=10", "--lr=3e-3"])
    model = GPTModel.load(out / "ckpt_last")
    tok = load_tokenizer(out / "tokenizer.json")
    tokens = np.asarray(tok.encode(corpus.read_text(encoding="utf-8")[-6000:]))
    res = evaluate_quantization(model, tokens, group=32, n_windows=16)
    ppl = res["int8"]["ppl_ref"]
    assert ppl < 8  # 确实训练过（随机模型的困惑度接近词表大小）
    for scheme, (min_top1, max_ppl_change) in {"bf16": (0.98, 0.01), "int8": (0.97, 0.02)}.items():
        r = res[scheme]
        assert r["top1_agreement"] >= min_top1, (scheme, r)
        assert abs(r["ppl_quant"] / r["ppl_ref"] - 1) <= max_ppl_change, (scheme, r)
    # 伪量化确实改了权重，而且不改原模型
    q = quantize_gpt(model, "int8", 32)
    w0, w1 = model.trf_blocks[0].ff.layers[0].weight.data, q.trf_blocks[0].ff.layers[0].weight.data
    assert not np.array_equal(w0, w1) and np.abs(w0 - w1).max() < np.abs(w0).max() / 100
    print(json.dumps(res, ensure_ascii=False))
