"""真正的 `python -m gpt_numpy serve` 子进程 + 官方 openai 客户端：普通与流式补全、参数、错误、负载、断开、信号。

只连本机回环地址；模型是测试自己写的随机权重小检查点。
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from server_helpers import env, get_json, server_process, write_tiny_ckpt  # noqa: E402

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "新华社北京电"}]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_ckpt(tmp_path_factory.mktemp("serve") / "ckpt")


@pytest.fixture(scope="module")
def base(ckpt: Path):
    with server_process("gpt_numpy", ckpt) as (url, _proc):
        yield url


def client(base: str):
    return openai.OpenAI(base_url=base + "/v1", api_key="not-needed", max_retries=0, timeout=60)


def stream_text(c, **kw) -> tuple[str, str | None, dict | None]:
    """流式请求：返回 (拼起来的文本, finish_reason, usage)。"""
    parts, reason, usage = [], None, None
    for ch in c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if ch.usage is not None:
            usage = ch.usage.model_dump()
        for choice in ch.choices:
            parts.append(choice.delta.content or "")
            reason = choice.finish_reason or reason
    return "".join(parts), reason, usage


def test_models_health_and_page(base: str) -> None:
    c = client(base)
    assert [m.id for m in c.models.list()] == ["tiny"]
    assert c.models.retrieve("tiny").id == "tiny"
    assert get_json(base + "/health")["status"] == "ok"
    page = httpx.get(base + "/").text
    assert "<textarea id=\"input\"" in page and "/static/app.js" in page and "http" not in page.split("<body>")[1]


def test_openai_plain_and_streaming_agree(base: str) -> None:
    c = client(base)
    kw = dict(model="tiny", messages=MSG, max_tokens=30, seed=7, temperature=1.0)
    r = c.chat.completions.create(**kw)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and r.model == "tiny" and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len("用户：新华社北京电\n助手：") and r.usage.completion_tokens == 30
    assert r.usage.total_tokens == r.usage.prompt_tokens + 30 and r.choices[0].finish_reason == "length"
    s_text, s_reason, s_usage = stream_text(c, **kw)
    assert s_text == text and len(text) > 0
    assert s_reason == "length" and s_usage == r.usage.model_dump()
    # 同样的种子 → 同样的文本；换一个种子 → 不同的文本；温度 0 与种子无关
    assert c.chat.completions.create(**kw).choices[0].message.content == text
    assert c.chat.completions.create(**{**kw, "seed": 8}).choices[0].message.content != text
    g = [c.chat.completions.create(**{**kw, "temperature": 0, "seed": s}).choices[0].message.content for s in (1, 2)]
    assert g[0] == g[1]


def test_stop_top_p_and_max_tokens(base: str) -> None:
    c = client(base)
    kw = dict(model="tiny", messages=MSG, max_tokens=40, seed=3)
    ref = c.chat.completions.create(**kw).choices[0].message.content
    stop = ref[12:14]
    want = ref[: ref.find(stop)]
    r = c.chat.completions.create(stop=[stop, "不会出现的字符串"], **kw)
    assert r.choices[0].message.content == want and r.choices[0].finish_reason == "stop"
    assert stream_text(c, stop=stop, **kw)[:2] == (want, "stop")
    r = c.chat.completions.create(**{**kw, "max_tokens": 5})
    assert r.usage.completion_tokens == 5 and r.choices[0].message.content == ref[:5]  # 字符级：一个词元一个字
    # top_p 很小时只剩概率最高的词元，等于贪心
    greedy = c.chat.completions.create(**{**kw, "temperature": 0}).choices[0].message.content
    assert c.chat.completions.create(**{**kw, "top_p": 1e-6}).choices[0].message.content == greedy


BAD = [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (json.dumps({"model": "nope", "messages": MSG}).encode(), 404, "model_not_found"),
    (json.dumps({"model": "tiny"}).encode(), 400, "missing_required_parameter"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "长" * 100}]}).encode(), 400,
     "context_length_exceeded"),
    (json.dumps({"model": "tiny", "messages": MSG, "temperature": -1}).encode(), 400, "invalid_value"),
    (json.dumps({"model": "tiny", "messages": MSG, "max_tokens": "many"}).encode(), 400, "invalid_type"),
    ("{\"model\": \"tiny\", \"messages\": \"\udcff\"}".encode("utf-8", "surrogatepass"), 400, "invalid_json"),
]


@pytest.mark.parametrize("body,status,code", BAD)
def test_bad_requests_get_openai_errors(base: str, body: bytes, status: int, code: str) -> None:
    r = httpx.post(base + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and "type" in err


def test_openai_client_sees_errors(base: str) -> None:
    c = client(base)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=MSG)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "长" * 100}])
    assert e.value.code == "context_length_exceeded" and "64" in e.value.message
    assert httpx.get(base + "/v1/nothing").json()["error"]["code"] == "not_found"
    assert httpx.get(base + "/v1/chat/completions").status_code == 405


def test_load_16_streams_with_50_malformed_requests(base: str) -> None:
    """16 个并发的流式客户端，中间穿插 50 个坏请求：流式回复全部完整，坏请求全部 4xx，服务器照常工作。"""

    async def main() -> tuple[list, list]:
        ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=120)
        hc = httpx.AsyncClient(timeout=60)

        async def streamer(i: int) -> tuple[str, str | None, int]:
            parts, reason, n = [], None, -1
            stream = await ac.chat.completions.create(model="tiny", messages=MSG, max_tokens=40, seed=100 + i,
                                                      stream=True, stream_options={"include_usage": True})
            async for ch in stream:
                if ch.usage:
                    n = ch.usage.completion_tokens
                for choice in ch.choices:
                    parts.append(choice.delta.content or "")
                    reason = choice.finish_reason or reason
            return "".join(parts), reason, n

        async def bad(i: int) -> int:
            await asyncio.sleep(0.01 * i)
            body, _, _ = BAD[i % len(BAD)]
            r = await hc.post(base + "/v1/chat/completions", content=body,
                              headers={"Content-Type": "application/json"})
            r.json()["error"]["message"]
            return r.status_code

        res = await asyncio.gather(*[streamer(i) for i in range(16)], *[bad(i) for i in range(50)])
        await hc.aclose()
        await ac.close()
        return res[:16], res[16:]

    t0 = time.time()
    streams, statuses = asyncio.run(main())
    assert time.time() - t0 < 120
    assert all(400 <= s < 500 for s in statuses), statuses
    c = client(base)
    for i, (text, reason, n) in enumerate(streams):
        ref = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=40, seed=100 + i)
        assert text == ref.choices[0].message.content, f"第 {i} 个流"
        assert reason == ref.choices[0].finish_reason and n == ref.usage.completion_tokens
    h = get_json(base + "/health")["models"]["tiny"]
    assert h["queued"] == 0 and h["failed"] == 0


CLIENT = """
import httpx, sys
body = {"model": "tiny", "messages": [{"role": "user", "content": "新华社"}], "max_tokens": 1000000, "stream": True}
with httpx.stream("POST", sys.argv[1] + "/v1/chat/completions", json=body, timeout=60) as r:
    for line in r.iter_lines():
        if '"content":"' in line and '"content":""' not in line:
            print("收到", flush=True)
