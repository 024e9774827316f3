"""分类数据：去重、平衡、确定性划分、测试集文本不进训练与预训练、编码与补齐、坏输入、SMS 变体（经下载助手）。"""

from __future__ import annotations

import io
import zipfile
from collections import Counter

import numpy as np
import pytest

from llmcore.finetune import classify_data as cd
from llmcore.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def splits():
    return cd.review_splits(123)


def test_review_splits_balanced_deterministic_disjoint(splits):
    n = [len(p) for p in splits]
    total = sum(n)
    assert abs(n[0] / total - 0.7) < 0.002 and abs(n[1] / total - 0.1) < 0.002 and abs(n[2] / total - 0.2) < 0.002
    for part in splits:
        c = Counter(y for _, y in part)
        assert set(c) == {0, 1} and abs(c[0] - c[1]) <= 1  # 每个划分里两类一样多
    texts = [set(t for t, _ in p) for p in splits]
    assert not texts[0] & texts[2], "测试划分的文本出现在训练划分里"
    assert not texts[0] & texts[1] and not texts[1] & texts[2]
    assert sum(len(s) for s in texts) == total  # 没有重复
    again = cd.review_splits(123)
    assert again == splits
    assert cd.review_splits(7).test != splits.test


def test_no_test_text_in_pretraining_corpus(splits):
    from llmcore.datasets.base_zh import load_base_zh_corpus

    train_text, val_text = load_base_zh_corpus()
    lines = set(train_text.split("\n"))
    assert sum(t in lines for t, _ in splits.train) == len(splits.train)  # 训练划分全部在里面
    leaked = [t for t, _ in splits.test if t in lines]
    assert not leaked, f"测试划分的评论出现在预训练语料中：{leaked[:3]}"
    assert not [t for t, _ in splits.test if t in set(val_text.split("\n"))]


def test_dedupe_and_conflicts():
    ex = [("好", 1), ("差", 0), ("好", 1), ("一般", 1), ("一般", 0), ("棒", 1)]
    out, stats = cd.dedupe(ex)
    assert out == [("好", 1), ("差", 0), ("棒", 1)]
    assert stats == {"duplicates": 3, "conflicting_texts": 1}
    bal = cd.balance(out, 0)
    assert Counter(y for _, y in bal) == {0: 1, 1: 1}


def test_encode_pads_right_and_truncates():
    tok = CharTokenizer.train("今天天气很好不错差")
    ex = [("今天很好", 1), ("差", 0), ("今天天气很好不错", 1)]
    enc = cd.encode_examples(ex, tok, max_length=6)
    assert enc.ids.shape == (3, 6) and enc.lengths.tolist() == [4, 1, 6] and enc.truncated == 1
    pad = cd.pad_id_of(tok)
    assert pad == tok.eot_id
    assert (enc.ids[1, 1:] == pad).all() and enc.ids[1, 0] == tok.encode("差")[0]
    assert enc.ids[2].tolist() == tok.encode("今天天气很好")
    batches = list(cd.iter_batches(enc, 2))
    assert batches[0][0].shape == (2, 4) and batches[1][0].shape == (1, 6)


def test_bad_inputs_skip_or_error(capsys):
    tok = CharTokenizer.train("好差很")
    ex = [("好", 1), ("   ", 0), ("很好很好很好", 1), ("差", 0)]
    enc = cd.encode_examples(ex, tok, max_length=3, truncate=False, name="样例")
    assert enc.kept.tolist() == [0, 3] and enc.skipped == {"empty": 1, "too_long": 1}
    assert "跳过空文本 1 条、超长文本 1 条" in capsys.readouterr().err
    with pytest.raises(cd.DataFormatError, match="第 2 条文本为空"):
        cd.encode_examples(ex, tok, max_length=3, on_bad="error", name="样例")
    with pytest.raises(cd.DataFormatError, match="第 1 条文本有 6 个词元，超过上限"):
        cd.encode_examples(ex[2:], tok, max_length=3, truncate=False, on_bad="error", name="样例")
    with pytest.raises(cd.DataFormatError, match="标签 'maybe' 不在已知类别"):
        cd.check_labels(["spam", "maybe"], cd.SMS_CLASSES)
    with pytest.raises(cd.DataFormatError, match="标签 2 不在已知类别"):
        cd.check_labels([0, 2], cd.REVIEW_CLASSES)


