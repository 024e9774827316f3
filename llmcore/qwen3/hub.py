"""经 huggingface_hub 下载 Qwen3 的文件。

``hf_hub_download`` 遵守 HF_ENDPOINT（国内可设为镜像站）与 HF_HUB_OFFLINE=1（只用本地缓存），
大文件断点续传，并复用用户已有的 Hugging Face 缓存：用 transformers 下载过 Qwen3-0.6B 的读者不会再下一遍。
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_REPO = "Qwen/Qwen3-0.6B"
FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def download_qwen3(repo_id: str = DEFAULT_REPO, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """下载（或从缓存取出）一个 Qwen3 模型目录，返回本地路径。分片的权重按索引逐个下载。"""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        raise ModuleNotFoundError("下载 Qwen3 需要 huggingface_hub：pip install huggingface_hub") from None
    import json

    def get(name: str, required: bool = True) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir))
        except EntryNotFoundError as e:
            if not required:
                return None
            if isinstance(e, LocalEntryNotFoundError):
                raise FileNotFoundError(
                    f"取不到 {repo_id} 的 {name}：本地的 Hugging Face 缓存里没有它，而且无法联网下载"
                    "（设置了 HF_HUB_OFFLINE=1，或网络不通；国内可设置 HF_ENDPOINT 使用镜像）"
                ) from None
            raise FileNotFoundError(f"Hugging Face 仓库 {repo_id} 里没有文件 {name}") from None

    for name in FILES:
        get(name, required=name in ("config.json", "tokenizer.json"))
    single = get("model.safetensors", required=False)
    if single is not None:
        return single.parent
    index = get("model.safetensors.index.json")
    assert index is not None
    for shard in sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())):
        get(shard)
    return index.parent
