"""把 chapters/src/*.py（percent 格式）转成 chapters/*.ipynb，并执行以保存真实输出。

源文件格式：
    # %% [markdown]
    # 这里是 Markdown，每行以 "# " 开头
    # %%
    print("代码单元")

用法：
    python chapters/build.py            # 转换并执行全部章节（完整模式，保存输出）
    python chapters/build.py ch02 ch03  # 只处理指定章节
    python chapters/build.py --no-exec  # 只转换，不执行
    python chapters/build.py --sync     # 只把源文件的文字写进已保存的 notebook，保留输出
                                        # （单元的个数和类型都不变时才允许；用于只改了文字或导入路径）

笔记本中的代码可以读取环境变量 LLMZH_QUICK：测试时为 "1"（缩短运行），
构建保存输出时不设置（完整运行，输出来自真实运行）。
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"


def parse_source(text: str) -> list[tuple[str, str]]:
    """把 percent 格式的源文件切成 [(类型, 内容)]，类型为 "code" 或 "markdown"。"""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# %%"):
            kind = "markdown" if "[markdown]" in stripped else "code"
            cells.append((kind, []))
            continue
        if not cells:
            if stripped:
                raise ValueError(f"源文件必须以 '# %%' 单元标记开头，却遇到：{line!r}")
            continue
        cells[-1][1].append(line)
    out: list[tuple[str, str]] = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        body = "\n".join(lines).strip("\n")
        if body.strip():
            out.append((kind, body))
    return out


def to_notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, body in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(body))
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 3600) -> None:
    from nbclient import NotebookClient

    root = str(HERE.parent)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = root + (os.pathsep + env_path if env_path else "")
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()


def build(name: str, run: bool) -> Path:
    src = SRC / f"{name}.py"
    nb = to_notebook(parse_source(src.read_text(encoding="utf-8")))
    if run:
        execute(nb)
    dst = HERE / f"{name}.ipynb"
    tmp = dst.with_suffix(".ipynb.tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(dst)
    return dst


def sync(name: str) -> Path:
    """把源文件的单元文字写进已保存的 notebook，保留各单元的输出；单元结构变了就拒绝（那需要重新执行）。"""
    src = SRC / f"{name}.py"
    dst = HERE / f"{name}.ipynb"
    cells = parse_source(src.read_text(encoding="utf-8"))
    nb = nbformat.read(str(dst), as_version=4)
    if [c.cell_type for c in nb.cells] != [k for k, _ in cells]:
        raise SystemExit(f"{name}：单元的个数或类型变了，不能只同步文字，请重新构建：python chapters/build.py {name}")
    for cell, (_, body) in zip(nb.cells, cells):
        cell.source = body
    tmp = dst.with_suffix(".ipynb.tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="把章节源文件构建为 notebook（并执行保存输出）")
    ap.add_argument("names", nargs="*", help="章节名，如 ch02；缺省为全部")
    ap.add_argument("--no-exec", action="store_true", help="只转换，不执行")
    ap.add_argument("--sync", action="store_true", help="只同步单元文字，保留已保存的输出")
    args = ap.parse_args(argv)
    names = args.names or sorted(p.stem for p in SRC.glob("*.py"))
    for name in names:
        if args.sync:
            print("同步", sync(name))
            continue
        print(f"构建 {name} ...", flush=True)
        print("  ->", build(name, run=not args.no_exec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
