"""Ollama 评委客户端：对着测试自己启动的回环服务器（说同样的协议）测 /api/generate、/api/chat、/api/tags；
服务没开、超时、模型不存在时给清楚的中文错误，绝不挂起。"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmcore.errors import LLMError
from llmcore.finetune.judge import JudgeError, OllamaJudge, parse_score


class FakeOllama(BaseHTTPRequestHandler):
    seen: list[dict] = []
    delay = 0.0

    def log_message(self, *args):  # 不往测试输出里打印访问日志
        pass

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode("utf-8")
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # 客户端已因超时离开
            pass

    def do_GET(self):
        if self.path == "/api/tags":
            self._send(200, {"models": [{"name": "judge:latest"}, {"name": "other:1b"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, **req})
        time.sleep(type(self).delay)
        if req.get("model") != "judge":
            self._send(404, {"error": f"model '{req.get('model')}' not found"})
        elif self.path == "/api/generate":
            assert req["stream"] is False and req["options"]["temperature"] == 0
            self._send(200, {"model": "judge", "response": "85 分", "done": True})
        elif self.path == "/api/chat":
            self._send(200, {"model": "judge", "message": {"role": "assistant", "content": "你好"}, "done": True})
        else:
            self._send(404, {"error": "not found"})


@pytest.fixture
def server():
    FakeOllama.seen, FakeOllama.delay = [], 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_generate_chat_and_score(server):
    j = OllamaJudge("judge", server, timeout=5)
    j.check()
    assert j.models() == ["judge:latest", "other:1b"]
    assert j.generate("打分") == "85 分"
    assert j.chat([{"role": "user", "content": "嗨"}]) == "你好"
    entry = {"instruction": "把下面的繁体中文改写成简体中文。", "input": "藍天", "output": "蓝天"}
    assert j.score(entry, "蓝天") == 85
    prompt = FakeOllama.seen[-1]["prompt"]
    assert "藍天" in prompt and "蓝天" in prompt and "0 到 100" in prompt
    assert j.score_all([entry], ["蓝天"], lang="en") == [85]
    assert "scale from 0 to 100" in FakeOllama.seen[-1]["prompt"]


def test_missing_model(server):
    j = OllamaJudge("nope", server, timeout=5)
    with pytest.raises(JudgeError, match="ollama pull nope"):
        j.check()
    with pytest.raises(JudgeError, match="404.*ollama pull nope"):
        j.generate("x")


def test_no_server_is_quick_and_clear():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # 这个端口上没有服务
    j = OllamaJudge("judge", f"http://127.0.0.1:{port}", timeout=5)
    t0 = time.monotonic()
    with pytest.raises(JudgeError, match="连不上评委服务.*ollama serve") as info:
        j.generate("x")
    assert time.monotonic() - t0 < 5 and isinstance(info.value, LLMError)


def test_timeout_never_hangs(server):
    FakeOllama.delay = 2.0
    j = OllamaJudge("judge", server, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(JudgeError, match="超时"):
        j.generate("x")
    assert time.monotonic() - t0 < 1.9


def test_bad_arguments_and_parse():
    with pytest.raises(JudgeError, match="http://"):
        OllamaJudge("judge", "localhost:11434")
    with pytest.raises(JudgeError, match="超时应为正数"):
        OllamaJudge("judge", timeout=0)
    assert parse_score("评分：92。") == 92 and parse_score("无法评分") is None and parse_score("150") is None
