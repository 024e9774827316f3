"""三层结构的边界：llmcore 不导入任何引擎；gpt_torch 不导入 tinytensor/numba/gpt_numpy；gpt_numpy 不导入 torch。

两道检查：
- 运行时：在干净的子进程里导入整个包并真的训练、生成一次，再看 sys.modules；
- 静态：读每个源文件的 import 语句（也覆盖只在函数里才导入、运行时没走到的分支）。
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from train_helpers import ROOT, env, write_corpus

FORBIDDEN = {
    "llmcore": {"tinytensor", "numba", "torch", "gpt_numpy", "gpt_torch"},
    "gpt_torch": {"tinytensor", "numba", "gpt_numpy"},
    "gpt_numpy": {"torch", "gpt_torch"},
    "tinytensor": {"torch", "llmcore", "gpt_numpy", "gpt_torch"},
}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_import_statements(package: str) -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(_imported_roots(p) & FORBIDDEN[package])
        for p in (ROOT / package).rglob("*.py")
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{package} 不应导入这些包：{bad}"


def _run(code: str) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_LOADED = """
import json, sys
roots = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"loaded": roots}))
"""

_IMPORT_ALL = """
import importlib, pkgutil
pkg = importlib.import_module({name!r})
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
"""


def test_llmcore_imports_no_engine() -> None:
    loaded = set(_run(_IMPORT_ALL.format(name="llmcore") + _LOADED)["loaded"])
    assert not loaded & FORBIDDEN["llmcore"], loaded & FORBIDDEN["llmcore"]


def test_gpt_numpy_imports_no_torch() -> None:
    loaded = set(_run(_IMPORT_ALL.format(name="gpt_numpy") + _LOADED)["loaded"])
    assert "tinytensor" in loaded
    assert not loaded & FORBIDDEN["gpt_numpy"], loaded & FORBIDDEN["gpt_numpy"]


@pytest.mark.torch
@pytest.mark.slow
def test_torch_training_and_generation_never_load_tinytensor(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=100)
    code = _IMPORT_ALL.format(name="gpt_torch") + f"""
import numpy as np
from gpt_torch.__main__ import main
rc = main(["train", "--data={corpus}", "--out_dir={tmp_path / 'run'}", "--preset=tiny", "--n_layers=1",
           "--emb_dim=16", "--n_heads=2", "--context_length=8", "--batch_size=2", "--max_steps=3",
           "--eval_interval=3", "--eval_batches=1", "--progress=false", "--sample_tokens=3"])
assert rc == 0, rc
rc = main(["generate", "--ckpt={tmp_path / 'run'}", "--prompt=新华社", "--max-new-tokens=5"])
assert rc == 0, rc
""" + _LOADED
    loaded = set(_run(code)["loaded"])
    assert "torch" in loaded
    assert not loaded & FORBIDDEN["gpt_torch"], loaded & FORBIDDEN["gpt_torch"]
