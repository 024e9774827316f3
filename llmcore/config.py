"""模型配置 GPTConfig（两条轨道共用）与命令行 ``--key=value`` 覆盖的解析。

字段名沿用原书：vocab_size、context_length、emb_dim、n_heads、n_layers、drop_rate、qkv_bias，
另加 tie_weights（输出层与词元嵌入共享权重，GPT-2 原版如此）。本文件不依赖任何框架。
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class GPTConfig:
    """GPT 的结构超参数。

    默认值是原书第 4 章的 GPT-2 small：qkv 不带偏置、输出层不共享，共 163,009,536 个参数。原版 GPT-2 的 qkv 带偏置、
    输出层与词元嵌入共享，即常说的“124M”：124,439,808 个；qkv 不带偏置而共享时是 124,412,160 个。
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_weights: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"GPTConfig.{name} 必须是正整数，收到 {v!r}")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim={self.emb_dim} 必须能被 n_heads={self.n_heads} 整除")
        if not 0.0 <= float(self.drop_rate) < 1.0:
            raise ValueError(f"drop_rate 必须在 [0, 1) 内，收到 {self.drop_rate!r}")

    @property
    def head_dim(self) -> int:
        """每个注意力头的维度 hs = C // nh。"""
        return self.emb_dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        return from_dict(cls, d)

    def replace(self, **changes: Any) -> GPTConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """按名字取预设配置，再用 overrides 修改个别字段。"""
        if name not in PRESETS:
            raise ValueError(f"未知的模型预设 {name!r}；可选：{', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def num_parameters(self, include_tied: bool = True) -> int:
        """按公式计算参数个数（与模型 parameters() 之和相同；include_tied=True 时把共享的输出层也算上）。"""
        c, v, t, l = self.emb_dim, self.vocab_size, self.context_length, self.n_layers
        attn = 3 * c * c + (3 * c if self.qkv_bias else 0) + c * c + c
        ff = c * 4 * c + 4 * c + 4 * c * c + c
        block = attn + ff + 4 * c
        head = v * c if (include_tied or not self.tie_weights) else 0
        return v * c + t * c + l * block + 2 * c + head


# 预设：GPT-2 四种规模（原书设置：drop_rate 0.1，从零训练时 qkv_bias=False），以及 CPU 上的小模型。
_GPT2 = dict(vocab_size=50257, context_length=1024, drop_rate=0.1, qkv_bias=False)
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(_GPT2, emb_dim=768, n_layers=12, n_heads=12),
    "gpt2-medium": dict(_GPT2, emb_dim=1024, n_layers=24, n_heads=16),
    "gpt2-large": dict(_GPT2, emb_dim=1280, n_layers=36, n_heads=20),
    "gpt2-xl": dict(_GPT2, emb_dim=1600, n_layers=48, n_heads=25),
    # CPU 上几分钟可训练的规模（词表大小由分词器决定，这里是默认值）
    "tiny": dict(vocab_size=6000, context_length=128, emb_dim=128, n_layers=4, n_heads=4, drop_rate=0.0),
    "small": dict(vocab_size=6000, context_length=256, emb_dim=384, n_layers=6, n_heads=6, drop_rate=0.0),
}


