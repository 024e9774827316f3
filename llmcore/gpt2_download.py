"""下载 OpenAI 发布的 GPT-2 权重（Hugging Face 格式：config.json + model.safetensors）。

    path = download_gpt2("124M")          # 或 "gpt2"、"355M"/"gpt2-medium"、"774M"/"gpt2-large"、"1558M"/"gpt2-xl"
    model = load_hf_gpt2(path)            # gpt_numpy.pretrained 或 gpt_torch.pretrained

地址为 ``https://huggingface.co/openai-community/{name}/resolve/main/{文件}``。实际下载交给
项目统一的下载助手 llmcore.datasets.remote.download，所以同样支持：HF_ENDPOINT（国内可设为
镜像，如 https://hf-mirror.com）、LLMZH_MIRROR、LLMZH_OFFLINE=1（只用缓存）、原子写入。
文件缓存在 ``{cache_dir}/{name}/`` 下；cache_dir 缺省为下载助手的缓存目录（LLMZH_CACHE，缺省 ~/.cache/llm-zh）。
"""

from __future__ import annotations

from pathlib import Path

from .datasets import remote

HF_PREFIX = "https://huggingface.co"
OWNER = "openai-community"
GPT2_FILES = ("config.json", "model.safetensors")
SIZE_TO_NAME = {"124M": "gpt2", "355M": "gpt2-medium", "774M": "gpt2-large", "1558M": "gpt2-xl"}
ALIASES = {"gpt2-small": "gpt2"}
# 已核实的校验值 (sha256, 字节数)：openai-community/gpt2 在 Hugging Face 上的版本 607a30d7（多个公开项目
# 独立记下的同一组值）。其余规模的文件还没有能核实的公开值：下载后打印算出的哈希，不做比对。
KNOWN_HASHES: dict[tuple[str, str], tuple[str, int]] = {
    ("gpt2", "model.safetensors"): ("248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707", 548_105_171),
    ("gpt2", "config.json"): ("0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4", 665),
}


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
    """某个文件在 Hugging Face 上的原始地址（镜像的替换由下载助手完成）。"""
    return f"{HF_PREFIX}/{OWNER}/{name}/resolve/main/{filename}"


def download_gpt2(
    model_size: str = "124M", cache_dir: str | Path | None = None, quiet: bool = False, timeout: float = 60.0
) -> Path:
    """下载（或直接取缓存中的）GPT-2 权重，返回含 config.json 与 model.safetensors 的目录。

    timeout 是每次网络操作（连接、每次读取）的超时秒数；离线环境里可设小一些，免得久等。
    """
    name = gpt2_repo_name(model_size)
    paths = []
    for f in GPT2_FILES:
        sha, size = KNOWN_HASHES.get((name, f), (None, None))
        paths.append(remote.download(
            gpt2_url(name, f), f"{name}/{f}", sha, size, quiet=quiet, cache_root=cache_dir, timeout=timeout
        ))
    return paths[0].parent


__all__ = ["download_gpt2", "gpt2_repo_name", "gpt2_url"]
