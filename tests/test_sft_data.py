"""SFT 数据通路：collate 逐词元检查（补齐、移位、-100、提示掩码、截断），编码与坏输入，回答提取与各任务评分。"""

from __future__ import annotations

import numpy as np
import pytest

from llmcore.errors import DataError, TokenizerError, UsageError
from llmcore.finetune import instruct_data as idata
from llmcore.finetune import instruct_eval as ev
from llmcore.finetune import sft_data as sd
from llmcore.tokenizers import CharTokenizer

PAD = 50256
X = sd.IGNORE_INDEX


def test_collate_token_by_token_like_the_book():
    """原书第 7 章的例子：三条输入 [0..4]、[5, 6]、[7, 8, 9]。"""
    inputs, targets = sd.collate([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], PAD)
    assert inputs.dtype == np.int64 and targets.dtype == np.int64
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[1, 2, 3, 4, PAD], [6, PAD, X, X, X], [8, 9, PAD, X, X]]


def test_collate_prompt_mask_and_truncation():
    batch = [[10, 11, 12, 20, 21], [13, 14, 22]]  # 提示长 3 与 2
    inputs, targets = sd.collate(batch, PAD, prompt_lengths=[3, 2])
    # 第 j 位的目标是第 j+1 个词元；提示内部的目标（j < P-1）被掩掉，回答的第一个词元（j = P-1）保留
    assert targets.tolist() == [[X, X, 20, 21, PAD], [X, 22, PAD, X, X]]
    assert inputs.tolist() == [[10, 11, 12, 20, 21], [13, 14, 22, PAD, PAD]]
    inputs, targets = sd.collate(batch, PAD, allowed_max_length=3)
    assert inputs.tolist() == [[10, 11, 12], [13, 14, 22]]
    assert targets.tolist() == [[11, 12, 20], [14, 22, PAD]]
    # 按位置而不是按值掩码：序列里真的出现结束词元也保留为目标
    _, t = sd.collate([[1, PAD, 2], [3]], PAD)
    assert t.tolist() == [[PAD, 2, PAD], [PAD, X, X]]
    # 提示长 0 或 1：没有可掩的目标
    _, t = sd.collate([[1, 2]], PAD, prompt_lengths=[1])
    assert t.tolist() == [[2, PAD]]
    with pytest.raises(UsageError, match="提示长度 5"):
        sd.collate([[1, 2]], PAD, prompt_lengths=[5])
    with pytest.raises(UsageError, match="空的批次"):
        sd.collate([], PAD)


def test_loss_positions_match_manual_shift():
    """掩码后参与损失的 (位置, 目标) 正好是回答的每个词元加结束词元。"""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 100, n).tolist() for n in (7, 3, 11, 5)]
    plens = [4, 1, 6, 5]
    inputs, targets = sd.collate(seqs, PAD, prompt_lengths=plens)
    for r, (s, p) in enumerate(zip(seqs, plens)):
        want = {j: (s + [PAD])[j + 1] for j in range(max(p - 1, 0), len(s))}
        got = {j: int(targets[r, j]) for j in range(targets.shape[1]) if targets[r, j] != X}
        assert got == want
        assert inputs[r, : len(s)].tolist() == s


@pytest.fixture(scope="module")
def tok():
    text = idata.format_prompt({"instruction": "给下面的句子分词。", "input": "我爱北京"}) + "我 爱 北京正负面"
    return CharTokenizer.train(text)


def test_encode_entries(tok, capsys):
    entries = [
        {"instruction": "给下面的句子分词。", "input": "我爱北京", "output": "我 爱 北京"},
        {"instruction": "给下面的句子分词。", "input": "", "output": "  "},
        {"instruction": "给下面的句子分词。", "input": "北京" * 30, "output": "北京"},
    ]
    data = sd.encode_entries(entries, tok, max_length=80)
    assert len(data) == 1 and data.kept == [0] and data.skipped == {"empty": 1, "too_long": 1}
    assert "跳过回答为空的 1 条、超长的 1 条" in capsys.readouterr().err
    prompt = tok.encode(idata.format_prompt(entries[0]))
    assert data.seqs[0] == prompt + tok.encode("我 爱 北京") and data.prompt_lengths[0] == len(prompt)
    with pytest.raises(DataError, match="第 3 条有 .* 个词元"):
        sd.encode_entries([entries[0], entries[0], entries[2]], tok, max_length=80, on_bad="error")
    with pytest.raises(DataError, match="第 2 条的回答为空"):
        sd.encode_entries(entries[:2], tok, on_bad="error")
    batches = list(sd.iter_batches(data, 4, sd.eot_id_of(tok), mask_prompt=True))
    assert len(batches) == 1
    inputs, targets = batches[0]
    answer_and_eot = [t for t in targets[0].tolist() if t != X]
    assert tok.decode(answer_and_eot) == "我 爱 北京<|endoftext|>"
    no_eot = CharTokenizer(["<|unk|>", "a"], special_tokens=("<|unk|>",))
    with pytest.raises(TokenizerError, match="结束词元"):
        sd.eot_id_of(no_eot)


