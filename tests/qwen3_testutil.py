"""测试用：用 transformers 写一个小的随机权重 Qwen3 检查点（真实的 Hugging Face 布局）。"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, intermediate_size=96, rope_theta=10_000.0, max_position_embeddings=128)


def write_tiny_qwen3(directory: Path, dtype: str = "float32", tie: bool = True, seed: int = 0,
                     **overrides: Any) -> Any:
    """写出 config.json + model.safetensors，返回 float32 的 transformers 模型（eval 模式）。

    权重比 transformers 的默认初始化大（std 0.02 会让 logits 几乎全是 0，比较就没有意义）。
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    kw = {**TINY, **overrides}
    theta = kw.pop("rope_theta")
    cfg = Qwen3Config(**kw, tie_word_embeddings=tie, rope_parameters={"rope_type": "default", "rope_theta": theta},
                      attn_implementation="eager")
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    if dtype == "bfloat16":
        model.to(torch.bfloat16).save_pretrained(directory)
        model.to(torch.float32)
    else:
        model.save_pretrained(directory)
    return model


def write_qwen_style_tokenizer(path: Path, texts: list[str], vocab_size: int, special: list[str]) -> Any:
    """用 tokenizers 库训练一个与 Qwen 同格式的小分词器（Qwen 的预切分正则 + 字节级 BPE，
    再加 <think>、</think> 两个添加词元），存成 path（tokenizer.json），返回 tokenizers 的对象。"""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from llmcore.tokenizers.hf_json import QWEN_PATTERN

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens(["<think>", "</think>"])
    tok.save(str(path))
    return tok
