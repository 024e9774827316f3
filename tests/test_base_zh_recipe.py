"""--recipe=base-zh：字段、语料（人民日报 + 评论训练划分），以及它能起步训练（tiny 替身，几步）。"""

from __future__ import annotations

import pytest

from llmcore.config import RECIPES, TrainConfig


def test_recipe_fields():
    from gpt_numpy.__main__ import TRACK
    from llmcore.cli import parse_train_args

    tcfg, model = parse_train_args(["--recipe=base-zh"], TRACK)
    assert (tcfg.data, tcfg.tokenizer, tcfg.bpe_vocab_size, tcfg.preset) == ("base-zh", "bpe", 8000, "small")
    assert tcfg.out_dir == "runs/base-zh" and model == {}
    # 约一遍语料（人民日报约 186 万字 + 评论训练划分，BPE 后约两百多万词元），本机约一小时
    assert 2_000_000 < RECIPES["base-zh"]["max_steps"] * RECIPES["base-zh"]["batch_size"] * 256 < 4_000_000


@pytest.mark.slow
def test_base_zh_trains_a_few_steps(tmp_path):
    from gpt_numpy.train import train
    from llmcore.prepare import load_texts

    train_text, val_text = load_texts(TrainConfig(data="base-zh"))
    assert "新华社" in train_text and len(train_text) > 2_000_000 and len(val_text) > 100_000
    tcfg = TrainConfig(data="base-zh", tokenizer="char", preset="tiny", max_steps=4, batch_size=4, warmup_steps=1,
                       eval_interval=4, eval_batches=1, progress=False, out_dir=str(tmp_path))
    res = train(tcfg, {"context_length": 32, "emb_dim": 32, "n_layers": 1, "n_heads": 2})
    assert res.steps == 4 and res.val_loss is not None and res.val_loss < 9.0
