# %% [markdown]
# # 第 7 章 练习答案
#
# 先在第 7 章末尾自己做一遍，再来对照。这里直接用库里的函数（`llmcore.finetune.sft_data.collate`、
# `llmcore.finetune.instruct_eval`、两条轨道的 `dpo.py`），它们与正文里亲手写的版本已经逐项核对过。
# 为了几秒钟就能跑完，本文件不用基座模型：分词器是在基准题上现训的字符级分词器，模型是随机初始化的小 GPT。
# 每道题的最后都有检查，结论不成立时会报错。

# %%
import io
import math
from collections import Counter

import numpy as np

import tinytensor as tt
from gpt_numpy import dpo as NDPO
from gpt_numpy.model import GPTModel
from llmcore.config import GPTConfig
from llmcore.finetune import instruct_data as idata
from llmcore.finetune import instruct_eval as ev
from llmcore.finetune import sft_data as sd
from llmcore.finetune.instruct_bench import TASKS, build_benchmark
from llmcore.tokenizers import CharTokenizer

np.set_printoptions(precision=4, suppress=True, linewidth=110)
bench = build_benchmark()
train = [next(e for e in bench.train if e["task"] == t) for t in TASKS] + bench.train[:11]
tok = CharTokenizer.train("".join(idata.format_example(e) for e in bench.train[:2000]))
EOT = tok.eot_id
print(f"字符级分词器：{tok.vocab_size:,} 个词元；练习用 {len(train)} 道训练题")

# %% [markdown]
# ## 练习 1：提示掩码
#
# 一批题里，提示（开场白、指令、输入和三个标题）远比回答长。数一数两种设置下计入损失的目标：

# %%
enc = sd.encode_entries(train, tok, max_length=256, log=io.StringIO())
_, y_masked = sd.collate(enc.seqs, EOT, prompt_lengths=enc.prompt_lengths)
_, y_all = sd.collate(enc.seqs, EOT)
n_answer, n_all = int((y_masked != -100).sum()), int((y_all != -100).sum())
print(f"mask_prompt=True：计入 {n_answer} 个目标；False：计入 {n_all} 个；回答（含结束词元）占 {n_answer / n_all:.1%}")
assert n_answer == sum(len(s) - p + 1 for s, p in zip(enc.seqs, enc.prompt_lengths))

# %% [markdown]
# 两个损失不能直接比：它们是在**不同的位置集合**上取的平均。不掩码的损失是提示部分与回答部分的加权平均，
# 权重就是两部分的目标个数。对训练过的模型，提示大半是每题都一样的模板，很容易预测，会把平均值拉低。下面在一个随机初始化的小模型上
# 验证这个分解（提示部分的目标 = 不掩码时计入、掩码时不计入的那些位置）：

# %%
cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=256, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)
tt.manual_seed(0)
model = GPTModel(cfg)
x, _ = sd.collate(enc.seqs, EOT)
with tt.no_grad():
    loss_all = NDPO.sft_loss(model, x, y_all).item()
    loss_answer = NDPO.sft_loss(model, x, y_masked).item()
    y_prompt = np.where(y_masked == -100, y_all, -100)  # 只留提示部分的目标
    loss_prompt = NDPO.sft_loss(model, x, y_prompt).item()
n_prompt = n_all - n_answer
mix = (n_prompt * loss_prompt + n_answer * loss_answer) / n_all
print(f"不掩码 {loss_all:.4f} = ({n_prompt}·{loss_prompt:.4f} + {n_answer}·{loss_answer:.4f}) / {n_all} = {mix:.4f}")
assert abs(mix - loss_all) < 1e-4

# %% [markdown]
# 所以要比较两种设置训练出的模型，应在**同一组位置**上评估——比如都只看回答部分的验证损失，或者直接比基准上的 EM / F1。

# %% [markdown]
# ## 练习 2：原书按值掩码
#
# 原书的 `custom_collate_fn` 在目标里找出所有等于补齐词元的位置，保留第一个，其余写 -100。
# 补齐词元又正是 `<|endoftext|>`，所以文本里只要本来就含有这个词元，第一个“等于它的位置”就不再是补齐的开始：

# %%
def collate_by_value(batch, pad_id, ignore_index=-100):
    width = max(len(s) for s in batch) + 1
    inputs, targets = [], []
    for seq in batch:
        full = list(seq) + [pad_id] * (width - len(seq))
        x, y = np.array(full[:-1]), np.array(full[1:])
        where = np.nonzero(y == pad_id)[0]
        if len(where) > 1:
            y[where[1:]] = ignore_index  # 原书：除第一个之外都掩掉
        inputs.append(x)
        targets.append(y)
    return np.array(inputs), np.array(targets)


batch = [[11, EOT, 12], [13]]  # 第一条的文本中间含有结束词元
_, by_value = collate_by_value(batch, EOT)
_, by_position = sd.collate(batch, EOT)
print("按值：  ", by_value.tolist())
print("按位置：", by_position.tolist())
assert by_value[0, 2] == -100 and by_position[0, 2] == EOT
ordinary = [[1, 2, 3, 4], [5, 6]]
assert (collate_by_value(ordinary, EOT)[1] == sd.collate(ordinary, EOT)[1]).all()

