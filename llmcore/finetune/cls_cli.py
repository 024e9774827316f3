"""命令行：finetune-cls（分类微调）与 classify（用分类检查点判断文本），两条轨道共用。

    python -m gpt_numpy finetune-cls [--key=value ...]      # 字段见 ClsConfig，--help 列出
    python -m gpt_numpy classify --ckpt=runs/cls/ckpt --text="房间很干净，服务也好"
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..config import apply_overrides, parse_overrides
from ..errors import TokenizerError
from . import classify_data as cd
from .cls_trainer import ClsConfig, run


def _help(track_name: str) -> str:
    fields = ", ".join(f.name for f in dataclasses.fields(ClsConfig))
    return (
        f"用法：python -m {track_name} finetune-cls [--key=value ...]\n\n"
        "把语言模型检查点微调成文本分类器（默认：runs/base-zh 的基座，中文评论正/负面，原书的做法——\n"
        "只训练最后一个块、最终 LayerNorm 与新的分类头）。结束时打印测试集准确率与 95% 置信区间。\n\n"
        f"字段：{fields}\n\n"
        "示例：\n"
        f"  python -m {track_name} finetune-cls --ckpt=runs/base-zh --mode=full --out_dir=runs/cls-full\n"
        f"  python -m {track_name} finetune-cls --mode=lora --lora_rank=8 --lora_alpha=16 --lr=1e-3\n"
        f"  python -m {track_name} finetune-cls --data=sms --ckpt=我的GPT-2检查点 --max_length=120\n"
        f"  python -m {track_name} finetune-cls --data=我的数据.jsonl --classes=差评,好评\n"
    )


def cmd_finetune_cls(argv: list[str], track_name: str, track_module: Any) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(_help(track_name))
        return 0
    try:
        ccfg = apply_overrides(ClsConfig(out_dir=f"runs/cls-{track_name}"), parse_overrides(argv))
    except ValueError as e:
        print(f"参数错误：{e}", file=sys.stderr)
        return 2
    res = run(ccfg, track_module, track_name)
    print(f"测试集准确率 {res['test_acc']:.4f}（95% 区间 {res['test_ci_low']:.4f}–{res['test_ci_high']:.4f}）；"
          f"可训练参数 {res['trainable_params']:,}；训练用时 {res['train_time_s']:.1f} 秒")
    return 0


def cmd_classify(argv: list[str], track_name: str, track_module: Any) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {track_name} classify", description="用分类检查点判断文本的类别")
    ap.add_argument("--ckpt", default=f"runs/cls-{track_name}/ckpt", help="分类检查点目录（finetune-cls 的输出）")
    ap.add_argument("--text", action="append", required=True, help="要分类的文本（可给多次）")
    args = ap.parse_args(argv)
    from ..tokenizers import load_tokenizer

    ckpt = Path(args.ckpt)
    if (ckpt / "ckpt" / "config.json").is_file():
        ckpt = ckpt / "ckpt"
    model, meta = track_module.load_classifier(ckpt)
    tok_file = ckpt / "tokenizer.json"
    if not tok_file.is_file():
        raise TokenizerError(f"分类检查点 {ckpt} 旁边没有 tokenizer.json：请用 finetune-cls 写出的完整目录")
    tokenizer = load_tokenizer(tok_file)
    classes = meta.get("classes") or [str(i) for i in range(meta["num_classes"])]
    enc = cd.encode_examples([(t, 0) for t in args.text], tokenizer, int(meta.get("max_length", 128)),
                             on_bad="error", name="--text")
    logits = track_module.ClassifierBackend.predict_with(model, enc.ids, enc.lengths)
    z = np.exp(logits - logits.max(-1, keepdims=True))
    probs = z / z.sum(-1, keepdims=True)
    for text, p in zip(args.text, probs):
        k = int(p.argmax())
        detail = "，".join(f"{c} {q:.3f}" for c, q in zip(classes, p))
        print(f"{classes[k]}\t（{detail}）\t{text}")
    return 0


__all__ = ["cmd_classify", "cmd_finetune_cls"]