"""


def test_client_killed_mid_stream_then_next_request_served(base: str) -> None:
    before = get_json(base + "/health")["models"]["tiny"]
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, base], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "收到"  # 它正在接收一个一百万词元的流
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        h = get_json(base + "/health")["models"]["tiny"]
        if h["queued"] == 0:
            break
        time.sleep(0.05)
    assert h["queued"] == 0 and h["cancelled"] == before["cancelled"] + 1
    t0 = time.time()
    r = client(base).chat.completions.create(model="tiny", messages=MSG, max_tokens=10, seed=1)
    assert r.usage.completion_tokens == 10 and time.time() - t0 < 10


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_on_signal(ckpt: Path, sig: signal.Signals) -> None:
    """正在流式生成（一百万词元）时收到信号：宽限 1 秒后生成停下，客户端收到“服务器正在关闭”的错误事件，
    进程几秒内退出，退出码 0，日志里没有回溯。"""
    with server_process("gpt_numpy", ckpt, "--graceful-timeout=1") as (url, proc):
        got, ended, told = threading.Event(), threading.Event(), threading.Event()

        def long_stream() -> None:
            body = {"model": "tiny", "messages": MSG, "max_tokens": 1000000, "stream": True}
            try:
                with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
                    for line in r.iter_lines():
                        if '"content":"' in line:
                            got.set()
                        if '"code":"cancelled"' in line:
                            told.set()
            except httpx.HTTPError:
                pass
            ended.set()

        th = threading.Thread(target=long_stream, daemon=True)
        th.start()
        assert got.wait(30)
        t0 = time.time()
        proc.send_signal(sig)
        code = proc.wait(timeout=20)
        out = proc.stdout.read()
        assert code == 0, out
        assert time.time() - t0 < 15
        assert ended.wait(10) and told.is_set()
        assert "Shutting down" in out and "Traceback" not in out


@pytest.mark.torch
def test_torch_track_serves_the_same_checkpoint(ckpt: Path) -> None:
    pytest.importorskip("torch")
    with server_process("gpt_torch", ckpt, "--device=cpu") as (url, _):
        c = client(url)
        kw = dict(model="tiny", messages=MSG, max_tokens=20, seed=5)
        r = c.chat.completions.create(**kw)
        assert r.usage.completion_tokens == 20 and r.choices[0].finish_reason == "length"
        assert stream_text(c, **kw)[0] == r.choices[0].message.content


def test_instruct_checkpoint_is_served_with_the_sft_template(tmp_path: Path) -> None:
    """第 7 章的指令模型（config.json 里 task = instruct）自动换用 SFT 时的 Alpaca 模板。"""
    ckpt = write_tiny_ckpt(tmp_path / "sft", context_length=256, extra={"task": "instruct", "lang": "zh"})
    with server_process("gpt_numpy", ckpt) as (url, proc):
        r = client(url).chat.completions.create(model="tiny", messages=MSG, max_tokens=5, seed=1)
        assert r.usage.completion_tokens == 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        out = proc.stdout.read()
    assert "对话模板 instruct-zh" in out
    with server_process("gpt_numpy", write_tiny_ckpt(tmp_path / "plain")) as (url, proc):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert "对话模板 zh-simple" in proc.stdout.read()


def test_serve_cli_errors_are_clear(ckpt: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gpt_numpy", "serve", *args], env=env(), capture_output=True,
                              text=True, timeout=120)

    r = run(f"--ckpt={tmp_path / 'none'}")
    assert r.returncode == 6 and "找不到检查点" in r.stderr and "Traceback" not in r.stderr  # 6：检查点错误
    r = run(f"--ckpt={ckpt}", "--port=70000")
    assert r.returncode == 2 and "--port" in r.stderr and "70000" in r.stderr  # 2：参数错误
