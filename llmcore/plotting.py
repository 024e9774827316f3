"""画图用的中文字体：全项目只在这里注册一次，章节里的图与训练写出的 loss.png 都经过它。

字体来自 PyPI 包 ``noto-cjk-sans-otc``（Google 的 Noto Sans CJK 常规体，一个 .ttc 文件，SIL OFL 1.1 许可，
wheel 约 15 MB），是本项目的依赖，``pip install -e .`` 时一起装上，不需要系统字体，也不联网。

契约
----
- ``cjk_rc()`` 返回一组 rcParams（字体族、无衬线字体列表、``axes.unicode_minus=False``），
  可交给 ``matplotlib.rc_context`` 临时使用；找不到任何中文字体时返回 ``{}``。
- ``use_cjk_font()`` 把这组设置写进全局 rcParams（章节开头调用一次），返回所用的字体名；找不到时返回 None。
- 都不切换 matplotlib 的后端（notebook 里的图照常内嵌显示），也不导入 pyplot。

查找顺序
--------
1. pip 包里的 ``NotoSansCJK-Regular.ttc``：用 ``fontManager.addfont`` 注册。matplotlib 3.11 起会登记 .ttc 里的
   每一个字体，我们选其中的简体中文 “Noto Sans CJK SC”；更早的版本只登记第一个（“Noto Sans CJK JP”），
   它同样包含全部汉字，只是少数字形按日文习惯书写。
2. 系统已装的中文字体（``SYSTEM_CJK_FONTS``，如 Debian 的 fonts-noto-cjk、Windows 的微软雅黑）。
3. 都没有（例如用 ``--no-deps`` 安装）：发出一条警告，说明该装哪个包；``cjk_rc()`` 返回 ``{}``。
   训练的 loss.png 此时改用英文标签（见 report.py），免得中文显示成方框；章节里的图照画，中文会是方框。
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

FONT_PACKAGE = "noto_cjk_sans_otc"  # PyPI 上的名字是 noto-cjk-sans-otc
FONT_FILE = "NotoSansCJK-Regular.ttc"
PREFERRED = ("Noto Sans CJK SC", "Noto Sans CJK JP")  # .ttc 里按此顺序挑选
SYSTEM_CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
    "Microsoft YaHei", "PingFang SC", "SimHei",
)
INSTALL_HINT = "pip install noto-cjk-sans-otc"

_chosen: str | None = None
_searched = False


def bundled_font_path() -> Path | None:
    """pip 包里字体文件的路径；包没装时返回 None（只查找包的位置，不导入它）。"""
    spec = importlib.util.find_spec(FONT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FONT_FILE
    return path if path.is_file() else None


def _register_bundled() -> str | None:
    """注册 pip 包里的字体，返回要用的字体名。"""
    from matplotlib import font_manager

    path = bundled_font_path()
    if path is None:
        return None
    before = len(font_manager.fontManager.ttflist)
    font_manager.fontManager.addfont(str(path))
    names = {e.name for e in font_manager.fontManager.ttflist[before:]}
    for name in PREFERRED:
        if name in names:
            return name
    return min(names) if names else None


def _system_font() -> str | None:
    from matplotlib import font_manager

    names = {e.name for e in font_manager.fontManager.ttflist}
    return next((n for n in SYSTEM_CJK_FONTS if n in names), None)


def cjk_font_name() -> str | None:
    """要用的中文字体名（第一次调用时查找并注册，之后直接返回）；找不到时警告一次并返回 None。"""
    global _chosen, _searched
    if not _searched:
        _chosen = _register_bundled() or _system_font()
        _searched = True
        if _chosen is None:
            warnings.warn(f"没有找到中文字体，图里的中文会显示成方框；请安装：{INSTALL_HINT}", stacklevel=3)
    return _chosen


def cjk_rc() -> dict[Any, Any]:  # 键是 rcParams 的名字（matplotlib 的类型存根把它写成 Literal）
    """使用中文字体所需的 rcParams；找不到中文字体时返回空字典。"""
    import matplotlib

    name = cjk_font_name()
    if name is None:
        return {}
    rest = [f for f in matplotlib.rcParams["font.sans-serif"] if f != name]
    return {"font.family": "sans-serif", "font.sans-serif": [name, *rest], "axes.unicode_minus": False}


def use_cjk_font() -> str | None:
    """让此后画的所有图都用中文字体（写入全局 rcParams）；返回字体名，找不到时返回 None。"""
    import matplotlib

    rc = cjk_rc()
    matplotlib.rcParams.update(rc)
    return rc["font.sans-serif"][0] if rc else None
