"""下载助手：file:// 与本地 HTTP 服务器、sha256 校验、镜像、HF_ENDPOINT、离线模式。不访问外网。"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from llmcore.datasets import registry
from llmcore.datasets import remote as dl

CONTENT = "这是一段用于测试下载的文本。\nThe quick brown fox.\n".encode() * 200
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMZH_CACHE", str(cache))
    for var in ("LLMZH_MIRROR", "LLMZH_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.fixture()
def source(tmp_path) -> Path:
    src = tmp_path / "remote" / "data.txt"
    src.parent.mkdir()
    src.write_bytes(CONTENT)
    return src


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # 保持测试输出干净
        pass


@pytest.fixture()
def http_root(tmp_path):
    """在随机端口上起一个本地 HTTP 服务器，根目录是 tmp_path/www。"""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith(".part")] if cache.exists() else []


def test_cache_dir_env(isolated_env) -> None:
    assert dl.cache_dir() == isolated_env


def test_cache_dir_default(monkeypatch) -> None:
    monkeypatch.delenv("LLMZH_CACHE")
    assert dl.cache_dir() == Path.home() / ".cache" / "llm-zh"


def test_file_url_download_and_cache_hit(source, isolated_env) -> None:
    path = dl.download(source.as_uri(), sha256=SHA, size=len(CONTENT), quiet=True)
    assert path == isolated_env / "data.txt" and path.read_bytes() == CONTENT
    source.unlink()  # 之后再取必须命中缓存，不再访问源
    assert dl.download(source.as_uri(), sha256=SHA, quiet=True) == path
    assert leftovers(isolated_env) == []


def test_http_download_into_subdir(http_root, isolated_env) -> None:
    root, base = http_root
    (root / "m").mkdir()
    (root / "m" / "w.bin").write_bytes(CONTENT)
    path = dl.download(f"{base}/m/w.bin", name="gpt2/w.bin", sha256=SHA, quiet=True)
    assert path == isolated_env / "gpt2" / "w.bin" and path.read_bytes() == CONTENT


def test_hash_mismatch_removes_file(source, isolated_env) -> None:
    wrong = "0" * 64
    with pytest.raises(dl.DownloadError, match=f"sha256 是 {SHA}，应为 {wrong}"):
        dl.download(source.as_uri(), sha256=wrong, quiet=True)
    assert not (isolated_env / "data.txt").exists()
    assert leftovers(isolated_env) == []


def test_size_mismatch_removes_file(source, isolated_env) -> None:
    with pytest.raises(dl.DownloadError, match=f"{len(CONTENT)} 字节，应为 5 字节"):
        dl.download(source.as_uri(), size=5, quiet=True)
    assert not (isolated_env / "data.txt").exists() and leftovers(isolated_env) == []


def test_corrupted_cache_is_replaced(source, isolated_env) -> None:
    isolated_env.mkdir(parents=True)
    (isolated_env / "data.txt").write_bytes(b"half-written")
    path = dl.download(source.as_uri(), sha256=SHA, quiet=True)
    assert path.read_bytes() == CONTENT


def test_missing_remote_file_is_clear_error(http_root, isolated_env) -> None:
    _, base = http_root
    with pytest.raises(dl.DownloadError, match="nothere.txt"):
        dl.download(f"{base}/nothere.txt", quiet=True)
    assert leftovers(isolated_env) == [] and not (isolated_env / "nothere.txt").exists()


def test_offline_mode(source, isolated_env, monkeypatch) -> None:
    monkeypatch.setenv("LLMZH_OFFLINE", "1")
    with pytest.raises(dl.NotCachedError, match=r"data\.txt") as exc:
        dl.download(source.as_uri(), sha256=SHA, quiet=True)
    assert str(isolated_env / "data.txt") in str(exc.value)
    assert not isolated_env.exists() or not any(isolated_env.iterdir())
    # 缓存里已有完好的文件时，离线模式照常可用
    monkeypatch.delenv("LLMZH_OFFLINE")
    dl.download(source.as_uri(), sha256=SHA, quiet=True)
    monkeypatch.setenv("LLMZH_OFFLINE", "true")
    assert dl.download(source.as_uri(), sha256=SHA, quiet=True).read_bytes() == CONTENT
    # 缓存损坏 + 离线：删除坏文件并报“缓存中没有”
    (isolated_env / "data.txt").write_bytes(b"bad")
    with pytest.raises(dl.NotCachedError):
        dl.download(source.as_uri(), sha256=SHA, quiet=True)
    assert not (isolated_env / "data.txt").exists()


def test_mirror_override_for_known_file(http_root, isolated_env, monkeypatch) -> None:
    root, base = http_root
    (root / "the-verdict.txt").write_bytes(CONTENT)
    fake = registry.RemoteFile("the-verdict.txt", "https://example.invalid/x.txt", SHA, len(CONTENT), "测试")
    monkeypatch.setitem(registry.KNOWN_FILES, "the-verdict.txt", fake)
    monkeypatch.setenv("LLMZH_MIRROR", base + "/")
    assert dl.fetch("the-verdict.txt", quiet=True).read_bytes() == CONTENT
    assert dl.load_the_verdict() == CONTENT.decode()


def test_hf_endpoint_rewrite(monkeypatch) -> None:
    url = "https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors"
    assert dl.resolve_url(url, "gpt2/model.safetensors") == url
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/hf/")
    assert dl.resolve_url(url, "gpt2/model.safetensors") == (
        "http://127.0.0.1:9/hf/openai-community/gpt2/resolve/main/model.safetensors"
    )
    other = "https://huggingface.company.example/x"
    assert dl.resolve_url(other, "x") == other
    monkeypatch.setenv("LLMZH_MIRROR", "file:///srv/mirror")
    assert dl.resolve_url(url, "gpt2/model.safetensors") == "file:///srv/mirror/gpt2/model.safetensors"


def test_registry_facts() -> None:
    verdict = registry.KNOWN_FILES["the-verdict.txt"]
    assert verdict.size == 20_479 and verdict.sha256.startswith("b41e41a6")
    assert registry.KNOWN_FILES["instruction-data.json"].size == 203_524
    assert all(f.url.startswith("https://") for f in registry.KNOWN_FILES.values())
    with pytest.raises(KeyError, match="nope"):
        dl.fetch("nope")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd"])
def test_bad_cache_names(name, source) -> None:
    with pytest.raises(ValueError, match="不合法"):
        dl.download(source.as_uri(), name=name, quiet=True)
