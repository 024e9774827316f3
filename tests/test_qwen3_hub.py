"""经 huggingface_hub 获取 Qwen3：离线时复用用户已有的 Hugging Face 缓存；缓存里没有时给出清楚的错误。不联网。"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

from qwen3_testutil import write_tiny_qwen3  # noqa: E402

CODE = """
import sys
from llmcore.qwen3.hub import download_qwen3
from gpt_numpy.qwen3 import Qwen3Model
try:
    d = download_qwen3("Qwen/Qwen3-0.6B", cache_dir=sys.argv[1])
except FileNotFoundError as e:
    print("ERR", e)
    raise SystemExit(0)
m = Qwen3Model.from_pretrained(d)
print("OK", d, m.cfg.vocab_size)
"""


def _run(cache, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    r = subprocess.run([sys.executable, "-c", CODE, str(cache)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_offline_uses_existing_hf_cache(tmp_path):
    """按 Hugging Face 缓存的目录结构放好文件（就像用 transformers 下载过一样），离线模式下直接用它。"""
    src = tmp_path / "src"
    write_tiny_qwen3(src)
    (src / "tokenizer.json").write_text("{}", encoding="utf-8")
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--Qwen--Qwen3-0.6B"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(src / f, snap / f)
    out = _run(tmp_path / "cache", tmp_path)
    assert out.startswith("OK") and str(snap) in out and out.strip().endswith("300")


def test_offline_without_cache_gives_clear_error(tmp_path):
    out = _run(tmp_path / "empty", tmp_path)
    assert out.startswith("ERR") and "HF_HUB_OFFLINE" in out and "config.json" in out