# %% [markdown]
# 按值掩码把第一条**真正的结束位置**（第 2 位的目标）掩掉了，模型在这条上学不到“答完要停”；
# 而文本中间那个结束词元反倒被当成了要学的目标。按位置掩码两处都对：文本里有什么就学什么，真实长度之后才是补齐。
# 没有这种特殊文本时（第二个检查），两种写法结果相同。

# %% [markdown]
# ## 练习 3：DPO 的起点
#
# 记 $z = [\log\pi(y_w) - \log\pi_{\text{ref}}(y_w)] - [\log\pi(y_l) - \log\pi_{\text{ref}}(y_l)]$，损失 $L = -\log\sigma(\beta z)$。
# 策略等于参照时 $z = 0$，$L = -\log\sigma(0) = -\log\frac12 = \ln 2$。
# 又 $\frac{d}{dx}\log\sigma(x) = 1 - \sigma(x) = \sigma(-x)$，所以 $\frac{dL}{dz} = -\beta\,\sigma(-\beta z)$，在 $z = 0$ 处等于 $-\beta/2$：
# 第一步的梯度就是 $-\frac{\beta}{2}\,\nabla[\log\pi(y_w) - \log\pi(y_l)]$——抬高 chosen、压低 rejected，力度相同。

# %%
for beta in (0.1, 0.5):
    z = tt.tensor(np.zeros(1), requires_grad=True)
    loss = -NDPO.log_sigmoid(z * beta).mean()
    loss.backward()
    print(f"β = {beta}：损失 {loss.item():.6f}（ln 2 = {math.log(2):.6f}），dL/dz = {z.grad.data[0]:.4f}（−β/2 = {-beta / 2}）")
    assert abs(loss.item() - math.log(2)) < 1e-12 and abs(z.grad.data[0] + beta / 2) < 1e-12

# %% [markdown]
# ## 练习 4：β 的作用
#
# 损失只通过 $\beta z$ 依赖于 $z$。列出几组 $z$ 与 β 下的损失和导数：

# %%
def loss_and_grad(z, beta):
    t = tt.tensor(np.array([float(z)]), requires_grad=True)
    loss = -NDPO.log_sigmoid(t * beta).mean()
    loss.backward()
    return loss.item(), float(t.grad.data[0])


print("z \\ β " + "".join(f"{b:>20}" for b in (0.01, 0.1, 0.5, 1.0)))
for z in (-2.0, 0.0, 2.0, 10.0):
    cells = "".join(f"{f'{l:.3f} / {g:+.4f}':>20}" for l, g in (loss_and_grad(z, b) for b in (0.01, 0.1, 0.5, 1.0)))
    print(f"{z:>6}{cells}")
target = 0.1  # 把损失降到 0.1 需要 βz = −log(e^0.1 − 1)
need = -math.log(math.exp(target) - 1)
for beta in (0.01, 0.1, 0.5, 1.0):
    print(f"β = {beta:<5} 时要 z ≈ {need / beta:8.1f}（对数概率之差相对参照要变这么多）")
assert abs(loss_and_grad(need / 0.1, 0.1)[0] - target) < 1e-9

# %% [markdown]
# 表里每格是“损失 / dL/dz”。β 越小，同样的 $z$ 对应的损失越接近 ln 2、梯度越小（绝对值总小于 β）；
# 要把损失降到同样的水平，$z$ 必须与 β 成反比地变大——也就是策略要离参照走得更远。反过来，β 大时
# 很小的偏离就能让损失变小，策略被“拴”在参照附近。所以 β 常被说成控制离参照模型多远的旋钮。

# %% [markdown]
# ## 练习 5：分词的 F1 为什么按字符区间
#
# 只比词的集合，切分的位置错了也可能满分：句子“哈哈哈”，标准答案切成“哈哈 哈”，回答切成“哈 哈哈”，
# 两边的词集合都是 {哈哈, 哈}，可每个词所在的位置都不对。

# %%
def bag_of_words_f1(pred, gold):
    common = sum((Counter(pred) & Counter(gold)).values())
    return 0.0 if common == 0 else 2 * common / (len(pred) + len(gold))


gold, pred = "哈哈 哈", "哈 哈哈"
bag = bag_of_words_f1(pred.split(), gold.split())
spans = ev.score("segment", pred, gold)
print("词集合 F1：", bag, "| 字符区间：", sorted(ev.word_spans(gold.split())), "对", sorted(ev.word_spans(pred.split())))
print("按区间的 (EM, F1)：", spans)
assert bag == 1.0 and spans == (0.0, 0.0)

# %% [markdown]
# 按区间比较时，一个词只有起点和终点都对才算对，这正是分词评测的通行做法（区间的 F1）。