def test_iter_batches_shuffle_deterministic(tok):
    entries = [{"instruction": "分词", "input": "我" * k, "output": "爱" * (k + 1)} for k in range(1, 8)]
    data = sd.encode_entries(entries, tok)
    a = [x.tolist() for b in sd.iter_batches(data, 3, 0, shuffle=True, rng=np.random.default_rng(1)) for x in b]
    b = [x.tolist() for b in sd.iter_batches(data, 3, 0, shuffle=True, rng=np.random.default_rng(1)) for x in b]
    assert a == b
    assert sum(1 for _ in sd.iter_batches(data, 3, 0, drop_last=True)) == 2


# ---------------------------------------------------------------------------- 回答提取与评分
def test_extract_response():
    e = {"instruction": "判断情感。", "input": "很好", "output": "正面"}
    prompt = idata.format_prompt(e)
    assert ev.extract_response(prompt + "正面<|endoftext|>胡言乱语") == "正面"
    assert ev.extract_response(prompt + " 正面\n\n### 指令：\n又一题") == "正面"
    assert ev.extract_response(prompt + "第一行\n第二行", first_line=True) == "第一行"
    assert ev.extract_response("只有生成部分 ") == "只有生成部分"
    en = idata.format_prompt({"instruction": "Say hi.", "input": ""}, "en")
    assert ev.extract_response(en + "Hi!<|endoftext|>", "en") == "Hi!"


@pytest.mark.parametrize(
    "task,pred,ref,em,f1",
    [
        ("sentiment", "正面。", "正面", 1.0, 1.0),
        ("sentiment", "负面", "正面", 0.0, 0.0),
        ("segment", "我 爱 北京", "我 爱 北京", 1.0, 1.0),
        ("segment", "我爱 北京", "我 爱 北京", 0.0, 0.4),  # 预测 2 个词、标准 3 个词，对上 1 个：P=1/2，R=1/3
        ("entity", "李鹏、乔石", "乔石、李鹏", 1.0, 1.0),
        ("entity", "李鹏", "李鹏、乔石", 0.0, 2 / 3),
        ("entity", "无", "无", 1.0, 1.0),
        ("entity", "李鹏", "无", 0.0, 0.0),
        ("pinyin", "Tan Huan", "tan huan", 1.0, 1.0),
        ("pinyin", "tan hua", "tan huan", 0.0, 0.5),
        ("t2s", "飞机", "飞机", 1.0, 1.0),
        ("t2s", "飞機", "飞机", 0.0, 0.5),
        ("", "The  answer", "the answer", 1.0, 1.0),
    ],
)
def test_scores(task, pred, ref, em, f1):
    got = ev.score(task, pred, ref)
    assert got[0] == em and got[1] == pytest.approx(f1)


def test_evaluate_and_table():
    entries = [{"task": "sentiment", "output": "正面"}, {"task": "sentiment", "output": "负面"},
               {"task": "pinyin", "output": "a b"}]
    r = ev.evaluate(entries, ["正面", "正面", "a c"])
    assert r["sentiment"] == {"n": 2, "exact": 0.5, "f1": 0.5}
    assert r["pinyin"]["exact"] == 0.0 and r["pinyin"]["f1"] == 0.5
    assert r["all"]["n"] == 3 and r["all"]["exact"] == pytest.approx(1 / 3)
    assert ev.is_correct(entries[0], "正面") and not ev.is_correct(entries[1], "正面")
    table = ev.results_table({"基座": r, "SFT": ev.evaluate(entries, ["正面", "负面", "a b"])})
    assert "| sentiment | 2 | 50.0 | 100.0 |" in table and "| 全部 | 3 | 33.3 | 100.0 |" in table
    with pytest.raises(UsageError, match="数量不一致"):
        ev.evaluate(entries, ["正面"])
