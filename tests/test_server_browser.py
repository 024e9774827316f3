"""真实浏览器里的聊天页面：Debian 的 chromium（.ci/run 安装）由 Playwright 驱动。

输入消息 → 回复逐字流入 → 按“停止”（服务器端那次生成随之取消）→ 发第二条消息 → 截图；
模型输出里的 <script>、<img onerror> 只显示为文字，不执行。没有 chromium 时跳过（并说明原因）。
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="没有 chromium 可执行文件（apt-get install chromium fonts-noto-cjk）"),
]

from server_helpers import get_json, server_thread, write_tiny_ckpt  # noqa: E402

EVIL = "看这里：<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> **粗体** `a<b>`\n"


class SlowEngine:
    """包住真正的 GPTEngine，每个词元之后停 30 毫秒，让“流入”和“停止”在浏览器里看得见。"""

    def __init__(self, inner) -> None:
        self.inner, self.context_length, self.stop = inner, inner.context_length, inner.stop
        self.encode_chat, self.decode = inner.encode_chat, inner.decode

    def stream(self, *args) -> Iterator[int]:
        for tok in self.inner.stream(*args):
            time.sleep(0.03)
            yield tok


class ScriptedEngine:
    """照本宣科的引擎：无论问什么，都逐字输出同一段文字（用来检验页面如何显示恶意的模型输出）。"""

    context_length, stop = 4096, ()

    def __init__(self, text: str) -> None:
        self.text = text

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        return [ord(c) for m in messages for c in m["content"]]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)

    def stream(self, ids, temperature, top_k, top_p, seed, n) -> Iterator[int]:
        for c in self.text[:n]:
            yield ord(c)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from gpt_numpy.__main__ import TRACK
    from llmcore.cli import load_tokenizer_for
    from llmcore.config import TrainConfig
    from llmcore.server import GPTEngine

    ckpt = write_tiny_ckpt(tmp_path_factory.mktemp("browser") / "ckpt", context_length=256)
    engine = GPTEngine(TRACK.load_model(ckpt, TrainConfig()), load_tokenizer_for(ckpt), TRACK.stream)
    with server_thread({"tiny": SlowEngine(engine), "script": ScriptedEngine(EVIL)}) as url:
        yield url


@pytest.fixture
def page(base: str):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        pg = browser.new_page(viewport={"width": 1100, "height": 720})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(base + "/")
        pg.wait_for_function("document.querySelectorAll('#model option').length === 2")
        yield pg
        browser.close()
        assert not errors, errors


def _reply_len(pg, i: int) -> int:
    return pg.evaluate(f"document.querySelectorAll('.msg.assistant .body')[{i}].textContent.length")


def test_stream_stop_and_second_message(base: str, page, tmp_path: Path) -> None:
    pg = page
    pg.select_option("#model", "tiny")
    pg.fill("#max_tokens", "200")
    pg.fill("#input", "你好，请介绍一下北京")
    pg.press("#input", "Enter")
    pg.wait_for_function("(document.querySelector('.msg.assistant .body') || {textContent: ''})"
                         ".textContent.length >= 3")
    first = _reply_len(pg, 0)
    pg.wait_for_function(f"document.querySelector('.msg.assistant .body').textContent.length > {first + 3}")
    assert pg.get_attribute(".msg.assistant", "data-state") == "streaming"  # 还在一个个地流入
    assert pg.is_enabled("#stop") and not pg.is_enabled("#send")
    pg.click("#stop")
    pg.wait_for_selector('.msg.assistant[data-state="stopped"]')
    stopped_at = _reply_len(pg, 0)
    assert 3 <= stopped_at < 200
    deadline = time.time() + 10  # 服务器端：这次生成被取消，而不是跑满 200 个词元
    while get_json(base + "/health")["models"]["tiny"]["queued"] and time.time() < deadline:
        time.sleep(0.05)
    h = get_json(base + "/health")["models"]["tiny"]
    assert h["queued"] == 0 and h["cancelled"] == 1 and h["tokens"] < 200
    time.sleep(0.3)
    assert _reply_len(pg, 0) == stopped_at  # 停止后不再增长

    pg.fill("#max_tokens", "12")
    pg.fill("#input", "第二个问题")
    pg.click("#send")
    pg.wait_for_selector('.msg.assistant[data-state="done"]', timeout=30000)
    assert pg.locator(".msg.user").count() == 2 and pg.locator(".msg.assistant").count() == 2
    assert _reply_len(pg, 1) > 0
    assert pg.inner_text(".msg.user >> nth=0") .endswith("你好，请介绍一下北京")
    assert "完成：12 个词元" in pg.inner_text("#status")
    shot = tmp_path / "chat.png"
    pg.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_model_output_html_is_shown_as_text(page) -> None:
    pg = page
    pg.select_option("#model", "script")
    pg.fill("#input", "随便说点什么")
    pg.press("#input", "Enter")
    pg.wait_for_selector('.msg.assistant[data-state="done"]')
    body = pg.locator(".msg.assistant .body")
    text = body.inner_text()
    assert "<script>window.__pwned = 1</script>" in text and "<img src=x onerror=" in text
    assert body.locator("script, img").count() == 0
    assert pg.evaluate("window.__pwned") is None
    assert body.locator("strong").inner_text() == "粗体"  # Markdown 照常生效
    assert body.locator("code").inner_text() == "a<b>"
