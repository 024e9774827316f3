"""finetune-sft / finetune-dpo / eval-instruct 与 generate --instruction：两条轨道端到端（随机权重的小模型、
几条数据、几步），检查点两边互读且打分相同，LoRA 写出适配器，DPO 的 metrics 有奖励差与偏好准确率，
坏输入给出正确的退出码。"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json

import numpy as np
import pytest
from gpt_testutil import tiny_cfg

from llmcore.finetune import instruct_data as idata
from llmcore.finetune.instruct_bench import build_benchmark
from llmcore.tokenizers import CharTokenizer

BOOK = [{"instruction": f"Rewrite sentence {i} in passive voice.", "input": f"The cat ate fish {i}." if i % 3 else "",
         "output": f"Fish {i} was eaten."} for i in range(40)]
QUICK = ["--tasks=sentiment", "--limit_train=12", "--limit_val=4", "--limit_test=4", "--batch_size=4",
         "--eval_interval=2", "--max_new_tokens=4", "--progress=false"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """随机权重的小基座：字符级分词器建在情感题与英文数据的模板文本上；上下文 256 放得下情感题与英文模板。"""
    from gpt_numpy.model import GPTModel

    d = tmp_path_factory.mktemp("base")
    b = build_benchmark(tasks=("sentiment",))
    text = "".join(idata.format_example(e) for e in b.train[:200] + b.val[:20] + b.test[:20])
    text += "".join(idata.format_example(e, "en") for e in BOOK)
    tok = CharTokenizer.train(text, max_size=900)
    tok.save(d / "tokenizer.json")
    GPTModel(tiny_cfg(vocab_size=tok.vocab_size, context_length=256)).save(d)
    return d


def run_cli(track: str, args: list[str]) -> int:
    if track == "numpy":
        from gpt_numpy.__main__ import main

        return main(args)
    pytest.importorskip("torch")
    from gpt_testutil import torch_threads

    from gpt_torch.__main__ import main

    with torch_threads(1):
        return main(args)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def numpy_sft(base_dir, tmp_path_factory):
    """NumPy 轨道的一次 SFT（几个测试共用）。"""
    out = tmp_path_factory.mktemp("sft") / "run"
    assert run_cli("numpy", ["finetune-sft", f"--ckpt={base_dir}", f"--out_dir={out}", "--max_steps=3", *QUICK]) == 0
    return out


def check_sft_outputs(out, track: str) -> dict:
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert res["stage"] == "sft" and res["track"] == f"gpt_{track}" and res["steps"] == 3 and res["train_n"] == 12
    assert set(res["scores"]) == {"sentiment", "all"} and res["scores"]["all"]["n"] == 4
    assert res["val_loss"] is not None and np.isfinite(res["val_loss"])
    manifest = json.loads((out / "ckpt" / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["files"]) == {"model.safetensors", "config.json", "tokenizer.json"}
    meta = json.loads((out / "ckpt" / "config.json").read_text(encoding="utf-8"))
    assert (meta["task"], meta["stage"], meta["lang"], meta["mode"]) == ("instruct", "sft", "zh", "full")
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics if m["type"] == "train"] == [1, 2, 3]
    assert [m["step"] for m in metrics if m["type"] == "eval"] == [2, 3]
    assert len(read_jsonl(out / "answers.jsonl")) == 4
    assert not list(out.glob(".ckpt.*"))  # 原子写入的临时目录不留下
    return res


def check_dpo_outputs(out, pairs: str) -> dict:
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert res["stage"] == "dpo" and res["pairs"] == pairs and res["steps"] == 2
    assert {"final_loss", "final_margin", "final_accuracy"} <= set(res) and res["scores"]["all"]["n"] == 4
    metrics = read_jsonl(out / "metrics.jsonl")
    train = [m for m in metrics if m["type"] == "train"]
    assert len(train) == 2 and all({"loss", "margin", "accuracy", "chosen_reward", "rejected_reward"} <= set(m)
                                   for m in train)
    assert train[0]["loss"] == pytest.approx(np.log(2), rel=1e-4)  # 第一步策略 = 参照
    evals = [m for m in metrics if m["type"] == "eval"]
    assert evals[0]["step"] == 0 and {"val_loss", "val_margin", "val_accuracy"} <= set(evals[0])
    assert json.loads((out / "ckpt" / "config.json").read_text(encoding="utf-8"))["stage"] == "dpo"
    assert len(read_jsonl(out / "pairs.jsonl")) > 0
    return res


def test_numpy_sft_then_dpo(numpy_sft, tmp_path, capsys):
    check_sft_outputs(numpy_sft, "numpy")
    out = tmp_path / "dpo"
    capsys.readouterr()
    assert run_cli("numpy", ["finetune-dpo", f"--ckpt={numpy_sft}", f"--out_dir={out}", "--max_steps=2",
                             "--lr=1e-3", *QUICK]) == 0
    assert capsys.readouterr().out.startswith("| SFT+DPO | ")  # 标准输出是一行表格
    res = check_dpo_outputs(out, "rule")
    assert res["reference"] == str(numpy_sft / "ckpt") and res["pair_counts"]["used"] == 12


@pytest.mark.torch
def test_torch_sft_then_self_pairs_lora_dpo(base_dir, tmp_path):
    sft = tmp_path / "sft"
    assert run_cli("torch", ["finetune-sft", f"--ckpt={base_dir}", f"--out_dir={sft}", "--max_steps=3", *QUICK]) == 0
    check_sft_outputs(sft, "torch")
    dpo = tmp_path / "dpo"
    assert run_cli("torch", ["finetune-dpo", f"--ckpt={sft}", f"--out_dir={dpo}", "--max_steps=2", "--pairs=self",
                             "--mode=lora", "--lora_rank=2", "--lr=1e-2", *QUICK]) == 0
    res = check_dpo_outputs(dpo, "self")
    assert res["mode"] == "lora" and (dpo / "adapter.safetensors").is_file()  # LoRA 的 DPO：参照 = SFT 检查点
    counts = res["pair_counts"]  # 随机权重的模型几乎全答错；答对的题用规则补造
    assert counts["model_wrong"] + counts["model_correct"] + counts["skipped_empty"] == 12
    assert counts["used"] == counts["model_wrong"] + counts["rule"]


@pytest.mark.torch
def test_checkpoint_scores_identically_on_both_tracks(numpy_sft, tmp_path, capsys):
    """NumPy 轨道写的 SFT 检查点：两条轨道读出的 logits 在 float32 容差内相同，eval-instruct 的回答与分数完全相同。"""
    torch = pytest.importorskip("torch")
    import tinytensor as tt
    from gpt_numpy.model import GPTModel as NumpyGPT
    from gpt_torch.model import GPTModel as TorchGPT

    ckpt = numpy_sft / "ckpt"
    nm = NumpyGPT.load(ckpt)
    x = np.random.default_rng(0).integers(0, nm.cfg.vocab_size, (2, 40))
    with tt.no_grad():
        ln = nm(x).data
    with torch.no_grad():
        lt = TorchGPT.load(ckpt)(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(ln, lt, rtol=1e-4, atol=1e-5)
    rows, scores, answers = [], [], []
    for track in ("numpy", "torch"):
        capsys.readouterr()
        args = ["eval-instruct", f"--ckpt={numpy_sft}", "--tasks=sentiment", "--limit=6", "--max_new_tokens=5",
                "--name=SFT", "--progress=false", f"--out={tmp_path / track}.json",
                f"--answers={tmp_path / track}.jsonl"]
        assert run_cli(track, args) == 0
        rows.append(capsys.readouterr().out.strip())
        scores.append(json.loads((tmp_path / f"{track}.json").read_text(encoding="utf-8"))["scores"])
        answers.append([r["answer"] for r in read_jsonl(tmp_path / f"{track}.jsonl")])
    assert rows[0] == rows[1] and rows[0].startswith("| SFT | ") and rows[0].count("|") == 4
    assert scores[0] == scores[1] and scores[0]["all"]["n"] == 6
    assert answers[0] == answers[1] and len(answers[0]) == 6
    capsys.readouterr()  # 训练结束时的打分与事后用 eval-instruct 评测的回答相同
    assert run_cli("numpy", ["eval-instruct", f"--ckpt={numpy_sft / 'ckpt'}", "--tasks=sentiment", "--limit=4",
                             "--max_new_tokens=4", "--progress=false", "--header=true",
                             f"--answers={tmp_path / 'again.jsonl'}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| 模型 | sentiment EM / F1 | 全部 EM / F1 |") and len(lines) == 3
    assert read_jsonl(tmp_path / "again.jsonl") == read_jsonl(numpy_sft / "answers.jsonl")


def test_lora_writes_adapter(base_dir, tmp_path):
    from gpt_numpy.model import GPTModel
    from llmcore.finetune.lora_io import read_adapter

    out = tmp_path / "lora"
    assert run_cli("numpy", ["finetune-sft", f"--ckpt={base_dir}", f"--out_dir={out}", "--mode=lora", "--lora_rank=2",
                             "--lora_alpha=4", "--max_steps=2", "--lr=1e-2", "--eval_split=none", *QUICK]) == 0
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    c = tiny_cfg()
    per_block = 2 * (4 * (c.emb_dim + c.emb_dim) + (c.emb_dim + 4 * c.emb_dim) * 2)
    assert res["trainable_params"] == c.n_layers * per_block and res["scores"] is None
    arrays, meta = read_adapter(out / "adapter.safetensors")
    assert meta["rank"] == 2 and meta["alpha"] == 4.0 and meta["extra"]["stage"] == "sft"
    assert all(".lora." in k for k in arrays)
    assert any(np.abs(v).sum() > 0 for k, v in arrays.items() if k.endswith(".B"))
    model = GPTModel.load(out / "ckpt")  # 合并后的完整检查点：参数名与普通 GPT 相同
    base = GPTModel.load(base_dir)
    w, w0 = model.trf_blocks[0].att.W_query.weight.data, base.trf_blocks[0].att.W_query.weight.data
    assert not np.allclose(w, w0)  # LoRA 的增量已经并进去
    a, b = arrays["trf_blocks.0.att.W_query.lora.A"], arrays["trf_blocks.0.att.W_query.lora.B"]
    np.testing.assert_allclose(w, w0 + 2.0 * (a @ b).T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("track", ["numpy", pytest.param("torch", marks=pytest.mark.torch)])
def test_generate_instruction(numpy_sft, track, capsys):
    args = ["generate", f"--ckpt={numpy_sft}", "--instruction=判断下面这条评论的情感倾向。", "--input=很好",
            "--max-new-tokens=6"]
    capsys.readouterr()
    assert run_cli(track, args) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "###" not in out and "判断" not in out  # 只有回答，不含提示
    if track == "numpy":  # 指令模式默认贪心：两次结果相同，也与 eval 的生成一致
        assert run_cli(track, args) == 0
        assert capsys.readouterr().out == out
    assert run_cli(track, [*args, "--prompt=新华社"]) == 2
    assert "只能给一个" in capsys.readouterr().err
    assert run_cli(track, ["generate", f"--ckpt={numpy_sft}", "--input=很好"]) == 2
    assert "--instruction" in capsys.readouterr().err


@contextlib.contextmanager
def book_mirror(tmp_path, monkeypatch, entries):
    """原书的 instruction-data.json 换成测试写的同格式文件，经 file:// 镜像与下载助手获取。"""
    from llmcore.datasets import registry

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = json.dumps(entries, indent=1).encode("utf-8")
    (mirror / "instruction-data.json").write_bytes(data)
    monkeypatch.setenv("LLMZH_MIRROR", mirror.as_uri())
    monkeypatch.setenv("LLMZH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLMZH_OFFLINE", raising=False)
    real = registry.KNOWN_FILES["instruction-data.json"]
    fake = dataclasses.replace(real, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(registry.KNOWN_FILES, "instruction-data.json", fake)
    yield


def test_book_data_and_dpo_self_pairs(base_dir, tmp_path, monkeypatch, capsys):
    with book_mirror(tmp_path, monkeypatch, BOOK):
        out = tmp_path / "book"
        args = ["finetune-sft", "--data=book", f"--ckpt={base_dir}", f"--out_dir={out}", "--max_steps=2",
                "--batch_size=4", "--eval_split=val", "--max_new_tokens=3", "--progress=false"]
        assert run_cli("numpy", args) == 0
        res = json.loads((out / "result.json").read_text(encoding="utf-8"))
        assert res["lang"] == "en" and res["train_n"] == 34 and res["val_n"] == 2  # 原书：85% / 10% 测试 / 5% 验证
        assert set(res["scores"]) == {"other", "all"} and res["scores"]["all"]["n"] == 2
        assert json.loads((out / "ckpt" / "config.json").read_text(encoding="utf-8"))["lang"] == "en"
        capsys.readouterr()
        dpo = ["finetune-dpo", "--data=book", f"--ckpt={out}", f"--out_dir={tmp_path / 'dpo'}", "--max_steps=1",
               "--batch_size=4", "--limit_train=4", "--eval_split=none", "--max_new_tokens=3", "--progress=false"]
        assert run_cli("numpy", dpo) == 4  # 规则造错答不认识原书的数据：数据错误，说明该怎么办
        assert "--pairs=self" in capsys.readouterr().err
        assert run_cli("numpy", [*dpo, "--pairs=self"]) == 0
        res = json.loads((tmp_path / "dpo" / "result.json").read_text(encoding="utf-8"))
        assert res["pair_counts"]["model_wrong"] == 4 and res["lang"] == "en"


def test_data_directory_and_pairs_file(base_dir, tmp_path):
    b = build_benchmark(tasks=("sentiment",))
    d = tmp_path / "data"
    for split, part in zip(("train", "val", "test"), (b.train[:8], b.val[:2], b.test[:2])):
        idata.write_instruction_file(d / f"{split}.jsonl", part)
    out = tmp_path / "sft"
    assert run_cli("numpy", ["finetune-sft", f"--data={d}", f"--ckpt={base_dir}", f"--out_dir={out}",
                             "--max_steps=1", "--batch_size=4", "--max_new_tokens=3", "--progress=false"]) == 0
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert (res["train_n"], res["val_n"], res["scores"]["all"]["n"]) == (8, 2, 2)
    pairs = [{**e, "chosen": e["output"], "rejected": "不知道"} for e in b.train[:6]]
    pairs.append({**b.train[6], "chosen": "正面", "rejected": "正面"})  # 两边相同：跳过
    idata.write_instruction_file(tmp_path / "pairs.jsonl", pairs)
    dpo = tmp_path / "dpo"
    assert run_cli("numpy", ["finetune-dpo", f"--data={d}", f"--ckpt={out}", f"--out_dir={dpo}", "--max_steps=1",
                             f"--pairs={tmp_path / 'pairs.jsonl'}", "--batch_size=4", "--eval_split=none",
                             "--progress=false"]) == 0
    assert json.loads((dpo / "result.json").read_text(encoding="utf-8"))["pair_counts"]["used"] == 6


def test_bad_inputs_exit_codes(base_dir, numpy_sft, tmp_path, capsys):
    def code(track: str, args: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        rc = run_cli(track, args)
        return rc, capsys.readouterr().err

    sft = ["finetune-sft", f"--ckpt={base_dir}", f"--out_dir={tmp_path / 'x'}", "--max_steps=1", *QUICK]
    rc, err = code("numpy", [*sft, "--mode=half"])
    assert rc == 2 and "--mode" in err
    rc, err = code("numpy", [*sft, "--bogus=1"])
    assert rc == 2 and "--bogus" in err
    rc, err = code("numpy", [*sft, "--lr=abc"])
    assert rc == 2 and "lr" in err
    rc, err = code("numpy", [*sft, "--tasks=poetry"])
    assert rc == 2 and "poetry" in err
    rc, err = code("numpy", [*sft, "--device=cuda"])
    assert rc == 2 and "--device" in err
    rc, err = code("numpy", ["finetune-dpo", f"--ckpt={numpy_sft}", "--beta=0", *QUICK])
    assert rc == 2 and "--beta" in err
    rc, err = code("numpy", ["finetune-dpo", f"--ckpt={numpy_sft}", "--pairs=best", *QUICK])
    assert rc == 2 and "--pairs" in err
    rc, err = code("numpy", [*sft, f"--ckpt={tmp_path / 'nothing'}"])
    assert rc == 6 and "找不到基座检查点" in err
    rc, err = code("numpy", [*sft, f"--data={tmp_path / 'none.json'}"])
    assert rc == 4 and "找不到指令数据" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": ""}]),
                   encoding="utf-8")
    rc, err = code("numpy", [*sft, f"--data={bad}", "--tasks="])
    assert rc == 4 and "第 2 条缺少字段 'output'" in err
    other = tmp_path / "tok.json"
    CharTokenizer.train("只有几个字").save(other)
    rc, err = code("numpy", [*sft, f"--tokenizer={other}"])
    assert rc == 5 and "词表大小" in err
    cls_ckpt = tmp_path / "cls"  # 分类检查点不是语言模型
    meta = json.loads((numpy_sft / "ckpt" / "config.json").read_text(encoding="utf-8"))
    from gpt_numpy.model import GPTModel
    from llmcore.checkpoint import save_model_state

    m = GPTModel.load(numpy_sft / "ckpt")
    save_model_state(cls_ckpt, m.state_arrays(), m.cfg, {**meta, "task": "classification"})
    rc, err = code("numpy", ["eval-instruct", f"--ckpt={cls_ckpt}", "--tasks=sentiment", "--limit=1"])
    assert rc == 6 and "分类模型" in err
    (numpy_sft / "ckpt" / "tokenizer.json").write_text("{}", encoding="utf-8")  # 改坏之后：校验和不符
    try:
        rc, err = code("numpy", ["eval-instruct", f"--ckpt={numpy_sft}", "--tasks=sentiment", "--limit=1"])
        assert rc == 6 and ("sha256" in err or "字节" in err)
    finally:
        (numpy_sft / "ckpt" / "tokenizer.json").write_bytes((base_dir / "tokenizer.json").read_bytes())


@pytest.mark.parametrize("command", ["finetune-sft", "finetune-dpo", "eval-instruct"])
def test_help_is_chinese(command, capsys):
    assert run_cli("numpy", [command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"用法：python -m gpt_numpy {command}") and "退出码" in out and "--device" not in out
    assert "--ckpt=" in out and "示例" in out
    assert run_cli("numpy", ["--help"]) == 0
    assert command in capsys.readouterr().out
