"""第 7 章的结果表（python -m llmcore.finetune.instruct_results）端到端：随机权重的小基座、几条情感题、几步，
子进程依次跑 eval-instruct、finetune-sft、finetune-dpo（有 torch 时再加另一条轨道的 SFT），检查 OUT.json 与 OUT.md。"""

from __future__ import annotations

import importlib.util
import json

import pytest
from gpt_testutil import tiny_cfg

from llmcore.finetune import instruct_data as idata
from llmcore.finetune import instruct_results as ir
from llmcore.finetune.instruct_bench import build_benchmark
from llmcore.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """随机权重的小基座：字符级分词器建在情感题的模板文本上，上下文 256 放得下情感题。"""
    from gpt_numpy.model import GPTModel

    d = tmp_path_factory.mktemp("base")
    b = build_benchmark(tasks=("sentiment",))
    text = "".join(idata.format_example(e) for e in b.train[:200] + b.val[:20] + b.test[:20])
    tok = CharTokenizer.train(text, max_size=900)
    tok.save(d / "tokenizer.json")
    GPTModel(tiny_cfg(vocab_size=tok.vocab_size, context_length=256)).save(d)
    return d


@pytest.mark.slow
def test_instruct_results_end_to_end(base_dir, tmp_path, capsys):
    has_torch = importlib.util.find_spec("torch") is not None
    tracks = "gpt_numpy,gpt_torch" if has_torch else "gpt_numpy"
    out = tmp_path / "res" / "ch07-test"
    argv = [f"--ckpt={base_dir}", f"--out={out}", f"--work={tmp_path / 'work'}", f"--tracks={tracks}",
            "--tasks=sentiment", "--limit_train=12", "--limit_val=4", "--limit_test=4", "--eval_limit=4",
            "--eval_interval=2", "--batch_size=4", "--sft_max_steps=2", "--dpo_max_steps=2", "--sft_lr=1e-3",
            "--dpo_lr=1e-3", "--max_new_tokens=4", "--threads=1"]
    assert ir.main(argv) == 0
    res = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    keys = ["base", "sft", "dpo"] + (["sft-gpt_torch"] if has_torch else [])
    assert [r["key"] for r in res["rows"]] == keys
    assert [r["name"] for r in res["rows"]][:3] == ["基座", "SFT", "SFT+DPO"]
    for r in res["rows"]:
        assert set(r["scores"]) == {"sentiment", "all"} and r["scores"]["all"]["n"] == 4
        assert 0.0 <= r["scores"]["all"]["exact"] <= r["scores"]["all"]["f1"] <= 1.0
        assert r["wall_s"] > 0
    sft, dpo = res["rows"][1], res["rows"][2]
    assert sft["steps"] == 2 and sft["train_n"] == 12 and sft["train_time_s"] > 0 and sft["val_n"] == 4
    assert dpo["steps"] == 2 and {"final_loss", "final_margin", "final_accuracy", "pair_counts"} <= set(dpo)
    # 每次训练的曲线：逐步的训练记录与 --eval_interval 处的验证记录
    assert [m["step"] for m in sft["curve"]["train"]] == [1, 2] and sft["curve"]["eval"][-1]["step"] == 2
    assert all("loss" in m for m in sft["curve"]["train"]) and "val_loss" in sft["curve"]["eval"][0]
    assert [m["step"] for m in dpo["curve"]["train"]] == [1, 2]
    assert {"loss", "margin", "accuracy"} <= set(dpo["curve"]["train"][0])
    assert "curve" not in res["rows"][0]
    for r in res["rows"]:  # 每种任务最常见的回答与次数，次数加起来不超过题数
        (task, top), = r["top_answers"].items()
        assert task == "sentiment" and 1 <= sum(n for _, n in top) <= 4 and all(isinstance(a, str) for a, _ in top)
    assert res["settings"]["sft_max_steps"] == 2 and res["settings"]["dpo_lr"] == 1e-3
    assert res["command"].startswith("python -m llmcore.finetune.instruct_results --ckpt=")
    assert res["machine"] and res["date"] and res["tracks"] == tracks.split(",")
    assert (tmp_path / "work" / "dpo-gpt_numpy" / "ckpt" / "model.safetensors").is_file()
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| 模型 | sentiment EM / F1 | 全部 EM / F1 |" in md
    for name in ("| 基座 | ", "| SFT | ", "| SFT+DPO | ") + (("| SFT（PyTorch 轨道） | ",) if has_torch else ()):
        assert name in md
    assert md in capsys.readouterr().out
    # 再跑一次、全部沿用：不重新训练，表头说明各步都是沿用的
    assert ir.main([*argv, "--reuse"]) == 0
    again = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert again["reused"] == keys and [r["scores"] for r in again["rows"]] == [r["scores"] for r in res["rows"]]
    assert "各步都沿用" in out.with_suffix(".md").read_text(encoding="utf-8")


def test_bad_tracks_and_steps(tmp_path):
    with pytest.raises(SystemExit, match="--tracks"):
        ir.main([f"--work={tmp_path}", "--tracks=gpt_jax"])
    with pytest.raises(SystemExit, match="--sft_max_steps"):
        ir.main([f"--work={tmp_path}", "--sft_max_steps=0"])


def test_reusable_compares_recorded_settings(tmp_path):
    f = tmp_path / "result.json"
    args = ["--ckpt=runs/base-zh", "--out_dir=x", "--max_steps=400", "--lr=0.0003", "--progress=false"]
    assert not ir.reusable(f, args)  # 还没有结果
    cfg = {"ckpt": "runs/base-zh", "out_dir": "y", "max_steps": 400, "lr": 3e-4, "progress": True}
    f.write_text(json.dumps({"config": cfg}), encoding="utf-8")
    assert ir.reusable(f, args)  # 数字按数值比较；out_dir 与 progress 不算
    assert not ir.reusable(f, [*args, "--max_steps=300"])  # 设置不同：重跑
    assert not ir.reusable(f, [*args, "--beta=0.1"])  # 记下的设置里没有这一项：重跑
