"""偏好对：规则造的错答确实判错、模型错答的挑选、坏输入（缺字段、chosen = rejected）、编码与成批的掩码。"""

from __future__ import annotations

import numpy as np
import pytest

from llmcore.errors import DataError, UsageError
from llmcore.finetune import dpo_data as dd
from llmcore.finetune import instruct_bench as ib
from llmcore.finetune import instruct_data as idata
from llmcore.finetune import sft_data as sd
from llmcore.finetune.instruct_eval import is_correct
from llmcore.tokenizers import CharTokenizer

SAMPLES = [
    {"task": "sentiment", "instruction": "情感？", "input": "很好", "output": "正面"},
    {"task": "segment", "instruction": "分词", "input": "我爱北京", "output": "我 爱 北京"},
    {"task": "segment", "instruction": "分词", "input": "我爱", "output": "我 爱"},
    {"task": "entity", "instruction": "人名", "input": "李鹏说", "output": "李鹏"},
    {"task": "entity", "instruction": "人名", "input": "他说", "output": "无"},
    {"task": "entity", "instruction": "人名", "input": "李鹏、乔石说", "output": "李鹏、乔石"},
    {"task": "pinyin", "instruction": "拼音", "input": "瘫痪", "output": "tan huan"},
    {"task": "t2s", "instruction": "简体", "input": "樂得可愛", "output": "乐得可爱"},
]


def test_rule_rejected_is_always_wrong():
    rng = np.random.default_rng(0)
    for _ in range(20):
        for e in SAMPLES:
            bad = dd.rule_rejected(e, rng)
            assert bad is not None and bad != e["output"] and not is_correct(e, bad), (e, bad)
    assert dd.rule_rejected({"task": "", "instruction": "a", "input": "", "output": "b"}, rng) is None


def test_rule_pairs_on_benchmark():
    bench = ib.build_benchmark(sizes={"train": 30, "val": 1, "test": 1})
    pairs = dd.make_rule_pairs(bench.train, seed=1)
    assert len(pairs) == len(bench.train)
    assert all(p["chosen"] == p["output"] and not is_correct(p, p["rejected"]) for p in pairs)
    assert dd.make_rule_pairs(bench.train, seed=1) == pairs


def test_pairs_from_samples(capsys):
    entries = SAMPLES[:3]
    pairs, counts = dd.pairs_from_samples(entries, ["负面", "我 爱 北京", "  "])
    assert counts == {"model_wrong": 1, "model_correct": 1, "rule": 0, "skipped_empty": 1}
    assert pairs == [{**entries[0], "chosen": "正面", "rejected": "负面"}]
    pairs, counts = dd.pairs_from_samples(entries, ["负面", "我 爱 北京", "我爱"], fallback_seed=0)
    assert counts["rule"] == 1 and len(pairs) == 3
    assert "模型答错 2 条" in capsys.readouterr().err
    with pytest.raises(UsageError, match="数量不一致"):
        dd.pairs_from_samples(entries, ["正面"])


def test_validate_pairs(capsys):
    good = {**SAMPLES[0], "chosen": "正面", "rejected": "负面"}
    assert dd.validate_pairs([good, {**good, "rejected": "正面 "}]) == [good]
    assert "跳过 chosen 与 rejected 相同的 1 条" in capsys.readouterr().err
    missing = dict(good)
    del missing["rejected"]
    with pytest.raises(DataError, match=r"第 2 条缺少字段 'rejected'"):
        dd.validate_pairs([good, missing])
    with pytest.raises(DataError, match=r"第 1 条的字段 'chosen' 应是字符串"):
        dd.validate_pairs([{**good, "chosen": 1}])


def test_encode_and_collate_pairs(capsys):
    pair = {"instruction": "情感？", "input": "很好", "output": "正面", "chosen": "正面", "rejected": "负面啊"}
    tok = CharTokenizer.train(idata.format_prompt(pair) + "正面负啊")
    data = dd.encode_pairs([pair, {**pair, "input": "很好" * 50}], tok, max_length=100)
    assert len(data) == 1 and data.skipped["too_long"] == 1 and "超长的 1 对" in capsys.readouterr().err
    eot = sd.eot_id_of(tok)
    batch = dd.collate_pairs(data, [0], eot)
    p = len(data.prompts[0])
    ct, rt = batch["chosen_targets"][0], batch["rejected_targets"][0]
    assert (ct[: p - 1] == sd.IGNORE_INDEX).all() and (rt[: p - 1] == sd.IGNORE_INDEX).all()
    assert tok.decode([t for t in ct if t != sd.IGNORE_INDEX]) == "正面<|endoftext|>"
    assert tok.decode([t for t in rt if t != sd.IGNORE_INDEX]) == "负面啊<|endoftext|>"
    assert batch["chosen_inputs"].shape == (1, p + 2) and batch["rejected_inputs"].shape == (1, p + 3)
    assert len(list(dd.iter_pair_batches(data, 4, eot))) == 1


def test_reference_math():
    x = np.array([-800.0, -1.0, 0.0, 1.0, 800.0])
    np.testing.assert_allclose(dd.log_sigmoid(x), [-800.0, np.log(1 / (1 + np.e)), np.log(0.5),
                                                   np.log(1 / (1 + np.exp(-1))), 0.0])
    with pytest.raises(UsageError, match="beta"):
        dd.check_beta(-1)
