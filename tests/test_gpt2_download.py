"""download_gpt2：名字解析、HF_ENDPOINT、缓存、断线与 404（file:// 与本地 http.server，不联网）。"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from gpt_testutil import hf_config, hf_state, write_hf_dir

from gpt_numpy.pretrained import load_hf_gpt2
from llmcore import gpt2_download
from llmcore.datasets.remote import DownloadError, NotCachedError, resolve_url
from llmcore.gpt2_download import download_gpt2, gpt2_repo_name, gpt2_url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path, request):
    for k in ("HF_ENDPOINT", "LLMZH_OFFLINE", "LLMZH_MIRROR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LLMZH_CACHE", str(tmp_path / "default-cache"))
    if "keep_known_hashes" not in request.keywords:
        # 测试用的小检查点当然不是真正的 GPT-2 权重：除专门的测试外，不比对已知的哈希
        monkeypatch.setattr(gpt2_download, "KNOWN_HASHES", {})


@pytest.mark.keep_known_hashes
def test_known_hash_rejects_a_wrong_file(monkeypatch, tmp_path):
    """gpt2 的 config.json 与 model.safetensors 有已核实的 sha256 与大小：内容不对的文件被拒绝并删除。"""
    make_hub(tmp_path / "hub", "gpt2")
    monkeypatch.setenv("HF_ENDPOINT", (tmp_path / "hub").as_uri())
    with pytest.raises(DownloadError, match="config.json .*665"):
        download_gpt2("124M", cache_dir=tmp_path / "cache", quiet=True)
    assert not (tmp_path / "cache" / "gpt2" / "config.json").exists()
    known = {k: v for k, v in gpt2_download.KNOWN_HASHES.items() if k[1] == "model.safetensors"}
    monkeypatch.setattr(gpt2_download, "KNOWN_HASHES", known)
    with pytest.raises(DownloadError, match="548105171"):
        download_gpt2("124M", cache_dir=tmp_path / "cache", quiet=True)
    assert not (tmp_path / "cache" / "gpt2" / "model.safetensors").exists()
    assert not list((tmp_path / "cache" / "gpt2").glob(".*part"))


def make_hub(root: Path, name: str = "gpt2") -> Path:
    """在 root 下按 {endpoint}/openai-community/{name}/resolve/main/ 的布局放一个小检查点。"""
    return write_hf_dir(root / "openai-community" / name / "resolve" / "main", hf_config(), hf_state(hf_config()))


@pytest.mark.parametrize(
    "size,name",
    [("124M", "gpt2"), ("gpt2", "gpt2"), ("gpt2-small", "gpt2"), ("355m", "gpt2-medium"), ("774M", "gpt2-large"),
     ("1558M", "gpt2-xl"), ("openai-community/gpt2-xl", "gpt2-xl"), ("GPT2-Medium", "gpt2-medium")],
)
def test_repo_names(size, name):
    assert gpt2_repo_name(size) == name


def test_unknown_size():
    with pytest.raises(ValueError, match="未知的 GPT-2 规模 '7B'"):
        gpt2_repo_name("7B")


def test_url_and_hf_endpoint(monkeypatch):
    url = gpt2_url("gpt2-xl", "config.json")
    assert url == "https://huggingface.co/openai-community/gpt2-xl/resolve/main/config.json"
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    assert resolve_url(url, "gpt2-xl/config.json") == "https://hf-mirror.com/openai-community/gpt2-xl/resolve/main/config.json"


def test_download_from_file_endpoint_then_cached(monkeypatch, tmp_path):
    src = make_hub(tmp_path / "hub", "gpt2-medium")
    monkeypatch.setenv("HF_ENDPOINT", (tmp_path / "hub").as_uri())
    d = download_gpt2("355M", cache_dir=tmp_path / "cache", quiet=True)
    assert d == tmp_path / "cache" / "gpt2-medium"
    for f in ("config.json", "model.safetensors"):
        assert (d / f).read_bytes() == (src / f).read_bytes()
    assert not list(d.glob(".*part"))
    m = load_hf_gpt2(d)
    assert m.cfg.emb_dim == 16
    # 第二次直接用缓存：源文件删掉也没关系
    for f in src.iterdir():
        f.unlink()
    assert download_gpt2("gpt2-medium", cache_dir=tmp_path / "cache", quiet=True) == d


def test_default_cache_dir_from_env(monkeypatch, tmp_path):
    make_hub(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", (tmp_path / "hub").as_uri())
    d = download_gpt2(quiet=True)
    assert d == tmp_path / "default-cache" / "gpt2" and (d / "model.safetensors").is_file()


def test_offline_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMZH_OFFLINE", "1")
    with pytest.raises(NotCachedError, match="离线模式"):
        download_gpt2("124M", cache_dir=tmp_path, quiet=True)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # 测试时不打印访问日志
        pass

    def do_GET(self):
        if self.path.startswith("/truncate/"):  # 声称 1000 字节却只发 10 字节就断开
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_over_http(server, monkeypatch, tmp_path):
    root, url = server
    src = make_hub(root, "gpt2-large")
    monkeypatch.setenv("HF_ENDPOINT", url)
    d = download_gpt2("774M", cache_dir=tmp_path / "c", quiet=True)
    assert (d / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    np.testing.assert_array_equal(load_hf_gpt2(d).pos_emb.weight.data.shape, (12, 16))


def test_http_404_and_truncated_leave_no_file(server, monkeypatch, tmp_path):
    _, url = server
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(DownloadError, match="404"):
        download_gpt2("gpt2-xl", cache_dir=tmp_path / "c", quiet=True)
    monkeypatch.setenv("HF_ENDPOINT", url + "/truncate")
    with pytest.raises(DownloadError, match="只收到 10 / 1000 字节"):
        download_gpt2("gpt2", cache_dir=tmp_path / "c", quiet=True)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


def test_cache_dir_argument_does_not_leak_into_env(monkeypatch, tmp_path):
    import os

    make_hub(tmp_path / "hub")
    monkeypatch.setenv("HF_ENDPOINT", (tmp_path / "hub").as_uri())
    download_gpt2(cache_dir=tmp_path / "elsewhere", quiet=True)
    assert os.environ["LLMZH_CACHE"] == str(tmp_path / "default-cache")
    assert not (tmp_path / "default-cache").exists()


def test_timeout_is_passed_through(monkeypatch, tmp_path):
    """服务器接受连接却从不回应：timeout 很小时很快报 DownloadError，而不是一直等下去。"""
    import socket
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # 不 accept：连接能建立，但永远收不到回应
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        t0 = time.perf_counter()
        with pytest.raises(DownloadError):
            download_gpt2("gpt2", cache_dir=tmp_path / "c", quiet=True, timeout=0.3)
        assert time.perf_counter() - t0 < 10
    finally:
        srv.close()
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
