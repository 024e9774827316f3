"""偏好调优 (DPO) 的数据与公式（与框架无关）：偏好对、规则造的错答、编码成批、NumPy 参照公式与统计。

偏好对与原书的格式相同：{"instruction", "input", "output", "chosen", "rejected"}（我们另带 "task"）。
chosen 是标准答案；rejected 是错答，来源有两种：
- 模型自己的错答：SFT 模型对训练题的生成，用精确判分 (instruct_eval.is_correct) 挑出答错的（`pairs_from_samples`）；
- 规则造的错答：按任务改坏标准答案（`rule_rejected`），例如情感取反、分词并掉两个词、漏掉一个实体。
chosen 与 rejected 相同的对跳过并计数。

DPO 损失（Rafailov 等，2023），π 是在训练的策略模型，π_ref 是冻结的参照模型（SFT 模型的副本）：

    logπ(y|x) = Σ_回答的每个词元 log p(y_t | x, y_<t)          （提示与补齐位置不计；可选再除以回答长度）
    r(y) = β·(logπ(y|x) − logπ_ref(y|x))                        隐式奖励
    L = −mean log σ( r(chosen) − r(rejected) )
    奖励差 (margin) = mean(r(chosen) − r(rejected))；偏好准确率 = mean[r(chosen) > r(rejected)]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ..errors import DataError, UsageError
from .instruct_bench import ENTITY_SEP, NONE_ANSWER, SENTIMENT_LABELS
from .instruct_data import FIELDS, format_prompt
from .instruct_eval import is_correct
from .sft_data import IGNORE_INDEX, collate

PAIR_FIELDS = (*FIELDS, "chosen", "rejected")
_SYLLABLES = tuple("ba bo pi ma fa de te ni le ge ke he ji qi xi zhi chi shi ri zi ci si an en ang eng ong "
                   "yi wu yu ai ei ao ou".split())


# ---------------------------------------------------------------------------- 造偏好对
def rule_rejected(entry: dict[str, Any], rng: np.random.Generator) -> str | None:
    """按任务把标准答案改坏，得到一个确定错误的回答；无法改坏（或不认识的任务）时返回 None。"""
    task, gold = entry.get("task", ""), entry["output"]
    if task == "sentiment":
        return SENTIMENT_LABELS[1 - SENTIMENT_LABELS.index(gold)] if gold in SENTIMENT_LABELS else None
    if task == "segment":
        words = gold.split()
        multi = [i for i, w in enumerate(words) if len(w) > 1]
        if len(words) >= 2 and (not multi or rng.random() < 0.5):
            i = int(rng.integers(len(words) - 1))  # 并掉相邻两个词
            words[i : i + 2] = [words[i] + words[i + 1]]
        elif multi:
            i = int(rng.choice(multi))  # 把一个多字词拆开
            w = words[i]
            k = int(rng.integers(1, len(w)))
            words[i : i + 1] = [w[:k], w[k:]]
        else:
            return None
        return " ".join(words)
    if task == "entity":
        names = [] if gold == NONE_ANSWER else gold.split(ENTITY_SEP)
        if names:  # 漏掉一个；只有一个时答“无”
            del names[int(rng.integers(len(names)))]
            return ENTITY_SEP.join(names) if names else NONE_ANSWER
        text = entry["input"]
        if len(text) < 2:
            return None
        k = int(rng.integers(len(text) - 1))  # 本来没有，却编出一个（句中相邻两个字）
        return text[k : k + 2]
    if task == "pinyin":
        syl = gold.split()
        i = int(rng.integers(len(syl)))
        syl[i] = next(s for s in rng.permutation(_SYLLABLES) if s != syl[i])
        return " ".join(syl)
    if task == "t2s":
        src = entry["input"]
        diff = [i for i, (a, b) in enumerate(zip(src, gold)) if a != b]
        if len(src) != len(gold) or not diff:
            return None
        i = int(rng.choice(diff))  # 留下一个繁体字没改
        return gold[:i] + src[i] + gold[i + 1 :]
    return None


def make_rule_pairs(
    entries: Sequence[dict[str, Any]], seed: int = 0, log: TextIO | None = None
) -> list[dict[str, Any]]:
    """每条训练题造一个偏好对：chosen = 标准答案，rejected = rule_rejected 的错答；造不出的跳过并计数。"""
    rng = np.random.default_rng(seed)
    out = []
    skipped = 0
    for e in entries:
        bad = rule_rejected(e, rng)
        if bad is None or bad == e["output"]:
            skipped += 1
            continue
        out.append({**e, "chosen": e["output"], "rejected": bad})
    if skipped:
        print(f"规则造错答：跳过 {skipped} 条（无法改坏或改完与标准答案相同）", file=log or sys.stderr)
    return out


def pairs_from_samples(
    entries: Sequence[dict[str, Any]],
    samples: Sequence[str],
    fallback_seed: int | None = None,
    log: TextIO | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """用模型自己的回答造偏好对：答错（精确判分）的回答作 rejected，chosen 是标准答案。

    答对的题：fallback_seed 不为 None 时改用规则造的错答，否则跳过。返回 (偏好对, 计数)。
    """
    if len(entries) != len(samples):
        raise UsageError(f"条目 {len(entries)} 条，模型回答 {len(samples)} 条，数量不一致")
    rng = np.random.default_rng(fallback_seed if fallback_seed is not None else 0)
    counts = {"model_wrong": 0, "model_correct": 0, "rule": 0, "skipped_empty": 0}
    out = []
    for e, s in zip(entries, samples):
        s = s.strip()
        if not s:
            counts["skipped_empty"] += 1
            continue
        if not is_correct(e, s):
            counts["model_wrong"] += 1
            out.append({**e, "chosen": e["output"], "rejected": s})
            continue
        counts["model_correct"] += 1
        rejected = rule_rejected(e, rng) if fallback_seed is not None else None
        if rejected is not None and rejected != e["output"]:
            counts["rule"] += 1
            out.append({**e, "chosen": e["output"], "rejected": rejected})
    print(f"偏好对：模型答错 {counts['model_wrong']} 条、答对 {counts['model_correct']} 条（其中规则补造 "
          f"{counts['rule']} 条）、空回答 {counts['skipped_empty']} 条", file=log or sys.stderr)
    return out, counts


def validate_pairs(raw: Sequence[Any], name: str = "偏好数据", log: TextIO | None = None) -> list[dict[str, Any]]:
    """检查偏好对：缺字段或不是字符串 → 报错写出第几条；chosen 与 rejected 相同 → 跳过并计数。"""
    out = []
    same = 0
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise DataError(f"{name} 第 {i} 条应是对象（字典），实际是 {type(item).__name__}")
        for key in PAIR_FIELDS:
            if key not in item:
                raise DataError(f"{name} 第 {i} 条缺少字段 {key!r}（应有 {', '.join(PAIR_FIELDS)}）")
            if not isinstance(item[key], str):
                raise DataError(f"{name} 第 {i} 条的字段 {key!r} 应是字符串，实际是 {type(item[key]).__name__}")
        if item["chosen"].strip() == item["rejected"].strip():
            same += 1
            continue
        out.append(dict(item))
    if same:
        print(f"{name}：跳过 chosen 与 rejected 相同的 {same} 条", file=log or sys.stderr)
    return out


# ---------------------------------------------------------------------------- 编码与成批
@dataclass
class PairData:
    """编码后的偏好对：提示词元、chosen 与 rejected 的回答词元（都不含结束词元）。"""

    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]
    kept: list[int]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)


def encode_pairs(
    pairs: Sequence[dict[str, Any]], tokenizer: Any, lang: str = "zh", max_length: int | None = None,
    log: TextIO | None = None,
) -> PairData:
    """提示与两个回答分别分词；任一边超过 max_length（输入长度）或回答为空的对跳过并计数。"""
    data = PairData([], [], [], [], {"empty": 0, "too_long": 0})
    for i, p in enumerate(pairs):
        prompt = tokenizer.encode(format_prompt(p, lang))
        good, bad = tokenizer.encode(p["chosen"]), tokenizer.encode(p["rejected"])
        if not good or not bad:
            data.skipped["empty"] += 1
            continue
        if max_length is not None and len(prompt) + max(len(good), len(bad)) > max_length:
            data.skipped["too_long"] += 1
            continue
        data.prompts.append(prompt)
        data.chosen.append(good)
        data.rejected.append(bad)
        data.kept.append(i)
    if sum(data.skipped.values()):
        print(f"偏好对编码：跳过回答为空的 {data.skipped['empty']} 对、超长的 {data.skipped['too_long']} 对",
              file=log or sys.stderr)
    return data


def collate_pairs(
    data: PairData, idx: Sequence[int], pad_id: int, allowed_max_length: int | None = None
) -> dict[str, np.ndarray]:
    """一批偏好对 → {chosen_inputs, chosen_targets, rejected_inputs, rejected_targets}；提示部分的目标已掩掉，
    所以 targets != -100 的位置正好是回答的词元与结束词元。"""
    plens = [len(data.prompts[i]) for i in idx]
    ci, ct = collate([data.prompts[i] + data.chosen[i] for i in idx], pad_id, IGNORE_INDEX, allowed_max_length,
                     plens)
    ri, rt = collate([data.prompts[i] + data.rejected[i] for i in idx], pad_id, IGNORE_INDEX, allowed_max_length,
                     plens)
    return {"chosen_inputs": ci, "chosen_targets": ct, "rejected_inputs": ri, "rejected_targets": rt}


def iter_pair_batches(
    data: PairData, batch_size: int, pad_id: int, shuffle: bool = False, rng: np.random.Generator | None = None,
    allowed_max_length: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    if batch_size < 1:
        raise UsageError(f"batch_size 应为正整数，收到 {batch_size!r}")
    order = (rng or np.random.default_rng()).permutation(len(data)) if shuffle else np.arange(len(data))
    for s in range(0, len(data), batch_size):
        yield collate_pairs(data, order[s : s + batch_size].tolist(), pad_id, allowed_max_length)


# ---------------------------------------------------------------------------- 公式的 NumPy 参照与统计
def sequence_logprobs_reference(logits: np.ndarray, targets: np.ndarray, average: bool = False) -> np.ndarray:
    """logπ(y|x)：logits (B, T, V) 与 targets (B, T)（-100 不计）→ (B,)，float64。测试与讲解用。"""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))  # (B, T, V)
    mask = targets != IGNORE_INDEX
    picked = np.take_along_axis(logp, np.where(mask, targets, 0)[..., None], -1)[..., 0]  # (B, T)
    total = (picked * mask).sum(-1)
    return total / mask.sum(-1) if average else total


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log σ(x) = −log(1 + e^{−x})，数值稳定的写法。"""
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def dpo_loss_reference(
    policy_chosen: np.ndarray, policy_rejected: np.ndarray, ref_chosen: np.ndarray, ref_rejected: np.ndarray,
    beta: float = 0.1,
) -> tuple[float, np.ndarray, np.ndarray]:
    """DPO 损失的 NumPy 参照：返回 (损失, chosen 奖励 (B,), rejected 奖励 (B,))。"""
    chosen_r = beta * (np.asarray(policy_chosen, np.float64) - ref_chosen)
    rejected_r = beta * (np.asarray(policy_rejected, np.float64) - ref_rejected)
    return float(-log_sigmoid(chosen_r - rejected_r).mean()), chosen_r, rejected_r


@dataclass
class DPOStats:
    """一批的统计：损失、两种奖励的均值、奖励差（margin）、偏好准确率。"""

    loss: float
    chosen_reward: float
    rejected_reward: float
    margin: float
    accuracy: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def preference_stats(loss: float, chosen_rewards: np.ndarray, rejected_rewards: np.ndarray) -> DPOStats:
    c, r = np.asarray(chosen_rewards, np.float64), np.asarray(rejected_rewards, np.float64)
    return DPOStats(float(loss), float(c.mean()), float(r.mean()), float((c - r).mean()), float((c > r).mean()))


def check_beta(beta: float) -> float:
    if not (isinstance(beta, (int, float)) and np.isfinite(beta) and beta > 0):
        raise UsageError(f"DPO 的 beta 应是正数（常用 0.1），收到 {beta!r}")
    return float(beta)


__all__ = [
    "DPOStats", "PAIR_FIELDS", "PairData", "check_beta", "collate_pairs", "dpo_loss_reference", "encode_pairs",
    "iter_pair_batches", "log_sigmoid", "make_rule_pairs", "pairs_from_samples", "preference_stats", "rule_rejected",
    "sequence_logprobs_reference", "validate_pairs",
]
