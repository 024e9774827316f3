"""服务器测试的公共工具：写一个随机权重的小检查点、在子进程或线程里启动服务器、等它就绪。"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CORPUS = (
    "用户助手系统：，。！？\n新华社北京电记者今天报道了人民代表大会的消息"
    "经济文化建设学校工厂农村<script>alert(1)</>"
)


def write_tiny_ckpt(directory: Path, context_length: int = 64, seed: int = 0,
                    extra: dict | None = None) -> Path:
    """随机权重的 gpt_numpy 小模型 + 字符级分词器，写成两条轨道都能读的检查点目录。

    词表里不放 <|endoftext|>：随机模型随时可能抽到它而提前结束，测试要的是可预期的长度。
    extra 写进 config.json（例如 {"task": "instruct"}，当作第 7 章的指令模型）。
    """
    import tinytensor as tt
    from gpt_numpy.model import GPTModel
    from llmcore.config import GPTConfig
    from llmcore.tokenizers import UNK, CharTokenizer

    tok = CharTokenizer.train(CORPUS, special_tokens=(UNK,))
    cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=context_length, emb_dim=32, n_heads=2, n_layers=2,
                    drop_rate=0.0)
    tt.manual_seed(seed)
    model = GPTModel(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory, extra=extra)
    tok.save(directory / "tokenizer.json")
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("OMP_NUM_THREADS", "1")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8"))


def wait_ready(base: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"服务器进程提前退出（退出码 {proc.returncode}）：\n{out}")
        with contextlib.suppress(OSError):
            if get_json(base + "/health", timeout=1.0)["status"] == "ok":
                return
        time.sleep(0.1)
    raise AssertionError(f"{timeout} 秒内服务器没有就绪：{base}")


@contextlib.contextmanager
def server_process(track: str, ckpt: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """python -m <track> serve 在子进程里运行；退出时发 SIGTERM 并等它结束。"""
    port = free_port()
    cmd = [sys.executable, "-m", track, "serve", f"--ckpt={ckpt}", f"--port={port}", "--model-name=tiny", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


@contextlib.contextmanager
def server_thread(engines: dict[str, Any], **kw: Any) -> Iterator[str]:
    """在本进程的一个线程里运行 uvicorn（浏览器测试与章节用）。"""
    import uvicorn

    from llmcore.server import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(engines, **kw), log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, timeout=30)
        yield base
    finally:
        server.should_exit = True
        th.join(timeout=20)
        sock.close()
