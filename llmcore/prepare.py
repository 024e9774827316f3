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
from .errors import DataError, TokenizerError
from .tokenizers import BPETokenizer, CharTokenizer, get_gpt2_tokenizer, load_tokenizer
from .trainer import TrainData

TOKENIZER_FILE = "tokenizer.json"


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """前 (1 - val_fraction) 的字符作训练集，其余作验证集（原书的做法）。"""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction 必须在 (0, 1) 内，收到 {val_fraction}")
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


BUILTIN_DATA = ("default", "verdict", "base-zh")
BUILTIN_TOKENIZERS = ("char", "bpe", "gpt2")


def check_data_source(data: str) -> Path | None:
    """训练开始前检查数据来源：内置名字直接通过；文件必须存在、可读、看起来是文本（不含 NUL 字节）。"""
    if data in BUILTIN_DATA:
        return None
    p = Path(data)
    if not p.is_file():
        what = "是一个目录" if p.is_dir() else "不存在"
        raise DataError(f"训练数据 {data!r} {what}：--data 请用 default、verdict、base-zh 或一个 UTF-8 文本文件的路径")
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise DataError(f"无法读取训练数据 {p}：{e.strerror or e}") from None
    if b"\x00" in head:
        raise DataError(f"训练数据 {p} 看起来是二进制文件（含 NUL 字节），不是文本；--data 需要 UTF-8 文本文件")
    return p


def read_text_file(path: str | Path) -> str:
    """读取 UTF-8 文本；不是文本、不是 UTF-8 时报 DataError（说出文件与出错的字节位置）。"""
    p = check_data_source(str(path))
    assert p is not None
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"训练数据 {p} 不是 UTF-8 编码（第 {e.start} 个字节 {raw[e.start:e.start + 1]!r} 无法解码）；"
            "请先转成 UTF-8，如 iconv -f GBK -t UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"训练数据 {p} 是空的")
    return text


def load_texts(tcfg: TrainConfig) -> tuple[str, str]:
    """按 tcfg.data 取 (训练文本, 验证文本)。"""
    if tcfg.data == "default":
        return load_default_corpus()
    if tcfg.data == "verdict":
        return split_text(load_the_verdict(), tcfg.val_fraction)
    if tcfg.data == "base-zh":
        from .datasets.base_zh import load_base_zh_corpus

        return load_base_zh_corpus()
    return split_text(read_text_file(tcfg.data), tcfg.val_fraction)


def check_tokenizer_source(kind: str) -> None:
    """训练开始前检查 --tokenizer：内置名字，或一个存在的分词器 JSON 文件。"""
    if kind in BUILTIN_TOKENIZERS:
        return
    if not Path(kind).is_file():
        raise TokenizerError(f"找不到分词器 {kind!r}：--tokenizer 请用 char、bpe、gpt2 或一个分词器 JSON 文件的路径")


def read_tokenizer(path: str | Path) -> Any:
    """读取分词器 JSON；文件缺失、损坏或格式不对时报 TokenizerError（带路径）。"""
    p = Path(path)
    if not p.is_file():
        raise TokenizerError(f"找不到分词器文件 {p}")
    try:
        return load_tokenizer(p)
    except UnicodeDecodeError:
        raise TokenizerError(f"分词器文件 {p} 不是 UTF-8 文本，已损坏") from None
    except json.JSONDecodeError as e:
        raise TokenizerError(f"分词器文件 {p} 不是合法的 JSON：{e}") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        msg = str(e) if str(p) in str(e) else f"{p}：{e}"
        raise TokenizerError(f"分词器文件无效：{msg}") from None


def build_tokenizer(tcfg: TrainConfig, train_text: str) -> Any:
    """按 tcfg.tokenizer 建分词器：char / bpe 在训练文本上训练，gpt2 用 GPT-2 的词表，否则读 JSON 文件。"""
    kind = tcfg.tokenizer
    if kind == "char":
        return CharTokenizer.train(train_text)
    if kind == "bpe":
        return BPETokenizer.train(train_text, tcfg.bpe_vocab_size)
    if kind == "gpt2":
        return get_gpt2_tokenizer()
    check_tokenizer_source(kind)
    return read_tokenizer(kind)


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
        tokenizer = read_tokenizer(tok_file)
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
    try:
        cached = meta_file.is_file() and json.loads(meta_file.read_text(encoding="utf-8")).get("fingerprint") == fp
        cached = cached and (data_dir / "train.npy").is_file() and (data_dir / "val.npy").is_file()
    except (ValueError, AttributeError):  # 缓存的说明文件坏了：重新编码即可
        cached = False
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
