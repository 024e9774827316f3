"""执行 chapters/ 下的每个 notebook（快速模式），并检查它与 chapters/src 源文件同步。"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
sys.path.insert(0, str(CHAPTERS))

NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_matches_source(path: Path) -> None:
    import nbformat
    from build import parse_source

    src = CHAPTERS / "src" / f"{path.stem}.py"
    assert src.exists(), f"notebook {path.name} 缺少源文件 {src}"
    want = parse_source(src.read_text(encoding="utf-8"))
    nb = nbformat.read(str(path), as_version=4)
    got = [(c.cell_type, c.source) for c in nb.cells]
    assert got == want, f"{path.name} 与源文件不同步：请运行 python chapters/build.py {path.stem}"


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    env_pp = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_pp if env_pp else "")
    os.environ["LLMZH_QUICK"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(CHAPTERS)}}
    )
    client.execute()
