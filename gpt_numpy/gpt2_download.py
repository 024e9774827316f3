"""下载 OpenAI 发布的 GPT-2 权重（Hugging Face 格式：config.json + model.safetensors）。

    path = download_gpt2("124M")          # 或 "gpt2"、"355M"/"gpt2-medium"、"774M"/"gpt2-large"、"1558M"/"gpt2-xl"
    model = load_hf_gpt2(path)            # gpt_numpy.pretrained 或 gpt_torch.pretrained

地址为 ``{HF_ENDPOINT}/openai-community/{name}/resolve/main/{文件}``，HF_ENDPOINT 缺省为
https://huggingface.co（国内可设为镜像，如 https://hf-mirror.com）。文件缓存在
``{cache_dir}/{name}/`` 下，cache_dir 缺省为环境变量 LLMZH_CACHE 或 ~/.cache/llm-zh；
已下载的文件不会重复下载。LLMZH_OFFLINE=1 时只用缓存。
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

HF_PREFIX = "https://huggingface.co"
OWNER = "openai-community"
GPT2_FILES = ("config.json", "model.safetensors")
SIZE_TO_NAME = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
ALIASES = {"gpt2-small": "gpt2"}
CHUNK = 1 << 20


class GPT2DownloadError(RuntimeError):
    """GPT-2 权重下载失败。"""


def gpt2_repo_name(model_size: str) -> str:
    """"124M" / "gpt2" / "openai-community/gpt2" 等写法 → Hugging Face 上的模型名（如 "gpt2-medium"）。"""
    s = model_size.strip()
    s = s.split("/", 1)[1] if s.startswith(OWNER + "/") else s
    s = SIZE_TO_NAME.get(s.upper(), ALIASES.get(s.lower(), s.lower()))
    if s not in SIZE_TO_NAME.values():
        choices = ", ".join([*SIZE_TO_NAME, *SIZE_TO_NAME.values()])
        raise ValueError(f"未知的 GPT-2 规模 {model_size!r}；可选：{choices}")
    return s


def gpt2_url(name: str, filename: str) -> str:
    """某个文件的下载地址；设置了 HF_ENDPOINT 时替换 huggingface.co。"""
    base = os.environ.get("HF_ENDPOINT", "").strip() or HF_PREFIX
    return f"{base.rstrip('/')}/{OWNER}/{name}/resolve/main/{filename}"


def default_cache_dir() -> Path:
    """与数据下载助手相同的缓存目录：LLMZH_CACHE，缺省 ~/.cache/llm-zh。"""
    env = os.environ.get("LLMZH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llm-zh"


def download_gpt2(model_size: str = "124M", cache_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """下载（或直接取缓存中的）GPT-2 权重，返回含 config.json 与 model.safetensors 的目录。"""
    name = gpt2_repo_name(model_size)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / name
    for filename in GPT2_FILES:
        _fetch(gpt2_url(name, filename), target / filename, quiet)
    return target


# TODO(text-data)：gpt_numpy/datasets/download.py（text-data 分支，尚未提交）合并后，改为调用其
# download()：它另有 sha256 校验与 LLMZH_MIRROR 支持，但目前只接受缓存目录下的相对名字、不接受
# 任意 cache_dir，需要它加一个目标目录参数（或在 cache_dir 为 None 时调用 download(url, f"{name}/{file}")）。
def _fetch(url: str, dest: Path, quiet: bool) -> Path:
    """把 url 下载到 dest：先写同目录临时文件，完整收到后再原子改名；dest 已存在则跳过。"""
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    if os.environ.get("LLMZH_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise GPT2DownloadError(
            f"离线模式（LLMZH_OFFLINE）下缓存中没有 {dest}：请联网运行一次，或手动下载 {url} 放到该处"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        if not quiet:
            print(f"下载 {url} → {dest}", file=sys.stderr)
        n, expected = 0, None
        req = urllib.request.Request(url, headers={"User-Agent": "llm-zh-downloader"})
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=60) as resp:
                length = resp.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    n += len(block)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise GPT2DownloadError(
                f"下载失败（{url}）：{e}；国内可设置 HF_ENDPOINT 指向镜像，或手动把文件放到 {dest}"
            ) from e
        if expected is not None and n != expected:
            raise GPT2DownloadError(f"{url} 只收到 {n} / {expected} 字节，连接中断；已删除不完整的文件")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


__all__ = ["GPT2DownloadError", "download_gpt2", "gpt2_repo_name", "gpt2_url"]
