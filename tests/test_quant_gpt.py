"""在训练过的（非随机的）GPT 上量化：int8 / bf16 伪量化后，下一个词元的 top-1 与 float32 基本一致、困惑度几乎不变。"""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import run_cli, write_corpus

from gpt_numpy.model import GPTModel
from gpt_numpy.quant import evaluate_quantization, quantize_gpt
from llmcore.tokenizers import load_tokenizer


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
