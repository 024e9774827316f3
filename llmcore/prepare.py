"""训练前的数据准备：取文本 → 建（或读回）分词器 → 编码成词元数组并缓存到输出目录。

数据流：文本 → 分词器 → 词元 (.npy，内存映射) → 批次 → 模型。与框架无关，两条轨道共用。
分词器保存在 out_dir/tokenizer.json；续训时读回同一个文件，保证词表不变。
词元数组缓存在 out_dir/data/ 下，用“数据来源 + 分词器内容”的指纹判断缓存是否可用。
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .datasets import load_default_corpus, load_the_verdict, load_tokens, save_tokens
from .tokenizers import BPETokenizer, CharTokenizer, get_gpt2_tokenizer, load_tokenizer
from .trainer import TrainData

TOKENIZER_FILE = "tokenizer.json"


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """前 (1 - val_fraction) 的字符作训练集，其余作验证集（原书的做法）。"""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction 必须在 (0, 1) 内，收到 {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


def load_texts(tcfg: TrainConfig) -> tuple[str, str]:
    """按 tcfg.data 取 (训练文本, 验证文本)。"""
    if tcfg.data == "default":
        return load_default_corpus()
    if tcfg.data == "verdict":
        return split_text(load_the_verdict(), tcfg.val_fraction)
    if tcfg.data == "base-zh":
        from .datasets.base_zh import load_base_zh_corpus

        return load_base_zh_corpus()
    p = Path(tcfg.data)
    if not p.is_file():
        raise FileNotFoundError(f"找不到训练数据 {tcfg.data!r}：请用 default、verdict、base-zh 或一个文本文件的路径")
    return split_text(p.read_text(encoding="utf-8"), tcfg.val_fraction)


def build_tokenizer(tcfg: TrainConfig, train_text: str) -> Any:
    """按 tcfg.tokenizer 建分词器：char / bpe 在训练文本上训练，gpt2 用 GPT-2 的词表，否则读 JSON 文件。"""
    kind = tcfg.tokenizer
    if kind == "char":
        return CharTokenizer.train(train_text)
    if kind == "bpe":
        return BPETokenizer.train(train_text, tcfg.bpe_vocab_size)
    if kind == "gpt2":
        return get_gpt2_tokenizer()
    p = Path(kind)
    if not p.is_file():
        raise FileNotFoundError(f"找不到分词器 {kind!r}：请用 char、bpe、gpt2 或一个分词器 JSON 文件的路径")
    return load_tokenizer(p)


def _fingerprint(tcfg: TrainConfig, tokenizer_file: Path) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"data": tcfg.data, "val_fraction": tcfg.val_fraction}).encode())
    if tcfg.data not in ("default", "verdict", "base-zh"):
        st = Path(tcfg.data).stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(tokenizer_file.read_bytes())
    return h.hexdigest()[:16]


def prepare_data(tcfg: TrainConfig, write: bool = True, reuse_tokenizer: bool = True) -> TrainData:
    """准备训练数据。write=False（DDP 的非主进程）时不写文件，只读主进程写好的缓存。"""
    out = Path(tcfg.out_dir)
    tok_file = out / TOKENIZER_FILE
    data_dir = out / "data"
    texts: tuple[str, str] | None = None
    if reuse_tokenizer and tok_file.is_file():
        tokenizer = load_tokenizer(tok_file)
    else:
        if not write:
            raise FileNotFoundError(f"找不到主进程应写好的分词器 {tok_file}")
        texts = load_texts(tcfg)
        print(f"建立分词器（{tcfg.tokenizer}）……", file=sys.stderr)
        tokenizer = build_tokenizer(tcfg, texts[0])
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(tok_file)
    fp = _fingerprint(tcfg, tok_file)
    meta_file = data_dir / "meta.json"
    cached = meta_file.is_file() and json.loads(meta_file.read_text(encoding="utf-8")).get("fingerprint") == fp
    if not cached:
        if not write:
            raise FileNotFoundError(f"找不到主进程应写好的词元缓存 {data_dir}")
        texts = texts or load_texts(tcfg)
        print("编码训练与验证文本……", file=sys.stderr)
        allowed = set(getattr(tokenizer, "special_tokens", {}))
        for name, text in zip(("train", "val"), texts):
            ids = np.asarray(tokenizer.encode(text, allowed_special=allowed), dtype=np.int64)
            save_tokens(ids, data_dir / f"{name}.npy", tokenizer.vocab_size)
        meta = {"fingerprint": fp, "vocab_size": tokenizer.vocab_size, "data": tcfg.data}
        tmp = meta_file.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        tmp.replace(meta_file)
    return TrainData(
        tokenizer=tokenizer,
        train_tokens=load_tokens(data_dir / "train.npy"),
        val_tokens=load_tokens(data_dir / "val.npy"),
        tokenizer_file=tok_file,
    )