@dataclass
class TrainConfig:
    """训练超参数（两条轨道共用）。命令行用 ``--key=value`` 覆盖任意字段，GPTConfig 的字段也可以。"""

    # 数据与分词
    # default（人民日报 1998-01）| verdict（原书的短篇小说）| base-zh（人民日报 + 评论训练划分）| 文本文件路径
    data: str = "default"
    tokenizer: str = "char"  # char | bpe | gpt2 | 已保存的分词器 JSON 路径
    bpe_vocab_size: int = 8000  # tokenizer=bpe 时训练的词表大小
    val_fraction: float = 0.1  # 自定义文本 / verdict：最后这一比例的字符作验证集
    sampling: str = "random"  # random：每步随机取窗口（nanoGPT）| epoch：滑动窗口分轮次打乱（原书）
    stride: int = 0  # epoch 模式的滑动步幅，0 表示等于 context_length
    # 模型
    preset: str = "tiny"
    init: str = "gpt2"  # gpt2：N(0, 0.02) 并缩放残差投影 | torch：各层的默认初始化（原书）
    dtype: str = "float32"
    # 优化
    batch_size: int = 16
    grad_accum: int = 1  # 梯度累积步数：每次更新看到 batch_size × grad_accum 个序列
    max_steps: int = 2000  # 优化器更新次数；epochs > 0 时由轮数决定
    epochs: int = 0
    lr: float = 4e-3
    min_lr: float = 4e-4
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant
    weight_decay: float = 0.1
    decay_all: bool = False  # False：只对二维以上的权重做衰减（嵌入除外）；True：全部参数（原书）
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 梯度范数上限，0 表示不裁剪
    # 评估、日志与检查点
    eval_interval: int = 250
    eval_batches: int = 20
    log_interval: int = 10
    save_interval: int = 0  # 除评估时外，每隔多少步另存一次 last 检查点（0 表示不另存）
    sample_prompt: str = "新华社北京"
    sample_tokens: int = 80
    sample_temperature: float = 0.8
    sample_top_k: int = 40
    seed: int = 1337
    out_dir: str = "runs/gpt_numpy"
    resume: str = "auto"  # auto：有 last 检查点就续训 | never：从头开始 | must：必须续训
    progress: bool = True  # 显示 tqdm 进度条
    max_time: float = 0.0  # 训练时长上限（秒），到时保存并结束；0 表示不限
    stop_at: int = 0  # 训练到第几步先停下（保存检查点，之后用同样的命令续训）；0 表示不提前停
    # 仅 gpt_torch 使用
    device: str = "auto"  # auto | cpu | cuda | mps
    compile: bool = False
    amp: str = "auto"  # auto：CUDA 上用 bf16 autocast | bf16 | fp32
    # 可靠性选项
    weights_only: bool = False  # 续训时只载入模型权重（优化器状态缺失或损坏时用新的 AdamW 状态继续）
    overwrite: bool = False  # 与 --resume=never 一起用：删除输出目录里上一次运行的检查点与记录后从头开始

    def __post_init__(self) -> None:
        """检查每个字段的取值范围与字段之间的关系；不合法时报出字段名、收到的值与期望。"""
        from .errors import DeviceError, UsageError

        def bad(msg: str) -> UsageError:
            return UsageError(msg)

        for name in ("batch_size", "grad_accum", "eval_batches", "log_interval", "eval_interval", "bpe_vocab_size"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                raise bad(f"{name} 必须是正整数，收到 {v!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad(f"seed 必须是非负整数，收到 {self.seed!r}")
        for name in ("max_steps", "epochs", "warmup_steps", "stride", "save_interval", "stop_at", "sample_tokens",
                     "sample_top_k"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise bad(f"{name} 必须是非负整数（0 表示不用），收到 {v!r}")
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip", "max_time", "val_fraction",
                     "sample_temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(f"{name} 必须是有限的数，收到 {v!r}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise bad("max_steps 与 epochs 至少有一个为正")
        choices = {
            "sampling": ("random", "epoch"),
            "init": ("gpt2", "torch"),
            "schedule": ("cosine", "constant"),
            "resume": ("auto", "never", "must"),
            "dtype": ("float32", "float64"),
            "amp": ("auto", "bf16", "fp32"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise bad(f"{name} 只能是 {'、'.join(allowed)} 之一，收到 {getattr(self, name)!r}")
        if self.lr <= 0:
            raise bad(f"学习率 lr 必须为正，收到 {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise bad(
                f"min_lr 必须在 [0, lr] 内（学习率从 lr 降到 min_lr），收到 min_lr={self.min_lr!r}，lr={self.lr!r}"
            )
        for name in ("weight_decay", "grad_clip", "max_time"):
            if getattr(self, name) < 0:
                raise bad(f"{name} 不能为负（0 表示不用），收到 {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise bad(f"{name} 必须在 [0, 1) 内，收到 {getattr(self, name)!r}")
        if not 0 < self.val_fraction < 1:
            raise bad(f"val_fraction 必须在 (0, 1) 内，收到 {self.val_fraction!r}")
        if self.sample_temperature < 0:
            raise bad(f"sample_temperature 不能为负（0 为贪心），收到 {self.sample_temperature!r}")
        if self.overwrite and self.resume != "never":
            raise bad("--overwrite=true 只能与 --resume=never 一起用（它会删除输出目录里上一次运行的检查点与记录）")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(self.device)):
            raise DeviceError(f"未知的设备 {self.device!r}；可选：auto、cpu、cuda、cuda:N、mps")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# 训练配方：一组 TrainConfig 字段与模型字段的预设，命令行用 --recipe=NAME 选择。
RECIPES: dict[str, dict[str, Any]] = {
    # 默认任务：人民日报语料，字符级分词，2 核 CPU 上不到 10 分钟
    "default": {},
    # 原书第 5 章的实验：the-verdict.txt，GPT-2 small 结构（上下文 256，qkv 不带偏置、输出层不共享：
    # 162,419,712 个参数），batch 2，AdamW 4e-4，wd 0.1，10 轮
    "book-verdict": dict(
        data="verdict", tokenizer="gpt2", preset="gpt2-small", context_length=256, sampling="epoch",
        init="torch", batch_size=2, epochs=10, lr=4e-4, min_lr=4e-4, warmup_steps=0, schedule="constant",
        weight_decay=0.1, decay_all=True, beta1=0.9, beta2=0.999, grad_clip=0.0, eval_interval=5,
        eval_batches=5, seed=123, sample_prompt="Every effort moves you", sample_tokens=50,
        sample_temperature=0.0, val_fraction=0.1, out_dir="runs/book-verdict",
    ),
    # 第 6、7 章与附录 E 的中文基座模型：small 结构（6 层、6 头、384 维、上下文 256），在人民日报语料
    # 与评论的训练划分上训练的中文 BPE（8000 词），批 8 × 256 词元，1200 步（约 246 万词元）；
    # 2 核 CPU 上 tinytensor 约 750 词元/秒，即约 1 小时。
    # 测试划分的评论不进预训练语料（见 llmcore/datasets/base_zh.py）。
    "base-zh": dict(
        data="base-zh", tokenizer="bpe", bpe_vocab_size=8000, preset="small", batch_size=8, max_steps=1200,
        lr=1e-3, min_lr=1e-4, warmup_steps=100, eval_interval=200, eval_batches=20, sample_prompt="这家酒店",
        out_dir="runs/base-zh",
    ),
}


# ---------------------------------------------------------------------------- 通用的字典/命令行解析
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """把字符串（或 JSON 值）转换成字段类型 tp；失败时报出键名与期望类型。"""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"参数 {key}={value!r} 无法转换为 {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"参数 {key} 需要布尔值 (true/false)，收到 {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"参数 {key} 需要整数，收到 {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(str(value).replace("_", ""))
        except ValueError:
            raise ValueError(f"参数 {key} 需要整数，收到 {value!r}") from None
        if not f.is_integer():
            raise ValueError(f"参数 {key} 需要整数，收到 {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"参数 {key} 需要浮点数，收到 {value!r}") from None
    if tp is str:
        return str(value)
    if origin in (list, tuple):
        items = json.loads(value) if isinstance(value, str) else list(value)
        conv = [_convert(v, args[0] if args else str, key) for v in items]
        return tuple(conv) if origin is tuple else conv
    return value


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """由字典构造 dataclass；未知的键报错并列出可用的键。"""
    types_ = _field_types(cls)
    unknown = [k for k in d if k not in types_]
    if unknown:
        raise ValueError(f"{cls.__name__} 没有字段 {unknown}；可用字段：{', '.join(types_)}")
    return cls(**{k: _convert(v, types_[k], k) for k, v in d.items()})


def parse_overrides(args: Iterable[str]) -> dict[str, str]:
    """把 ["--lr=3e-4", "--n_layers=4"] 解析成 {"lr": "3e-4", "n_layers": "4"}（值仍是字符串）。"""
    out: dict[str, str] = {}
    for a in args:
        if not a.startswith("--") or "=" not in a:
            raise ValueError(f"无法识别的参数 {a!r}：覆盖参数的格式是 --key=value")
        k, v = a[2:].split("=", 1)
        out[k.replace("-", "_")] = v  # 同一个参数给了几次时以最后一次为准（与 argparse 相同）
    return out


def apply_overrides(obj: T, overrides: dict[str, Any]) -> T:
    """返回修改了若干字段的新 dataclass；值按字段类型转换。"""
    types_ = _field_types(type(obj))
    unknown = [k for k in overrides if k not in types_]
    if unknown:
        raise ValueError(f"{type(obj).__name__} 没有字段 {unknown}；可用字段：{', '.join(types_)}")
    return dataclasses.replace(obj, **{k: _convert(v, types_[k], k) for k, v in overrides.items()})  # type: ignore[type-var]


def build_model_config(tcfg: TrainConfig, model_overrides: dict[str, Any], vocab_size: int) -> GPTConfig:
    """由预设、命令行覆盖与分词器的词表大小得到模型配置（两条轨道共用）。"""
    cfg = GPTConfig.preset(tcfg.preset)
    return apply_overrides(cfg, {**model_overrides, "vocab_size": vocab_size})


def save_json(obj: Any, path: str | Path) -> None:
    """原子地写 JSON（先写临时文件再改名）。"""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(p)


__all__ = [
    "GPTConfig", "PRESETS", "RECIPES", "TrainConfig", "apply_overrides", "build_model_config", "from_dict",
    "parse_overrides", "save_json",
]
