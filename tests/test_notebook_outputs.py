"""保存在 chapters/*.ipynb 里的输出是给读者看的：不能有 stderr、警告、报错，也不能有本机的绝对路径；画了图的单元要有图。

只读提交进仓库的 notebook，不执行任何单元。图片（base64）不检查，只看文字类的输出。
个别 notebook 要重新完整构建才能修好（构建很慢），在 KNOWN_BAD 里标成 xfail(strict=True)：
重建之后它会通过，strict 让测试提醒把标记删掉。
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))

WARNING = re.compile(r"Warning\b")  # UserWarning、RuntimeWarning、TqdmWarning……
ABS_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|home|root|Users)/")

KNOWN_BAD = {
}


def _texts(output: dict) -> list[str]:
    """一个输出里给人看的文字：stream 的内容，或 text/* 类型的数据。"""
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    out = []
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/"):
            out.append(value if isinstance(value, str) else "".join(value))
    return out


def problems(path: Path) -> list[str]:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            where = f"{path.name} 第 {i} 个单元"
            kind = output.get("output_type")
            if kind == "error":
                found.append(f"{where}：报错 {output.get('ename')}")
                continue
            if kind == "stream" and output.get("name") == "stderr":
                found.append(f"{where}：stderr 输出 {output.get('text', '')[:80]!r}")
                continue
            for text in _texts(output):
                for pattern, what in ((WARNING, "警告"), (ABS_PATH, "绝对路径")):
                    m = pattern.search(text)
                    if m:
                        found.append(f"{where}：{what} {text[max(0, m.start() - 40):m.end() + 40]!r}")
    return found


def _params() -> list:
    out = []
    for p in NOTEBOOKS:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BAD[p.stem])] if p.stem in KNOWN_BAD else []
        out.append(pytest.param(p, id=p.stem, marks=marks))
    return out


@pytest.mark.parametrize("path", _params())
def test_saved_outputs_are_clean(path: Path) -> None:
    found = problems(path)
    assert not found, "\n".join(found)


def test_known_bad_names_exist() -> None:
    assert set(KNOWN_BAD) | set(MISSING_FIGURES) <= {p.stem for p in NOTEBOOKS}


MISSING_FIGURES = {
}


def _params_figures() -> list:
    out = []
    for p in NOTEBOOKS:
        reason = MISSING_FIGURES.get(p.stem)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(p, id=p.stem, marks=marks))
    return out


@pytest.mark.parametrize("path", _params_figures())
def test_every_plt_show_saved_a_figure(path: Path) -> None:
    """调用了 plt.show() 的单元，保存的输出里必须有一张图。"""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    missing = [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "plt.show()" in c.source
        and not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
    ]
    assert not missing, f"{path.name} 这些单元调用了 plt.show() 却没有保存图：{missing}"


def test_checker_catches_each_kind(tmp_path: Path) -> None:
    """检查器本身：每一类问题都能被发现，干净的输出不误报（例如图片的 base64 里碰巧有 /tmp/）。"""
    import nbformat

    nb = nbformat.v4.new_notebook()
    bad = [
        nbformat.v4.new_output("stream", name="stderr", text="编码训练文本……\n"),
        nbformat.v4.new_output("stream", name="stdout", text="输出目录 /tmp/llmzh-abc/run\n"),
        nbformat.v4.new_output("stream", name="stdout", text="模型在 /root/.cache/llm-zh/gpt2 里\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "UserWarning: 小心"}, execution_count=1),
        nbformat.v4.new_output("error", ename="ValueError", evalue="坏了", traceback=[]),
    ]
    good = [
        nbformat.v4.new_output("stream", name="stdout", text="相对路径 runs/gpt_numpy/loss.png，分数 1/tmp/2\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBOR/tmp/work/AAAA", "text/plain": "<Figure>"}),
    ]
    for outputs in (bad, good):
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = outputs
        nb.cells.append(cell)
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, str(path))
    found = problems(path)
    assert len(found) == len(bad), found
    assert all("第 0 个单元" in f for f in found)
