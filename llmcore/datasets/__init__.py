"""数据：语料、下载、滑动窗口数据集、批加载器、词元文件。与框架无关，两条轨道共用。

- `load_default_corpus()`：默认中文语料（1998 年 1 月《人民日报》）的 (训练文本, 验证文本)；
- `load_reviews()`：中文评论情感数据（第 6 章）；
- `fetch(name)` / `download(url, ...)`：带缓存与 sha256 校验的下载；
- `SlidingWindowDataset`、`BatchLoader`、`create_dataloader`：NumPy 轨道的数据管线；
- `encode_to_npy`、`encode_file_to_npy`、`load_tokens`、`RandomWindowSampler`：大语料的词元文件。
"""

from .corpus import load_default_corpus, load_peoples_daily, split_paragraphs, strip_pos_tags
from .loader import BatchLoader, create_dataloader
from .registry import KNOWN_FILES, RemoteFile
from .remote import DownloadError, NotCachedError, cache_dir, download, fetch, load_the_verdict
from .reviews import ReviewSplits, load_reviews
from .sliding import SlidingWindowDataset
from .token_file import RandomWindowSampler, encode_file_to_npy, encode_to_npy, load_tokens, save_tokens

__all__ = [
    "KNOWN_FILES",
    "BatchLoader",
    "DownloadError",
    "NotCachedError",
    "RandomWindowSampler",
    "RemoteFile",
    "ReviewSplits",
    "SlidingWindowDataset",
    "cache_dir",
    "create_dataloader",
    "download",
    "encode_file_to_npy",
    "encode_to_npy",
    "fetch",
    "load_default_corpus",
    "load_peoples_daily",
    "load_reviews",
    "load_tokens",
    "load_the_verdict",
    "save_tokens",
    "split_paragraphs",
    "strip_pos_tags",
]