def test_files_with_missing_fields(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "好", "label": 1}\n{"text": "差"}\n', encoding="utf-8")
    with pytest.raises(cd.DataFormatError, match="第 2 行缺少字段 'label'"):
        cd.read_labelled_file(j, cd.REVIEW_CLASSES)
    c = tmp_path / "d.csv"
    c.write_text("text,标签\n好,1\n", encoding="utf-8")
    with pytest.raises(cd.DataFormatError, match="缺少字段 'label'"):
        cd.read_labelled_file(c, cd.REVIEW_CLASSES)
    t = tmp_path / "d.tsv"
    t.write_text("ham\tok then\nspam no tab here\n", encoding="utf-8")
    with pytest.raises(cd.DataFormatError, match="第 2 行缺少字段 'text'"):
        cd.read_labelled_file(t, cd.SMS_CLASSES)
    j.write_text('{"text": "好", "label": "正面"}\n{"text": "差", "label": 0}\n', encoding="utf-8")
    assert cd.read_labelled_file(j, cd.REVIEW_CLASSES) == [("好", 1), ("差", 0)]


SMS = "ham\tGo until jurong point\nspam\tWINNER!! claim your prize now\nham\tOk lar...\n" \
      "spam\tFree entry in 2 a wkly comp\nham\tOk lar...\nham\tSee you at 5\nspam\tURGENT call now\n"


def test_sms_spam_via_download_helper(tmp_path, monkeypatch):
    """测试自己写出 TSV（打成与官方相同结构的 zip），经镜像 (file://) 由下载助手取回、缓存。"""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(cd.SMS_MEMBER, SMS)
    (mirror / cd.SMS_ARCHIVE).write_bytes(buf.getvalue())
    monkeypatch.setenv("LLMZH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMZH_MIRROR", mirror.as_uri())
    monkeypatch.delenv("LLMZH_OFFLINE", raising=False)
    ex = cd.load_sms_spam()
    assert (tmp_path / "cache" / cd.SMS_ARCHIVE).is_file()
    assert len(ex) == 7 and ex[1] == ("WINNER!! claim your prize now", 1)
    splits, stats = cd.prepare_splits(ex, seed=1)
    assert stats["duplicates"] == 1
    assert Counter(y for p in splits for _, y in p) == {0: 3, 1: 3}
    tsv = tmp_path / "SMSSpamCollection"
    tsv.write_text(SMS, encoding="utf-8")
    assert cd.load_sms_spam(tsv) == ex


def test_wilson_interval():
    lo, hi = cd.wilson_interval(80, 100)
    assert lo < 0.8 < hi and hi - lo == pytest.approx(0.154, abs=0.005)
    assert cd.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(cd.wilson_interval(10, 10)).all()


def test_finetune_layer_imports_no_engine():
    """llmcore.finetune 不导入任何引擎；gpt_torch 的分类与 LoRA 不导入 tinytensor/numba/gpt_numpy。"""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys\n"
        "import llmcore.finetune.classify_data, llmcore.finetune.cls_trainer, llmcore.finetune.lora_io\n"
        "import llmcore.finetune.baselines, llmcore.finetune.results, llmcore.finetune.cls_cli\n"
        "import llmcore.datasets.base_zh\n"
        "print(sorted({'torch', 'numba', 'tinytensor'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
    code = (
        "import sys\nimport gpt_torch.classifier, gpt_torch.lora\n"
        "print(sorted({'numba', 'tinytensor', 'gpt_numpy'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
