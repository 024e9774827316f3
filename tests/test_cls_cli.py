"""finetune-cls / classify 命令：两条轨道跑通、检查点互读、LoRA 输出适配器、词表不一致报错。"""

from __future__ import annotations

import json

import pytest
from gpt_testutil import tiny_cfg

from llmcore.finetune import classify_data as cd
from llmcore.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """一个随机权重的小基座（字符级分词器，在评论训练划分上建），不训练：只检查流程。"""
    from gpt_numpy.model import GPTModel

    d = tmp_path_factory.mktemp("base")
    tok = CharTokenizer.train("".join(t for t, _ in cd.review_splits(123).train[:3000]), max_size=800)
    tok.save(d / "tokenizer.json")
    GPTModel(tiny_cfg(vocab_size=tok.vocab_size, context_length=32)).save(d)
    return d


def run_cli(track: str, args: list[str]) -> int:
    if track == "numpy":
        from gpt_numpy.__main__ import main
    else:
        pytest.importorskip("torch")
        from gpt_torch.__main__ import main
    return main(args)


QUICK = ["--max_steps=3", "--limit_train=48", "--limit_test=40", "--eval_interval=2", "--eval_limit=16",
         "--batch_size=8", "--progress=false"]


@pytest.mark.parametrize("track,other", [("numpy", "torch"), ("torch", "numpy")])
def test_finetune_and_classify(tmp_path, base_dir, capsys, track, other):
    out = tmp_path / "cls"
    assert run_cli(track, ["finetune-cls", f"--ckpt={base_dir}", f"--out_dir={out}", *QUICK]) == 0
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert res["steps"] == 3 and res["test_n"] == 40 and res["val_n"] > 1000
    assert 0 <= res["test_ci_low"] <= res["test_acc"] <= res["test_ci_high"] <= 1
    c = tiny_cfg()
    last_block = 12 * c.emb_dim**2 + 10 * c.emb_dim  # 最后一块（无 qkv 偏置），再加最终 LN 与分类头
    assert res["trainable_params"] == last_block + 2 * c.emb_dim + 2 * c.emb_dim + 2
    capsys.readouterr()
    assert run_cli(other, ["classify", f"--ckpt={out}", "--text=房间很干净，服务很好", "--text=太差了"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in cd.REVIEW_CLASSES


def test_lora_mode_writes_adapter(tmp_path, base_dir):
    out = tmp_path / "lora"
    assert run_cli("numpy", ["finetune-cls", f"--ckpt={base_dir}", f"--out_dir={out}", "--mode=lora",
                             "--lora_rank=2", *QUICK]) == 0
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    c = tiny_cfg()
    per_block = 2 * (4 * (c.emb_dim + c.emb_dim) + (c.emb_dim + 4 * c.emb_dim) * 2)
    assert res["trainable_params"] == c.n_layers * per_block + 2 * c.emb_dim + 2
    assert (out / "adapter.safetensors").is_file()
    from gpt_numpy.classifier import load_classifier

    model, meta = load_classifier(out / "ckpt")  # 合并后的完整检查点，参数名与普通 GPT 相同
    assert meta["mode"] == "lora" and "trf_blocks.0.att.W_query.weight" in dict(model.named_parameters())


def test_vocab_mismatch_and_bad_args(tmp_path, base_dir, capsys):
    other = tmp_path / "tok.json"
    CharTokenizer.train("只有几个字").save(other)
    code = run_cli("numpy", ["finetune-cls", f"--ckpt={base_dir}", f"--tokenizer={other}", *QUICK])
    assert code == 5 and "词表大小" in capsys.readouterr().err  # 分词器错误
    assert run_cli("numpy", ["finetune-cls", "--mode=all"]) == 2
    assert "mode 只能是" in capsys.readouterr().err
    code = run_cli("numpy", ["finetune-cls", f"--ckpt={tmp_path / 'nothing'}", *QUICK])
    assert code == 6 and "找不到基座检查点" in capsys.readouterr().err  # 检查点错误


def test_sms_from_hf_gpt2_weights(tmp_path, monkeypatch, capsys):
    """原书的变体：SMS 数据经下载助手（file:// 镜像，测试自己写的 TSV 打包），基座是 HF 格式的 GPT-2（随机权重）。"""
    import io
    import zipfile

    from gpt_testutil import hf_config, hf_state, write_hf_dir

    rows = [f"ham\tsee you at {i} pm, ok?" for i in range(30)] + [f"spam\tWIN a prize {i}! call now" for i in range(12)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(cd.SMS_MEMBER, "\n".join(rows) + "\n")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / cd.SMS_ARCHIVE).write_bytes(buf.getvalue())
    monkeypatch.setenv("LLMZH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMZH_MIRROR", mirror.as_uri())
    monkeypatch.delenv("LLMZH_OFFLINE", raising=False)
    cfg = hf_config(vocab_size=50257, n_positions=32)
    hf = write_hf_dir(tmp_path / "gpt2", cfg, hf_state(cfg, seed=0))
    out = tmp_path / "sms"
    assert run_cli("numpy", ["finetune-cls", "--data=sms", f"--ckpt={hf}", f"--out_dir={out}", "--max_steps=2",
                             "--batch_size=4", "--progress=false", "--eval_interval=1"]) == 0
    res = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert (res["train_n"], res["val_n"], res["test_n"]) == (16, 2, 6)  # 平衡到 12 + 12，每类按 70/10/20 切成 8/1/3
    capsys.readouterr()
    assert run_cli("numpy", ["classify", f"--ckpt={out}", "--text=WIN a free prize now"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in cd.SMS_CLASSES
