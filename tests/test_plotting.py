"""中文字体（llmcore/plotting.py）：pip 包里的字体能找到、能注册，中文标题与标签画出来不缺字形，
训练写出的 loss.png 也用它，而且画 loss.png 不会切换 matplotlib 的后端。"""

from __future__ import annotations

import warnings

import matplotlib
import pytest
from matplotlib import font_manager
from matplotlib.figure import Figure

from llmcore import plotting
from llmcore.report import plot_losses

ZH_TEXT = "训练损失与验证损失（−0.5 处的负号）"


def _draw_and_collect(fig: Figure) -> list[str]:
    """画一遍图（Agg），返回期间出现的“缺字形”警告。"""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def _zh_figure() -> Figure:
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.plot([0, 1, 2], [-0.5, 0.3, 1.0], label="验证损失")
    ax.set_title(ZH_TEXT)
    ax.set_xlabel("步数")
    ax.set_ylabel("交叉熵损失")
    ax.legend()
    return fig


def test_bundled_font_is_installed() -> None:
    path = plotting.bundled_font_path()
    assert path is not None, f"没有装字体包：{plotting.INSTALL_HINT}"
    assert path.name == plotting.FONT_FILE and path.stat().st_size > 1_000_000


def test_bundled_font_is_registered_and_chosen() -> None:
    name = plotting.cjk_font_name()
    assert name in plotting.PREFERRED
    path = str(plotting.bundled_font_path())
    assert any(e.fname == path and e.name == name for e in font_manager.fontManager.ttflist)
    found = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
    font = font_manager.get_font(found)
    assert all(font.get_char_index(ord(ch)) for ch in "训练损失验证步数交叉熵")


def test_chinese_figure_has_no_missing_glyphs() -> None:
    with matplotlib.rc_context(plotting.cjk_rc()):
        assert _draw_and_collect(_zh_figure()) == []


def test_without_the_helper_glyphs_are_missing() -> None:
    """反面对照：只用 DejaVu Sans 时确实会出现缺字形的警告（说明上面的检查是有效的）。"""
    rc = {"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}
    with matplotlib.rc_context(rc):
        assert _draw_and_collect(_zh_figure())


def test_use_cjk_font_sets_global_rcparams() -> None:
    before = list(matplotlib.rcParams["font.sans-serif"])
    with matplotlib.rc_context():
        name = plotting.use_cjk_font()
        assert name == plotting.cjk_font_name()
        assert matplotlib.rcParams["font.sans-serif"][0] == name
        assert matplotlib.rcParams["axes.unicode_minus"] is False
    assert matplotlib.rcParams["font.sans-serif"] == before  # rc_context 结束后恢复


HISTORY = [
    {"type": "train", "step": 0, "loss": 8.5},
    {"type": "eval", "step": 0, "train_loss": 8.4, "val_loss": 8.5},
    {"type": "train", "step": 10, "loss": 6.1},
    {"type": "eval", "step": 10, "train_loss": 6.0, "val_loss": 6.3},
]


def _is_zh(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_loss_png_uses_the_cjk_font(tmp_path, monkeypatch) -> None:
    fonts: dict[str, str] = {}  # 保存图片那一刻，每段中文文字实际用到的字体
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        for t in self.findobj(matplotlib.text.Text):
            if _is_zh(t.get_text()):
                found = font_manager.findfont(t.get_fontproperties(), fallback_to_default=False)
                fonts[t.get_text()] = font_manager.get_font(found).family_name
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    backend = matplotlib.get_backend()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = plot_losses(HISTORY, tmp_path / "loss.png", tokens_per_step=2048)
    assert out == tmp_path / "loss.png" and out.stat().st_size > 0
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert matplotlib.get_backend() == backend, "画 loss.png 不应切换后端（notebook 里之后的图会显示不出来）"
    assert {"步数", "交叉熵损失", "已见词元数", "验证损失（评估）"} <= set(fonts)
    assert set(fonts.values()) == {plotting.cjk_font_name()}


def test_no_font_falls_back_to_english_labels(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("llmcore.plotting.cjk_rc", lambda: {})
    figures: list[Figure] = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), original(self, *a, **k))[1])
    plot_losses(HISTORY, tmp_path / "loss.png")
    labels = {t.get_text() for t in figures[0].findobj(matplotlib.text.Text)}
    assert "step" in labels and "cross-entropy loss" in labels


def test_missing_everything_warns_once(monkeypatch) -> None:
    monkeypatch.setattr(plotting, "_searched", False)
    monkeypatch.setattr(plotting, "_chosen", None)
    monkeypatch.setattr(plotting, "_register_bundled", lambda: None)
    monkeypatch.setattr(plotting, "_system_font", lambda: None)
    with pytest.warns(UserWarning, match="noto-cjk-sans-otc"):
        assert plotting.cjk_rc() == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plotting.cjk_font_name() is None


def test_bundled_font_alone_is_enough(monkeypatch) -> None:
    """把系统里的中文字体从 matplotlib 的字体表里拿掉，只剩 pip 包里的那个，中文照样不缺字形。"""
    name = plotting.cjk_font_name()
    bundled = str(plotting.bundled_font_path())
    fm = font_manager.fontManager
    system_cjk = {e.name for e in fm.ttflist if "CJK" in e.name} | set(plotting.SYSTEM_CJK_FONTS)
    kept = [e for e in fm.ttflist if e.fname == bundled or e.name not in system_cjk]
    monkeypatch.setattr(fm, "ttflist", kept)
    fm._findfont_cached.cache_clear()
    try:
        with matplotlib.rc_context(plotting.cjk_rc()):
            assert str(font_manager.findfont(font_manager.FontProperties(family=name))) == bundled
            assert _draw_and_collect(_zh_figure()) == []
    finally:
        monkeypatch.undo()
        fm._findfont_cached.cache_clear()
