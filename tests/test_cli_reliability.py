"""命令行的可靠性（两条轨道）：坏参数、坏数据、损坏的检查点、被占用或用过的输出目录。

表驱动：每个用例给出命令、期望的退出码与错误行里必须出现的词，并核对输出目录在命令前后逐字节相同
（坏输入不写、不覆盖任何东西）。大部分用例在进程内调用 llmcore.cli.main（快）；回溯开关、Ctrl-C、
运行锁这些与进程有关的用例在子进程里跑真正的 python -m。
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from train_helpers import ROOT, TINY, env, read_metrics, write_corpus

from llmcore import cli
from llmcore.errors import (
    EXIT_CHECKPOINT,
    EXIT_DATA,
    EXIT_DEVICE,
    EXIT_OUTPUT,
    EXIT_SIGINT,
    EXIT_TOKENIZER,
    EXIT_USAGE,
)

TRACKS = ["gpt_numpy", "gpt_torch"]


def _track(name: str) -> cli.Track:
    if name == "gpt_torch":
        pytest.importorskip("torch")
        from gpt_torch.__main__ import TRACK
    else:
        from gpt_numpy.__main__ import TRACK
    return TRACK


def run(track: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """进程内运行命令行，返回 (退出码, stdout, stderr)。"""
    capsys.readouterr()
    code = cli.main(argv, _track(track))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, str]:
    """目录里每个文件（含隐藏文件）的 sha256；目录不存在时为空。"""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def last_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def assert_one_line_error(code: int, err: str, want_code: int, words: list[str]) -> None:
    assert code == want_code, f"退出码 {code}，期望 {want_code}\n{err}"
    assert "Traceback" not in err, err
    line = last_line(err)
    for w in words:
        assert w in line, f"错误行里没有 {w!r}：{line}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus.txt")


def train_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["train", f"--data={corpus}", f"--out_dir={out}", *TINY, *extra]


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """每条轨道训练 3 步的输出目录（ckpt_last 在第 3 步，ckpt_best 在第 2 步）。"""
    dirs = {}
    for track in TRACKS:
        if track == "gpt_torch":
            try:
                import torch  # noqa: F401
            except ImportError:
                continue
        out = tmp_path_factory.mktemp("trained") / track
        code = cli.main(train_args(corpus, out, "--max_steps=3", "--eval_interval=2"), _track(track))
        assert code == 0
        dirs[track] = out
    return dirs


def fresh_copy(trained: dict[str, Path], track: str, tmp_path: Path) -> Path:
    if track not in trained:
        pytest.skip("没有安装 torch")
    out = tmp_path / "run"
    shutil.copytree(trained[track], out)
    return out


# ---------------------------------------------------------------------------- 坏参数（不建任何文件）
# (名字, 额外参数, {轨道: 退出码} 或退出码, 错误行里必须有的词)
TRAIN_BAD: list[tuple[str, list[str], int | dict[str, int], list[str]]] = [
    ("min_lr_above_lr", ["--lr=1e-3", "--min_lr=1e-2"], EXIT_USAGE, ["min_lr", "0.01"]),
    ("negative_weight_decay", ["--weight_decay=-0.1"], EXIT_USAGE, ["weight_decay", "-0.1"]),
    ("negative_grad_clip", ["--grad_clip=-1"], EXIT_USAGE, ["grad_clip"]),
    ("negative_save_interval", ["--save_interval=-5"], EXIT_USAGE, ["save_interval"]),
    ("negative_max_time", ["--max_time=-1"], EXIT_USAGE, ["max_time"]),
    ("negative_stop_at", ["--stop_at=-1"], EXIT_USAGE, ["stop_at"]),
    ("lr_nan", ["--lr=nan"], EXIT_USAGE, ["lr", "nan"]),
    ("lr_inf", ["--lr=inf"], EXIT_USAGE, ["lr", "inf"]),
    ("lr_zero", ["--lr=0"], EXIT_USAGE, ["lr"]),
    ("beta2_one", ["--beta2=1"], EXIT_USAGE, ["beta2"]),
    ("val_fraction_zero", ["--val_fraction=0"], EXIT_USAGE, ["val_fraction"]),
    ("warmup_not_below_max_steps", ["--max_steps=5", "--warmup_steps=5"], EXIT_USAGE, ["warmup_steps", "5"]),
    ("max_steps_and_epochs", ["--max_steps=5", "--epochs=2"], EXIT_USAGE, ["--max_steps", "--epochs"]),
    ("unknown_field", ["--no_such_field=1"], EXIT_USAGE, ["no_such_field"]),
    ("vocab_size_typed", ["--vocab_size=10"], EXIT_USAGE, ["vocab_size"]),
    ("not_an_int", ["--batch_size=abc"], EXIT_USAGE, ["batch_size", "abc"]),
    ("zero_batch", ["--batch_size=0"], EXIT_USAGE, ["batch_size"]),
    ("drop_rate_nan", ["--drop_rate=nan"], EXIT_USAGE, ["drop_rate"]),
    ("heads_do_not_divide", ["--n_heads=3"], EXIT_USAGE, ["n_heads=3"]),
    ("unknown_recipe", ["--recipe=nope"], EXIT_USAGE, ["nope"]),
    ("positional_garbage", ["oops"], EXIT_USAGE, ["oops"]),
    ("overwrite_without_never", ["--overwrite=true"], EXIT_USAGE, ["--overwrite"]),
    ("unknown_device", ["--device=tpu"], {"gpt_numpy": EXIT_USAGE, "gpt_torch": EXIT_DEVICE}, ["tpu"]),
    ("missing_data_file", ["--data=/nonexistent/语料.txt"], EXIT_DATA, ["语料.txt"]),
    ("missing_tokenizer_file", ["--tokenizer=/nonexistent/tok.json"], EXIT_TOKENIZER, ["tok.json"]),
]


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("name,extra,want,words", TRAIN_BAD, ids=[c[0] for c in TRAIN_BAD])
def test_bad_train_arguments(track: str, name: str, extra: list[str], want: int | dict[str, int], words: list[str],
                             corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = train_args(corpus, out, *extra)
    if name == "missing_data_file":
        args.remove(f"--data={corpus}")
    if name == "unknown_device" and track == "gpt_numpy":
        words = ["--device"]
    code, _, err = run(track, args, capsys)
    assert_one_line_error(code, err, want[track] if isinstance(want, dict) else want, words)
    assert not out.exists(), "坏参数不应建立输出目录"


@pytest.mark.parametrize("track", TRACKS)
def test_cuda_without_gpu(track: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if track == "gpt_torch":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("本机有 GPU")
    code, _, err = run(track, train_args(corpus, tmp_path / "out", "--device=cuda"), capsys)
    if track == "gpt_numpy":
        assert_one_line_error(code, err, EXIT_USAGE, ["--device", "gpt_torch"])
    else:
        assert_one_line_error(code, err, EXIT_DEVICE, ["cuda", "--device=cpu"])
    assert not (tmp_path / "out").exists()


def _write_bad_data(kind: str, tmp_path: Path) -> Path:
    p = tmp_path / f"{kind}.txt"
    if kind == "binary":
        p.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    elif kind == "gbk":
        p.write_bytes(("新华社北京电。" * 200).encode("gbk"))
    elif kind == "empty":
        p.write_bytes(b"   \n")
    else:  # 太短：切不出一个窗口
        p.write_text("新华社北京。\n" * 2, encoding="utf-8")
    return p


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("kind,words", [
    ("binary", ["二进制"]), ("gbk", ["UTF-8"]), ("empty", ["空"]), ("short", ["词元"]),
])
def test_bad_data_files(track: str, kind: str, words: list[str], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_bad_data(kind, tmp_path)
    out = tmp_path / "out"
    code, _, err = run(track, ["train", f"--data={data}", f"--out_dir={out}", *TINY], capsys)
    assert_one_line_error(code, err, EXIT_DATA, [data.name, *words])
    assert not out.exists(), "失败的新运行不留下输出目录"


@pytest.mark.parametrize("track", TRACKS)
def test_bad_tokenizer_file(track: str, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = tmp_path / "tok.json"
    tok.write_text('{"type": "char", "vocab": 7}', encoding="utf-8")
    code, _, err = run(track, train_args(corpus, tmp_path / "out", f"--tokenizer={tok}"), capsys)
    assert_one_line_error(code, err, EXIT_TOKENIZER, ["tok.json"])
    tok.write_text("{不是 JSON", encoding="utf-8")
    code, _, err = run(track, train_args(corpus, tmp_path / "out", f"--tokenizer={tok}"), capsys)
    assert_one_line_error(code, err, EXIT_TOKENIZER, ["tok.json", "JSON"])
    assert not (tmp_path / "out").exists()


GEN_BAD = [
    ("num_samples_zero", ["--num-samples=0"], ["--num-samples", "0"]),
    ("max_new_tokens_zero", ["--max-new-tokens=0"], ["--max-new-tokens"]),
    ("temperature_negative", ["--temperature=-1"], ["--temperature"]),
    ("temperature_nan", ["--temperature=nan"], ["--temperature", "nan"]),
    ("top_p_zero", ["--top-p=0"], ["--top-p"]),
    ("top_p_above_one", ["--top-p=1.5"], ["--top-p"]),
    ("top_k_negative", ["--top-k=-1"], ["--top-k"]),
    ("unknown_option", ["--bogus=1"], ["--bogus"]),
]
EVAL_BAD = [
    ("max_batches_zero", ["--max-batches=0"], ["--max-batches", "0"]),
    ("batch_size_zero", ["--batch-size=0"], ["--batch-size"]),
    ("unknown_split", ["--split=test"], ["--split"]),
]


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("cmd,name,extra,words", [("generate", *c) for c in GEN_BAD] + [("eval", *c) for c in EVAL_BAD],
                         ids=[f"generate-{c[0]}" for c in GEN_BAD] + [f"eval-{c[0]}" for c in EVAL_BAD])
def test_bad_generate_and_eval_arguments(track: str, cmd: str, name: str, extra: list[str], words: list[str],
                                         trained: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh_copy(trained, track, tmp_path)
    before = snapshot(out)
    code, stdout, err = run(track, [cmd, f"--ckpt={out}", *extra], capsys)
    assert_one_line_error(code, err, EXIT_USAGE, words)
    assert stdout == ""
    assert snapshot(out) == before


# ---------------------------------------------------------------------------- 损坏的检查点
CKPTS = ("ckpt_last", "ckpt_best")


def _rewrite_manifest(d: Path) -> None:
    """模拟“保存时就已经是这样”的检查点：按现在的文件重写清单（校验和因此对得上）。"""
    from llmcore.checkpoint import read_manifest, write_manifest

    names = [n for n in (read_manifest(d) or {}) if (d / n).is_file()]
    write_manifest(d, names)


def _edit_weights(out: Path, fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
    from safetensors.numpy import load_file, save_file

    for c in CKPTS:
        p = out / c / "model.safetensors"
        save_file(fn(load_file(str(p))), str(p))
        _rewrite_manifest(out / c)


def _edit_optimizer(out: Path, fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
    from safetensors.numpy import load_file, save_file

    for c in CKPTS:
        p = out / c / "optimizer.safetensors"
        save_file(fn(load_file(str(p))), str(p))
        _rewrite_manifest(out / c)


def _edit_json(out: Path, name: str, fn: Callable[[dict], dict]) -> None:
    for c in CKPTS:
        p = out / c / name
        p.write_text(json.dumps(fn(json.loads(p.read_text(encoding="utf-8")))), encoding="utf-8")
        _rewrite_manifest(out / c)


def _flip_bytes(out: Path) -> None:
    for c in CKPTS:
        p = out / c / "model.safetensors"
        data = bytearray(p.read_bytes())
        data[-10] ^= 0xFF  # 权重数据区里的一个字节
        p.write_bytes(bytes(data))


def _with_nan(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    w = s["tok_emb.weight"].copy()
    w[0, 0] = np.nan
    return {**s, "tok_emb.weight": w}


def _delete(name: str) -> Callable[[Path], None]:
    def fn(out: Path) -> None:
        for c in CKPTS:
            (out / c / name).unlink()
    return fn


def _traversal(out: Path) -> None:
    for c in CKPTS:
        p = out / c / "manifest.json"
        m = json.loads(p.read_text(encoding="utf-8"))
        m["files"]["../../outside.txt"] = {"sha256": "0" * 64, "size": 1}
        p.write_text(json.dumps(m), encoding="utf-8")


def _swap_tokenizer(out: Path) -> None:
    from llmcore.tokenizers import CharTokenizer

    tok = CharTokenizer.train("完全不同的一小段文字")
    for p in [out / "tokenizer.json", *(out / c / "tokenizer.json" for c in CKPTS)]:
        tok.save(p)
    for c in CKPTS:
        _rewrite_manifest(out / c)


def _break_tokenizer(out: Path) -> None:
    for p in [out / "tokenizer.json", *(out / c / "tokenizer.json" for c in CKPTS)]:
        p.write_text("{截断了", encoding="utf-8")
    for c in CKPTS:
        _rewrite_manifest(out / c)


def _drop_optimizer_keys(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for i, (k, v) in enumerate(sorted(s.items())) if i % 3}


OK = 0
# (名字, 破坏方式, train 的 (退出码, 词), generate 的, eval 的)
Outcome = tuple[int, list[str]]
DAMAGE: list[tuple[str, Callable[[Path], None], Outcome, Outcome, Outcome]] = [
    ("flipped_bytes", _flip_bytes,
     (EXIT_CHECKPOINT, ["model.safetensors", "sha256"]), (EXIT_CHECKPOINT, ["model.safetensors", "sha256"]),
     (EXIT_CHECKPOINT, ["model.safetensors", "sha256"])),
    ("nan_weights", lambda o: _edit_weights(o, _with_nan),
     (EXIT_CHECKPOINT, ["tok_emb.weight", "NaN"]), (EXIT_CHECKPOINT, ["NaN"]), (EXIT_CHECKPOINT, ["NaN"])),
    ("int32_weights", lambda o: _edit_weights(o, lambda s: {k: v.astype(np.int32) for k, v in s.items()}),
     (EXIT_CHECKPOINT, ["int32", "浮点"]), (EXIT_CHECKPOINT, ["int32"]), (EXIT_CHECKPOINT, ["int32"])),
    ("bool_weights", lambda o: _edit_weights(o, lambda s: {k: v > 0 for k, v in s.items()}),
     (EXIT_CHECKPOINT, ["bool"]), (EXIT_CHECKPOINT, ["bool"]), (EXIT_CHECKPOINT, ["bool"])),
    ("missing_weights", _delete("model.safetensors"),
     (EXIT_CHECKPOINT, ["model.safetensors"]), (EXIT_CHECKPOINT, ["model.safetensors"]),
     (EXIT_CHECKPOINT, ["model.safetensors"])),
    ("missing_trainer_state", _delete("trainer_state.json"),
     (EXIT_CHECKPOINT, ["trainer_state.json"]), (OK, []), (EXIT_CHECKPOINT, ["trainer_state.json"])),
    ("missing_optimizer", _delete("optimizer.safetensors"),
     (EXIT_CHECKPOINT, ["optimizer.safetensors", "--weights_only=true"]), (OK, []), (OK, [])),
    ("partial_optimizer", lambda o: _edit_optimizer(o, _drop_optimizer_keys),
     (EXIT_CHECKPOINT, ["optimizer.safetensors", "不完整"]), (OK, []), (OK, [])),
    ("nan_optimizer", lambda o: _edit_optimizer(o, lambda s: {k: v * np.nan for k, v in s.items()}),
     (EXIT_CHECKPOINT, ["optimizer.safetensors", "NaN"]), (OK, []), (OK, [])),
    ("config_not_json", lambda o: [(o / c / "config.json").write_text("{坏", encoding="utf-8") for c in CKPTS],
     (EXIT_CHECKPOINT, ["config.json", "JSON"]), (EXIT_CHECKPOINT, ["config.json", "JSON"]),
     (EXIT_CHECKPOINT, ["config.json", "JSON"])),
    ("config_bad_field",
     lambda o: _edit_json(o, "config.json", lambda m: {**m, "model": {**m["model"], "n_layers": "x"}}),
     (EXIT_CHECKPOINT, ["config.json", "n_layers"]), (EXIT_CHECKPOINT, ["config.json", "n_layers"]),
     (EXIT_CHECKPOINT, ["config.json", "n_layers"])),
    ("trainer_state_bad_step", lambda o: _edit_json(o, "trainer_state.json", lambda m: {**m, "step": -1}),
     (EXIT_CHECKPOINT, ["trainer_state.json", "step"]), (OK, []), (EXIT_CHECKPOINT, ["trainer_state.json", "step"])),
    ("manifest_path_traversal", _traversal,
     (EXIT_CHECKPOINT, ["manifest.json", "outside.txt"]), (EXIT_CHECKPOINT, ["manifest.json", "outside.txt"]),
     (EXIT_CHECKPOINT, ["manifest.json", "outside.txt"])),
    ("config_shape_mismatch",
     lambda o: _edit_json(o, "config.json", lambda m: {**m, "model": {**m["model"], "emb_dim": 64}}),
     (EXIT_USAGE, ["emb_dim", "64"]), (EXIT_CHECKPOINT, ["形状不匹配"]), (EXIT_CHECKPOINT, ["形状不匹配"])),
    ("tokenizer_not_json", _break_tokenizer,
     (EXIT_TOKENIZER, ["tokenizer.json", "JSON"]), (EXIT_TOKENIZER, ["tokenizer.json", "JSON"]),
     (EXIT_TOKENIZER, ["tokenizer.json", "JSON"])),
    ("tokenizer_vocab_mismatch", _swap_tokenizer,
     (EXIT_TOKENIZER, ["tokenizer.json", "词表"]), (EXIT_TOKENIZER, ["分词器", "词表"]),
     (EXIT_TOKENIZER, ["分词器", "词表"])),
]


@pytest.mark.parametrize("track", TRACKS)
@pytest.mark.parametrize("cmd", ["train", "generate", "eval"])
@pytest.mark.parametrize("name,damage,on_train,on_generate,on_eval", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_checkpoint(track: str, cmd: str, name: str, damage: Callable[[Path], None],
                            on_train: tuple[int, list[str]], on_generate: tuple[int, list[str]],
                            on_eval: tuple[int, list[str]], trained: dict[str, Path], corpus: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh_copy(trained, track, tmp_path)
    damage(out)
    before = snapshot(out)
    if cmd == "train":
        want, words = on_train
        argv = train_args(corpus, out, "--max_steps=5", "--eval_interval=2")
    elif cmd == "generate":
        want, words = on_generate
        argv = ["generate", f"--ckpt={out}", "--max-new-tokens=3", "--seed=1"]
    else:
        want, words = on_eval
        argv = ["eval", f"--ckpt={out}", "--max-batches=2", "--batch-size=2"]
    code, _, err = run(track, argv, capsys)
    if want == OK:
        assert code == 0, err
        return
    assert_one_line_error(code, err, want, words)
    assert snapshot(out) == before, "损坏的检查点不能被覆盖，输出目录里什么都不该变"


@pytest.mark.parametrize("track", TRACKS)
def test_weights_only_resumes_without_optimizer(track: str, trained: dict[str, Path], corpus: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh_copy(trained, track, tmp_path)
    _delete("optimizer.safetensors")(out)
    code, _, err = run(track, train_args(corpus, out, "--max_steps=5", "--eval_interval=2", "--weights_only=true"),
                       capsys)
    assert code == 0, err
    assert "--weights_only=true" in err
    steps = [r["step"] for r in read_metrics(out) if r["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5], steps  # 从第 3 步接着训，没有从 0 重来


@pytest.mark.parametrize("track", TRACKS)
def test_recovery_copy_is_found_by_train_generate_and_eval(track: str, trained: dict[str, Path], corpus: Path,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """写检查点时在两次改名之间崩溃：NAME 不在，只剩 .NAME.old。三个命令都要用它。"""
    out = fresh_copy(trained, track, tmp_path)
    for c in CKPTS:
        (out / c).rename(out / f".{c}.old")
    code, _, err = run(track, ["generate", f"--ckpt={out}", "--max-new-tokens=3"], capsys)
    assert code == 0 and "恢复副本" in err, err
    code, stdout, err = run(track, ["eval", f"--ckpt={out}", "--max-batches=2", "--batch-size=2"], capsys)
    assert code == 0 and "困惑度" in stdout, err
    code, _, err = run(track, train_args(corpus, out, "--max_steps=5", "--eval_interval=2"), capsys)
    assert code == 0, err
    assert "续训：已完成 3 步" in err
    assert [r["step"] for r in read_metrics(out) if r["type"] == "train"] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- 输出目录
@pytest.mark.parametrize("track", TRACKS)
def test_resume_never_refuses_a_used_folder(track: str, trained: dict[str, Path], corpus: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh_copy(trained, track, tmp_path)
    before = snapshot(out)
    code, _, err = run(track, train_args(corpus, out, "--max_steps=3", "--resume=never"), capsys)
    assert_one_line_error(code, err, EXIT_OUTPUT, [str(out), "--overwrite=true"])
    assert snapshot(out) == before
    # 明确要求覆盖：旧的记录被删掉，新的 metrics.jsonl 从头写，不与旧的交错
    code, _, err = run(track, train_args(corpus, out, "--max_steps=2", "--warmup_steps=1", "--resume=never",
                                         "--overwrite=true", "--seed=7"), capsys)
    assert code == 0, err
    recs = read_metrics(out)
    assert [r["step"] for r in recs if r["type"] == "train"] == [1, 2]
    assert [r["step"] for r in recs if r["type"] == "eval"] == [0, 2]
    assert (out / "samples.txt").read_text(encoding="utf-8").count("== 第 0 步") == 1


@pytest.mark.parametrize("track", TRACKS)
def test_best_without_last_is_not_overwritten(track: str, trained: dict[str, Path], corpus: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh_copy(trained, track, tmp_path)
    shutil.rmtree(out / "ckpt_last")
    before = snapshot(out)
    code, _, err = run(track, train_args(corpus, out, "--max_steps=5"), capsys)
    assert_one_line_error(code, err, EXIT_CHECKPOINT, ["ckpt_best", "ckpt_last"])
    assert snapshot(out) == before


def test_typed_max_steps_beats_recipe_epochs() -> None:
    from gpt_numpy.__main__ import TRACK

    tcfg, model = cli.parse_train_args(["--recipe=book-verdict", "--max_steps=5"], TRACK)
    assert (tcfg.max_steps, tcfg.epochs) == (5, 0)
    assert model["context_length"] == 256  # 配方的其余设置照旧
    tcfg, _ = cli.parse_train_args(["--recipe=book-verdict"], TRACK)
    assert tcfg.epochs == 10
    tcfg, _ = cli.parse_train_args(["--lr=1e-4"], TRACK)  # 默认 min_lr 比它大：跟着变小，而不是“退火”到更大
    assert tcfg.min_lr <= tcfg.lr


def test_train_help_lists_only_accepted_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run("gpt_numpy", ["train", "--help"], capsys)
    assert code == 0
    fields_line = next(ln for ln in stdout.splitlines() if ln.startswith("训练字段"))
    assert "device" not in fields_line and "weights_only" in fields_line and "overwrite" in fields_line
    model_fields = next(ln for ln in stdout.splitlines() if ln.startswith("模型字段")).rsplit("：", 1)[1]
    assert "vocab_size" not in model_fields and "tie_weights" in model_fields
    assert "LLMZH_DEBUG" in stdout and "退出码" in stdout


@pytest.mark.parametrize("track", TRACKS)
def test_tie_weights_trains_resumes_and_generates(track: str, corpus: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _track(track)
    out = tmp_path / "tied"
    code, _, err = run(track, train_args(corpus, out, "--tie_weights=true", "--max_steps=3", "--eval_interval=2"),
                       capsys)
    assert code == 0, err
    from safetensors.numpy import load_file

    assert "out_head.weight" not in load_file(str(out / "ckpt_last" / "model.safetensors"))
    code, _, err = run(track, train_args(corpus, out, "--tie_weights=true", "--max_steps=5", "--eval_interval=2"),
                       capsys)
    assert code == 0 and "续训：已完成 3 步" in err, err
    code, stdout, err = run(track, ["generate", f"--ckpt={out}", "--max-new-tokens=3"], capsys)
    assert code == 0 and stdout.strip(), err


# ---------------------------------------------------------------------------- 进程级：锁、回溯开关、Ctrl-C
def _sigint_default() -> None:
    # 子进程里把 SIGINT 恢复成默认处理：在终端里按 Ctrl-C 时就是这样。若测试本身是从非交互 shell 的后台任务
    # （`cmd &`）启动的，SIGINT 被继承为“忽略”，Python 便不安装 KeyboardInterrupt，生成命令收不到 Ctrl-C。
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(args: list[str], **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env(**extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)


@pytest.mark.slow
def test_second_run_into_same_folder_names_the_holder(trained: dict[str, Path], corpus: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = fresh_copy(trained, "gpt_numpy", tmp_path)
    code = ("import sys, time; from llmcore.run_lock import RunLock; lk = RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    holder = _popen(["-c", code, str(out)])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        for track in TRACKS:
            if track in trained:
                code, _, err = run(track, train_args(corpus, out, "--max_steps=5"), capsys)
                assert_one_line_error(code, err, EXIT_OUTPUT, [f"PID {holder.pid}", "另一个训练进程"])
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    # 持有者被 SIGKILL：锁文件还在，但锁已随进程释放（陈旧的锁），下一次运行照常进行
    assert (out / ".run.lock").is_file()
    code, _, err = run("gpt_numpy", train_args(corpus, out, "--max_steps=4", "--eval_interval=2"), capsys)
    assert code == 0, err
    assert not (out / ".run.lock").exists()


@pytest.mark.slow
def test_traceback_only_with_debug_switch(tmp_path: Path) -> None:
    args = ["-m", "gpt_numpy", "generate", "--num-samples=0"]
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == EXIT_USAGE and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=env(LLMZH_DEBUG="1"), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "Traceback" in p.stderr and "UsageError" in p.stderr
    p = subprocess.run([sys.executable, *args, "--debug"], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=120)
    assert "Traceback" in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("track", TRACKS)
def test_ctrl_c_during_generation_is_one_line(track: str, trained: dict[str, Path], tmp_path: Path) -> None:
    out = fresh_copy(trained, track, tmp_path)
    # 很多段、每段很长：即使模型很快生成了文本结束符，生成也不会在 Ctrl-C 到达之前自己结束
    p = _popen(["-m", track, "generate", f"--ckpt={out}", "--max-new-tokens=1000000", "--num-samples=100000",
                "--no-cache"])
    assert p.stdout is not None
    p.stdout.read(8)  # 已经开始输出
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_SIGINT
    assert "Traceback" not in err and "已中断生成" in last_line(err), err


@pytest.mark.slow
def test_second_ctrl_c_while_saving_is_one_line_and_resumable(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "sigint2"
    args = ["-m", "gpt_numpy", *train_args(corpus, out, "--max_steps=100000", "--eval_interval=1")]
    p = _popen(args)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text(encoding="utf-8").count("eval") >= 3):
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    time.sleep(0.01)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_SIGINT, err
    assert "Traceback" not in err and ("Ctrl-C" in last_line(err) or "保存检查点" in last_line(err)), err
    from llmcore.train_state import find_checkpoint

    ckpt = find_checkpoint(out)  # 第二次 Ctrl-C 可能正落在两次改名之间：那时用的是恢复副本
    assert ckpt is not None
    k = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["step"]
    q = subprocess.run([sys.executable, *args[:-2], f"--max_steps={k + 2}", "--eval_interval=1"], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    assert f"续训：已完成 {k} 步" in q.stderr
    assert not list(out.glob(".ckpt_*.tmp")), "写到一半的临时目录应在续训开始时被清理"


@pytest.mark.parametrize("track", TRACKS)
def test_download_failures_are_one_line(track: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--data=verdict 需要下载：离线且缓存里没有、镜像上的文件不对、镜像不可达，都是一行与退出码 7。"""
    from llmcore.errors import EXIT_DOWNLOAD

    for k in ("LLMZH_MIRROR", "HF_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LLMZH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["train", "--data=verdict", f"--out_dir={out}", *TINY]
    monkeypatch.setenv("LLMZH_OFFLINE", "1")
    code, _, err = run(track, args, capsys)
    assert_one_line_error(code, err, EXIT_DOWNLOAD, ["the-verdict.txt", "离线"])
    monkeypatch.delenv("LLMZH_OFFLINE")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "the-verdict.txt").write_text("不是那篇小说", encoding="utf-8")
    monkeypatch.setenv("LLMZH_MIRROR", mirror.as_uri())
    code, _, err = run(track, args, capsys)
    assert_one_line_error(code, err, EXIT_DOWNLOAD, ["the-verdict.txt"])
    monkeypatch.setenv("LLMZH_MIRROR", (tmp_path / "no-such-mirror").as_uri())
    code, _, err = run(track, args, capsys)
    assert_one_line_error(code, err, EXIT_DOWNLOAD, ["the-verdict.txt", "LLMZH_MIRROR"])
    assert not out.exists() and not list((tmp_path / "cache").rglob("*.txt"))


