"""统一的下载助手：缓存目录、sha256 校验、流式写临时文件再原子改名、镜像与离线模式。

环境变量：
- `LLMZH_CACHE`：缓存目录，默认 `~/.cache/llm-zh`；
- `LLMZH_MIRROR`：镜像根地址（http(s):// 或 file://），设置后文件从 `<镜像>/<name>` 获取；
- `HF_ENDPOINT`：Hugging Face 镜像，替换 `https://huggingface.co` 前缀（国内用户常用）；
- `LLMZH_OFFLINE=1`：离线模式，只用缓存，缓存里没有就报错并说明该把文件放在哪里。

保证：缓存目录里只会出现完整且校验通过的文件。下载写入同目录下的临时文件，校验通过后
`os.replace` 改名；校验失败、网络中断或被打断时删除临时文件。已缓存但校验失败的文件会被删除。
只用标准库 urllib。
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import EXIT_DOWNLOAD, LLMError
from .registry import KNOWN_FILES, RemoteFile

ENV_CACHE = "LLMZH_CACHE"
ENV_MIRROR = "LLMZH_MIRROR"
ENV_OFFLINE = "LLMZH_OFFLINE"
HF_PREFIX = "https://huggingface.co"
CHUNK = 1 << 20


class DownloadError(LLMError, RuntimeError):
    """下载失败或内容校验不通过。"""

    exit_code = EXIT_DOWNLOAD


class NotCachedError(LLMError, FileNotFoundError):
    """离线模式下缓存里没有所需文件。"""

    exit_code = EXIT_DOWNLOAD


def cache_dir() -> Path:
    """缓存目录：`LLMZH_CACHE`，缺省为 `~/.cache/llm-zh`。"""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llm-zh"


def is_offline() -> bool:
    """是否处于离线模式（`LLMZH_OFFLINE` 为 1/true/yes/on）。"""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_url(url: str, name: str) -> str:
    """按镜像设置改写下载地址：`LLMZH_MIRROR` 优先，其次对 huggingface.co 应用 `HF_ENDPOINT`。"""
    mirror = os.environ.get(ENV_MIRROR)
    if mirror:
        return mirror.rstrip("/") + "/" + name
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint and (url == HF_PREFIX or url.startswith(HF_PREFIX + "/")):
        return endpoint.rstrip("/") + url[len(HF_PREFIX) :]
    return url


def sha256_of(path: Path) -> str:
    """文件的 sha256（十六进制）。"""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_cached(path: Path, sha256: str | None, size: int | None) -> bool:
    """已缓存文件是否完好；不完好就删除它并返回 False。"""
    if not path.is_file():
        return False
    bad_size = size is not None and path.stat().st_size != size
    if bad_size or (sha256 is not None and sha256_of(path) != sha256):
        print(f"缓存文件 {path} 校验失败，已删除", file=sys.stderr)
        path.unlink()
        return False
    return True


def download(
    url: str,
    name: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    force: bool = False,
    timeout: float = 60.0,
    quiet: bool = False,
    cache_root: str | Path | None = None,
) -> Path:
    """把 url 下载到 `cache_root/name` 并返回路径；已缓存且完好则直接返回。

    name 缺省取 url 的文件名；cache_root 缺省为 `cache_dir()`（环境变量 LLMZH_CACHE）。
    """
    name = name or url.rstrip("/").rsplit("/", 1)[-1]
    if not name or name.startswith("/") or ".." in Path(name).parts:
        raise ValueError(f"缓存文件名 {name!r} 不合法：应是缓存目录下的相对路径")
    dest = (Path(cache_root).expanduser() if cache_root is not None else cache_dir()) / name
    if not force and _check_cached(dest, sha256, size):
        return dest
    if is_offline():
        raise NotCachedError(
            f"离线模式（{ENV_OFFLINE}=1）下缓存中没有 {name}：请在联网时运行一次，"
            f"或手动下载 {url} 并放到 {dest}"
        )
    real_url = resolve_url(url, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        if not quiet:
            print(f"下载 {name} ← {real_url}", file=sys.stderr)
        h = hashlib.sha256()
        n = 0
        expected_len: int | None = None
        req = urllib.request.Request(real_url, headers={"User-Agent": "llm-zh-downloader"})
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                expected_len = int(length) if length and length.isdigit() else None
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    n += len(block)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
            raise DownloadError(
                f"下载 {name} 失败（{real_url}）：{reason}；请检查网络，或设置 {ENV_MIRROR} 指向镜像，"
                f"或手动把文件放到 {dest}"
            ) from e
        if expected_len is not None and n != expected_len:
            raise DownloadError(
                f"{name} 只收到 {n} / {expected_len} 字节，连接中断（{real_url}）；已删除不完整的文件"
            )
        if size is not None and n != size:
            raise DownloadError(f"{name} 下载到 {n} 字节，应为 {size} 字节（{real_url}）；已删除不完整的文件")
        got = h.hexdigest()
        if sha256 is not None and got != sha256:
            raise DownloadError(
                f"{name} 的 sha256 是 {got}，应为 {sha256}（{real_url}）：镜像或缓存里的文件不对，已删除该文件"
            )
        if sha256 is None and not quiet:
            print(f"注意：{name} 没有登记的 sha256，未校验（实际 sha256 = {got}）", file=sys.stderr)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(name: str, force: bool = False, quiet: bool = False) -> Path:
    """按登记表 (`KNOWN_FILES`) 里的名字获取文件，返回其缓存路径。"""
    f: RemoteFile | None = KNOWN_FILES.get(name)
    if f is None:
        raise KeyError(f"未登记的文件 {name!r}；已登记的有：{sorted(KNOWN_FILES)}")
    return download(f.url, f.name, f.sha256, f.size, force=force, quiet=quiet)


def load_the_verdict() -> str:
    """原书第 2 章的英文短篇 The Verdict 全文（首次使用时下载）。"""
    return fetch("the-verdict.txt").read_text(encoding="utf-8")
