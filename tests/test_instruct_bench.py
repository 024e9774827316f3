"""第 7 章的中文指令基准：条数、确定性、划分互不相交（测试句不进训练与预训练）、答案可核对；
语料解析（复合词、人名）；原书英文指令数据经下载助手读取（用测试自己写的同格式文件）。"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import pytest

from llmcore.errors import DataError, UsageError
from llmcore.finetune import instruct_bench as ib
from llmcore.finetune import instruct_data as idata


@pytest.fixture(scope="module")
def bench():
    return ib.build_benchmark()


def test_sizes_and_tasks(bench):
    counts = ib.benchmark_counts(bench)
    assert set(counts) == set(ib.TASKS)
    for task, c in counts.items():
        assert c == ib.DEFAULT_SIZES, task
    for part in bench:
        for e in part:
            assert set(e) == {"instruction", "input", "output", "task", "source"}
            assert e["instruction"] and e["input"] and e["output"]
        # 划分内任务是交错的（便于快速模式只取前 N 条）
        assert len({e["task"] for e in part[:50]}) == len(ib.TASKS)


def test_no_source_in_two_splits(bench):
    where: dict[str, set[str]] = {}
    for split, part in zip(ib.SPLITS, bench):
        for e in part:
            where.setdefault(e["source"], set()).add(split)
    assert all(len(s) == 1 for s in where.values())
    inputs = {split: {e["input"] for e in part} for split, part in zip(ib.SPLITS, bench)}
    assert not inputs["test"] & inputs["train"] and not inputs["val"] & inputs["train"]
    bad = dict(bench[0][0])
    bad["task"] = "segment"
    with pytest.raises(DataError, match="同时出现在"):
        ib.check_disjoint(ib.Benchmark([bad], [], [bad]))


def test_test_sentences_not_in_pretraining_train(bench):
    """《人民日报》的 val/test 句子来自预训练的验证段落：整句不出现在预训练的训练段落里。"""
    from llmcore.datasets.corpus import load_peoples_daily, split_paragraphs

    train_paras, _ = split_paragraphs(load_peoples_daily())
    train_sents = {s.text for s in ib.load_sentences() if ib.paragraph_split(s.paragraph) == "train"}
    assert len(train_paras) > 15_000
    for part in (bench.val, bench.test):
        for e in part:
            if e["task"] in ("segment", "entity", "t2s"):
                assert e["source"] not in train_sents
    # 评论：测试题全部来自第 6 章的测试划分（base-zh 预训练没见过）
    from llmcore.finetune.classify_data import review_splits

    test_reviews = {t for t, _ in review_splits(123).test}
    senti = [e for e in bench.test if e["task"] == "sentiment"]
    assert all(e["input"] in test_reviews for e in senti)
    assert Counter(e["output"] for e in senti) == {"正面": 150, "负面": 150}


def test_answers_are_checkable(bench):
    table = ib.pinyin_table()
    for e in [*bench.train[:3000], *bench.test]:
        task, x, y = e["task"], e["input"], e["output"]
        if task == "segment":
            assert y.replace(" ", "") == x and "  " not in y
        elif task == "entity":
            assert y == ib.NONE_ANSWER or all(name in x for name in y.split(ib.ENTITY_SEP))
        elif task == "pinyin":
            assert table[x] == y and len(y.split()) == len(x)
        elif task == "t2s":
            assert ib.convert_t2s(x) == y and sum(a != b for a, b in zip(x, y)) >= 2
        else:
            assert y in ("正面", "负面")
    ent = [e for e in bench.test if e["task"] == "entity"]
    kinds = Counter(next(k for k in ib.ENTITY_TYPES.values() if k in e["instruction"]) for e in ent)
    assert set(kinds) == {"人名", "地名", "机构名"}
    assert 0 < sum(e["output"] == ib.NONE_ANSWER for e in ent) < len(ent) / 3


def test_deterministic_and_seeded():
    a = ib.build_benchmark(sizes={"train": 40, "val": 10, "test": 10}, tasks=("pinyin", "t2s"))
    ib._build.cache_clear()
    b = ib.build_benchmark(sizes={"train": 40, "val": 10, "test": 10}, tasks=("pinyin", "t2s"))
    assert a == b and a is not b
    c = ib.build_benchmark(seed=7, sizes={"train": 40, "val": 10, "test": 10}, tasks=("pinyin", "t2s"))
    assert c.train != a.train
    with pytest.raises(DataError, match="未知的基准任务"):
        ib.build_benchmark(tasks=("poetry",))


def test_parse_compounds_and_names():
    line = ("19980101-01-001-002/m  [中央/n  电视台/n]nt  记者/n  江/nr  泽民/nr  在/p  [北京/ns  大学/n]nt  。/w"
            "  克林顿/nr  说/v")
    tagged = ib.parse_tagged_line(line)
    assert tagged.words[:3] == ("中央", "电视台", "记者") and tagged.tags[0] == "n"
    assert tagged.compounds == (ib.Compound(0, 2, "nt"), ib.Compound(6, 8, "nt"))
    first, second = ib.split_sentences(tagged)
    assert "".join(first.words) == "中央电视台记者江泽民在北京大学。" and second.words == ("克林顿", "说")
    ents = ib.extract_entities(first)
    assert ents == {"nr": ["江泽民"], "ns": [], "nt": ["中央电视台", "北京大学"]}  # 复合词里的 北京/ns 不单算
    assert ib.segment_answer(first) == "中央 电视台 记者 江 泽民 在 北京 大学 。"
    assert ib.extract_entities(ib.split_sentences(tagged)[1])["nr"] == ["克林顿"]
    # 人名：姓名两两配对；配不上的一串 nr 无法确定边界
    two = ib.parse_tagged_line("李/nr  鹏/nr  乔/nr  石/nr  出席/v")
    assert ib.extract_entities(two)["nr"] == ["李鹏", "乔石"]
    assert ib.extract_entities(ib.parse_tagged_line("李/nr  鹏/nr  乔/nr  说/v")) is None
    assert ib.extract_entities(ib.parse_tagged_line("桥本/nr  龙太郎/nr")) is None
    assert ib.entity_answer([]) == "无" and ib.entity_answer(["甲", "乙"]) == "甲、乙"
    # 与预训练语料的清洗一致：句子拼起来就是去掉标注的段落
    from llmcore.datasets.corpus import strip_pos_tags

    assert "".join("".join(s.words) for s in ib.split_sentences(tagged)) == strip_pos_tags(line)


def test_paragraph_indices_match_corpus():
    from llmcore.datasets.corpus import load_peoples_daily

    paras = load_peoples_daily()
    sents = ib.load_sentences()
    rebuilt: dict[int, str] = {}
    for s in sents:
        rebuilt[s.paragraph] = rebuilt.get(s.paragraph, "") + s.text
    assert len(rebuilt) == len(paras)
    for i in (0, 1, 999, 5000, len(paras) - 1):
        assert rebuilt[i] == paras[i]
    assert {ib.paragraph_split(i) for i in range(len(paras))} == set(ib.SPLITS)


def test_tables():
    table = ib.pinyin_table()
    assert table["瘫痪"] == "tan huan" and table["女单"] == "nv dan"
    assert all(r == r.lower() for r in table.values())
    t2s = ib.t2s_table()
    assert t2s["們"] == "们" and len(t2s) > 2000
    assert ib.convert_t2s("飛機飛向藍天") == "飞机飞向蓝天"
    assert ib.to_traditional("乐得清贫的刘福印常常傻得可爱。") == "樂得清貧的劉福印常常傻得可愛。"
    assert ib.to_traditional("天天") is None  # 没有可改的字


# ---------------------------------------------------------------------------- 模板与文件
def test_templates():
    e = {"instruction": "把下面的繁体中文改写成简体中文。", "input": "藍天", "output": "蓝天"}
    p = idata.format_prompt(e)
    assert p == ("下面是一条描述任务的指令。请写出恰当完成该请求的回答。\n\n### 指令：\n"
                 "把下面的繁体中文改写成简体中文。\n\n### 输入：\n藍天\n\n### 回答：\n")
    assert idata.format_example(e) == p + "蓝天"
    no_input = {"instruction": "Name a color.", "input": "", "output": "Blue."}
    assert idata.format_example(no_input, "en") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nName a color.\n\n### Response:\nBlue.")
    with pytest.raises(UsageError, match="'fr'"):
        idata.format_prompt(e, "fr")


def test_validate_entries_errors(capsys):
    good = {"instruction": "a", "input": "", "output": "b"}
    with pytest.raises(DataError, match=r"第 2 条缺少字段 'output'"):
        idata.validate_entries([good, {"instruction": "a", "input": ""}])
    with pytest.raises(DataError, match=r"第 1 条的字段 'input' 应是字符串"):
        idata.validate_entries([{"instruction": "a", "input": None, "output": "b"}])
    with pytest.raises(DataError, match="列表"):
        idata.validate_entries({"instruction": "a"})
    out = idata.validate_entries([good, {**good, "output": "  "}, {**good, "instruction": ""}])
    assert out == [good] and "跳过指令或回答为空的条目 2 条" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"第 2 条的字段 'output' 为空"):
        idata.validate_entries([good, {**good, "output": ""}], on_bad="error")


def test_file_roundtrip(tmp_path):
    entries = [{"instruction": f"指令{i}", "input": "" if i % 2 else f"输入{i}", "output": f"回答{i}"}
               for i in range(5)]
    for suffix in (".json", ".jsonl"):
        p = idata.write_instruction_file(tmp_path / f"d{suffix}", entries)
        assert idata.read_instruction_file(p) == entries
    (tmp_path / "bad.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="不是合法的 JSON"):
        idata.read_instruction_file(tmp_path / "bad.json")
    with pytest.raises(DataError, match="找不到"):
        idata.read_instruction_file(tmp_path / "none.json")


def test_book_data_via_download_helper(tmp_path, monkeypatch):
    """原书的 instruction-data.json：经下载助手（镜像 + 缓存 + sha256），用测试写的同格式文件代替。"""
    from llmcore.datasets import registry
    from llmcore.datasets.remote import DownloadError

    entries = [{"instruction": f"Rewrite sentence {i}.", "input": f"Sentence {i}." if i % 3 else "",
                "output": f"Answer {i}."} for i in range(100)]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = json.dumps(entries, indent=4).encode("utf-8")
    (mirror / "instruction-data.json").write_bytes(data)
    monkeypatch.setenv("LLMZH_MIRROR", mirror.as_uri())
    monkeypatch.setenv("LLMZH_CACHE", str(tmp_path / "cache"))
    # 登记的是真文件的校验值：测试文件对不上，下载助手拒收
    with pytest.raises(DownloadError, match="字节|sha256"):
        idata.load_book_instruction_data()
    real = registry.KNOWN_FILES["instruction-data.json"]
    fake = dataclasses.replace(real, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(registry.KNOWN_FILES, "instruction-data.json", fake)
    got = idata.load_book_instruction_data()
    assert got == entries and (tmp_path / "cache" / "instruction-data.json").is_file()
    s = idata.split_book_data(got)
    assert [len(p) for p in s] == [85, 5, 10]
    assert s.train[0] == entries[0] and s.test[0] == entries[85] and s.val[-1] == entries[-1]
    with pytest.raises(UsageError, match="划分比例"):
        idata.split_book_data(got, (0.9, 0.2))