@pytest.mark.parametrize("track", TRACKS)
def test_eval_does_not_follow_data_paths_out_of_the_checkpoint(track: str, trained: dict[str, Path], corpus: Path,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """检查点记下的数据路径在用户给的目录之外：不自动去读（可用训练目录里的词元缓存，或由 --data 指定）。"""
    out = fresh_copy(trained, track, tmp_path)
    code, stdout, err = run(track, ["eval", f"--ckpt={out}", "--max-batches=2", "--batch-size=2"], capsys)
    assert code == 0 and "困惑度" in stdout, err  # 用的是 out/data 下的词元缓存
    shutil.rmtree(out / "data")
    before = snapshot(out)
    code, stdout, err = run(track, ["eval", f"--ckpt={out}", "--max-batches=2", "--batch-size=2"], capsys)
    assert_one_line_error(code, err, EXIT_USAGE, ["检查点目录之外", "--data"])
    assert snapshot(out) == before
    code, stdout, err = run(track, ["eval", f"--ckpt={out}", f"--data={corpus}", "--max-batches=2", "--batch-size=2"],
                            capsys)
    assert code == 0 and "困惑度" in stdout, err


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(corpus: Path, tmp_path: Path) -> None:
    """SIGKILL 落在任何时刻（包括写检查点、换名、持锁时）：同一条命令重跑就接着训，损失与不中断的训练逐位相同。"""
    from train_helpers import run_cli, train_losses

    total = 80
    common = [f"--max_steps={total}", "--eval_interval=5", "--save_interval=1"]
    ref = tmp_path / "ref"
    run_cli("gpt_numpy", train_args(corpus, ref, *common))
    out = tmp_path / "killed"
    from llmcore.train_state import find_checkpoint

    def saved_step() -> int:
        try:
            ckpt = find_checkpoint(out)
            return json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["step"] if ckpt else 0
        except (OSError, ValueError):  # 正好在换名：下一次再看
            return -1

    # 按训练进度（而不是固定秒数）决定何时杀：机器快慢不同，杀的时刻都落在训练中途
    rng = np.random.default_rng(0)
    targets = sorted(int(t) for t in rng.choice(np.arange(3, total - 10), size=3, replace=False))
    for target in targets:
        p = _popen(["-m", "gpt_numpy", *train_args(corpus, out, *common)])
        deadline = time.monotonic() + 300
        while saved_step() < target and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.3)))  # 到了目标步之后的任意时刻（可能正在写下一个检查点）
        p.kill()
        p.communicate(timeout=60)
    step = saved_step()
    assert step < total, "被杀之前训练已经结束：测不到中途崩溃"
    run_cli("gpt_numpy", train_args(corpus, out, *common))
    assert train_losses(out) == train_losses(ref)
    assert not (out / ".run.lock").exists()
