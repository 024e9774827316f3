"""基准：在默认中文语料上训练 BPE 的耗时，以及在验证集上的压缩率（字/词元）。

用法（仓库根目录下）：python -m bench.bpe_train [--vocab-size 8000] [--whole]
--whole 在全部语料（训练 + 验证）上训练，只报耗时；缺省只用训练集，并在验证集上比较 GPT-2。
"""

from __future__ import annotations

import argparse
import time

from llmcore.datasets import load_default_corpus
from llmcore.tokenizers import BPETokenizer, get_gpt2_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description="BPE 训练耗时与压缩率基准")
    ap.add_argument("--vocab-size", type=int, default=8000, help="词表大小（含特殊词元）")
    ap.add_argument("--whole", action="store_true", help="在全部语料上训练（只测耗时）")
    args = ap.parse_args()

    train_text, val_text = load_default_corpus()
    text = train_text + val_text if args.whole else train_text
    t0 = time.perf_counter()
    tok = BPETokenizer.train(text, vocab_size=args.vocab_size)
    dt = time.perf_counter() - t0
    print(f"训练 {len(text):,} 字、词表 {tok.vocab_size}：{dt:.1f} s")

    ours = len(val_text) / len(tok.encode(val_text))
    gpt2 = len(val_text) / len(get_gpt2_tokenizer().encode(val_text))
    print(f"验证集 {len(val_text):,} 字：我们的 BPE {ours:.3f} 字/词元，GPT-2 {gpt2:.3f} 字/词元")
    print(f"比值 {ours / gpt2:.2f}")


if __name__ == "__main__":
    main()
