"""README 的章节表与第 1 章的地图是同一张表，都由 chapters/chapter_map.py 的清单生成；任何一处改了没重新生成就失败。"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "chapters"))

import chapter_map  # noqa: E402


def test_tables_match_the_list() -> None:
    assert chapter_map.check() == [], "请运行 python chapters/chapter_map.py 重新生成"


def test_check_cli() -> None:
    p = subprocess.run([sys.executable, "chapters/chapter_map.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_drift_is_detected(tmp_path: Path, monkeypatch) -> None:
    """表被手改（或清单变了却没重新生成）时，check 会指出是哪个文件。"""
    fake = tmp_path / "README.md"
    text = chapter_map.README.read_text(encoding="utf-8")
    fake.write_text(text.replace("| 第 3 章 注意力机制 |", "| 第 3 章 注意力 |"), encoding="utf-8")
    monkeypatch.setattr(chapter_map, "README", fake)
    monkeypatch.setattr(chapter_map, "ROOT", tmp_path.parent)
    assert any("README.md" in p for p in chapter_map.check())


def test_same_table_in_both_places() -> None:
    readme = chapter_map.README.read_text(encoding="utf-8")
    ch01 = chapter_map.CH01.read_text(encoding="utf-8")
    rows_readme = [ln for ln in readme.splitlines() if ln.startswith("| ")]
    rows_ch01 = [ln[2:] for ln in ch01.splitlines() if ln.startswith("# | ")]
    table = chapter_map.table()[2:]
    assert all(row in rows_readme for row in table) and all(row in rows_ch01 for row in table)


def test_listed_paths_exist() -> None:
    """清单里从仓库根目录写起的代码路径（如 `llmcore/trainer.py`）都存在；写好的章节都有 notebook。"""
    top = ("llmcore/", "gpt_numpy/", "gpt_torch/", "tinytensor/", "bench/", "chapters/")
    for c in chapter_map.CHAPTERS:
        for path in re.findall(r"`([^`]+)`", c.code):
            if not path.startswith(top):
                continue
            assert (ROOT / path).exists(), f"{c.name}：{path} 不存在"
        if c.written:
            assert (ROOT / c.notebook).exists(), c.notebook
