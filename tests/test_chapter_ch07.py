"""第 7 章页面上的实现（标着 `# 章内实现` 的单元）与库的实现逐项一致。

只取出这些单元执行（不跑整个 notebook），与库比较：划分的泄漏检查（instruct_bench.check_disjoint）、
提示模板（instruct_data）、collate（sft_data.collate，含提示掩码与截断）、SFT 的损失与一步训练（两条轨道的
dpo.sft_loss、InstructBackend.sft_step，float64）、取回答与判分（instruct_eval），DPO 的序列对数概率、损失、
奖励与统计（dpo_data 的 NumPy 参照公式、两条轨道的 dpo.py，含每个参数的梯度）。
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chapter_inline import inline_namespace  # noqa: E402
from gpt_testutil import default_dtype, numpy_model, tiny_cfg, torch_threads  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy import dpo as NDPO  # noqa: E402
from gpt_numpy import instruct as NINS  # noqa: E402
from gpt_torch import dpo as TDPO  # noqa: E402
from gpt_torch.model import GPTModel as TorchGPT  # noqa: E402
from llmcore.errors import DataError  # noqa: E402
from llmcore.finetune import dpo_data as dd  # noqa: E402
from llmcore.finetune import instruct_data as idata  # noqa: E402
from llmcore.finetune import instruct_eval as ev  # noqa: E402
from llmcore.finetune import sft_data as sd  # noqa: E402
from llmcore.finetune.instruct_bench import TASKS, Benchmark, build_benchmark, check_disjoint  # noqa: E402

pytestmark = pytest.mark.torch

PAD = 0


@pytest.fixture(scope="module")
def ch07() -> dict[str, Any]:
    return inline_namespace("ch07", min_cells=6)


@pytest.fixture(scope="module")
def bench() -> Benchmark:
    return build_benchmark(sizes={"train": 60, "val": 20, "test": 20})


@pytest.fixture
def f64():
    with torch_threads(1), default_dtype(tt.float64):
        yield


# ---------------------------------------------------------------------------- 基准与模板
def test_shared_sources(ch07: dict[str, Any], bench: Benchmark) -> None:
    assert ch07["shared_sources"](bench) == []
    check_disjoint(bench)
    for split in (1, 2):  # 一道训练题混进验证集或测试集：两边都发现
        parts = [list(p) for p in bench]
        parts[split].append(bench.train[3])
        leaky = Benchmark(*parts)
        assert ch07["shared_sources"](leaky) == [bench.train[3]["source"]]
        with pytest.raises(DataError):
            check_disjoint(leaky)


def test_prompt_format(ch07: dict[str, Any], bench: Benchmark) -> None:
    entries = bench.train + bench.test + [{"instruction": "用一句话介绍北京。", "input": "", "output": "北京。"}]
    for e in entries:
        assert ch07["format_input_zh"](e) == idata.format_input(e)
        assert ch07["format_prompt_zh"](e) == idata.format_prompt(e)
        assert ch07["format_prompt_zh"](e) + e["output"] == idata.format_example(e)


# ---------------------------------------------------------------------------- collate
@pytest.mark.parametrize("seed", range(6))
def test_collate_random(ch07: dict[str, Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = [rng.integers(1, 50, int(rng.integers(1, 12))).tolist() for _ in range(int(rng.integers(1, 6)))]
    if seed % 2:
        batch[0][len(batch[0]) // 2] = PAD  # 序列里真的出现结束词元：按位置掩码，不误掩
    plens = [int(rng.integers(0, len(s) + 1)) for s in batch]
    for kw in ({}, {"prompt_lengths": plens}, {"allowed_max_length": 4}, {"prompt_lengths": plens,
                                                                          "allowed_max_length": 7}):
        mine = ch07["collate_mine"](batch, PAD, **kw)
        lib = sd.collate(batch, PAD, **kw)
        for a, b in zip(mine, lib):
            assert a.dtype == b.dtype == np.int64
            np.testing.assert_array_equal(a, b)


def test_collate_book_example(ch07: dict[str, Any]) -> None:
    x, y = ch07["collate_mine"]([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], 50256)
    assert x.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert y.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]


# ---------------------------------------------------------------------------- SFT 的损失与一步
def sft_batch(cfg: Any, seed: int, mask_prompt: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, cfg.vocab_size, int(rng.integers(3, cfg.context_length))).tolist() for _ in range(3)]
    plens = [int(rng.integers(1, len(s))) for s in seqs] if mask_prompt else None
    return sd.collate(seqs, PAD, prompt_lengths=plens)


@pytest.mark.parametrize("mask_prompt", [False, True])
def test_sft_loss_both_tracks(ch07: dict[str, Any], f64: None, mask_prompt: bool) -> None:
    nm = numpy_model(tiny_cfg(qkv_bias=True), 0)
    tm = TorchGPT(nm.cfg).double()
    tm.load_arrays(nm.state_arrays())
    x, y = sft_batch(nm.cfg, 1, mask_prompt)
    mine = ch07["sft_loss_tt"](nm, x, y)
    nm.zero_grad()
    mine.backward()
    g_mine = {n: p.grad.data.copy() for n, p in nm.named_parameters()}
    lib = NDPO.sft_loss(nm, x, y)
    nm.zero_grad()
    lib.backward()
    assert abs(mine.item() - lib.item()) < 1e-12
    for n, p in nm.named_parameters():
        np.testing.assert_allclose(g_mine[n], p.grad.data, rtol=1e-9, atol=1e-13, err_msg=n)
    t_mine = ch07["sft_loss_torch"](tm, x, y)
    t_lib = TDPO.sft_loss(tm, x, y)
    assert abs(t_mine.item() - t_lib.item()) < 1e-12 and abs(t_mine.item() - mine.item()) < 1e-10
    t_mine.backward()
    for n, p in tm.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), g_mine[n], rtol=1e-8, atol=1e-12, err_msg=n)


def test_sft_step_matches_backend(ch07: dict[str, Any], f64: None) -> None:
    """手写的一步（AdamW，不衰减）与库后端（权重衰减 0、不裁剪）逐步相同；torch 的手写一步也相同。"""
    cfg = tiny_cfg()
    ours, lib = numpy_model(cfg, 2), numpy_model(cfg, 2)
    tm = TorchGPT(cfg).double()
    tm.load_arrays(ours.state_arrays())
    opt = tt.optim.AdamW(ours.parameters(), lr=1e-2, weight_decay=0.0)
    t_opt = torch.optim.AdamW(tm.parameters(), lr=1e-2, weight_decay=0.0)
    backend = NINS.InstructBackend(lib, lr=1e-2, weight_decay=0.0, grad_clip=0.0)
    for step in range(4):
        x, y = sft_batch(cfg, 10 + step)
        a = ch07["sft_step_tt"](ours, opt, x, y)
        b = backend.sft_step(x, y, 1e-2)
        c = ch07["sft_step_torch"](tm, t_opt, x, y)
        assert abs(a - b) < 1e-12 and abs(a - c) < 1e-9
    lib_state = lib.state_arrays()
    t_state = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    for k, v in ours.state_arrays().items():
        np.testing.assert_allclose(v, lib_state[k], rtol=1e-10, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(v, t_state[k], rtol=1e-7, atol=1e-9, err_msg=k)


# ---------------------------------------------------------------------------- 取回答与判分
def test_extract_answer(ch07: dict[str, Any], bench: Benchmark) -> None:
    texts = ["", "只有生成的部分", "  两行\n第二行", "正面<|endoftext|>后面", "答案\n\n### 指令：\n下一题",
             "### 回答：\n### 回答：\n第二个", "x ### y"]
    for e in bench.test[:10]:
        p = idata.format_prompt(e)
        texts += [p + e["output"], p + " " + e["output"] + "<|endoftext|>", p + e["output"] + "\n\n### 输入：\n…",
                  p, p + "\n\n"]
    for t in texts:
        assert ch07["extract_answer"](t) == ev.extract_response(t, first_line=True), t


def test_score(ch07: dict[str, Any], bench: Benchmark) -> None:
    rng = np.random.default_rng(0)
    cases = [("segment", "我 爱 北京", "我 爱 北京"), ("segment", "我爱 北京", "我 爱 北京"), ("segment", "", "我"),
             ("entity", "江泽民，李鹏", "李鹏、江泽民"), ("entity", "无。", "无"), ("entity", "", "无"),
             ("entity", "李鹏 、 江泽民", "李鹏"), ("pinyin", "Bei Jing。", "bei jing"), ("pinyin", "bei", "bei jing"),
             ("sentiment", "正面。", "正面"), ("sentiment", "正面的", "正面"), ("t2s", "中国人民", "中国人们"),
             ("", "The cat", "the  cat"), ("other", "a b c", "a b d")]
    for e in bench.train + bench.test:
        bad = dd.rule_rejected(e, rng)
        cases += [(e["task"], e["output"], e["output"]), (e["task"], " " + e["output"] + "。", e["output"])]
        if bad is not None:
            cases.append((e["task"], bad, e["output"]))
    for task, pred, ref in cases:
        assert ch07["score_mine"](task, pred, ref) == ev.score(task, pred, ref), (task, pred, ref)
    assert {t for t, _, _ in cases} >= set(TASKS)


# ---------------------------------------------------------------------------- DPO
def pair_batch(cfg: Any, seed: int, b: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = cfg.vocab_size
    data = dd.PairData([], [], [], [])
    for i in range(b):
        data.prompts.append(rng.integers(1, v, int(rng.integers(2, 5))).tolist())
        data.chosen.append(rng.integers(1, v, int(rng.integers(1, 5))).tolist())
        data.rejected.append(rng.integers(1, v, int(rng.integers(1, 5))).tolist())
        data.kept.append(i)
    return dd.collate_pairs(data, list(range(b)), PAD)


@pytest.mark.parametrize("seed", [0, 1])
def test_sequence_logprob(ch07: dict[str, Any], f64: None, seed: int) -> None:
    nm = numpy_model(tiny_cfg(), seed)
    tm = TorchGPT(nm.cfg).double()
    tm.load_arrays(nm.state_arrays())
    batch = pair_batch(nm.cfg, seed)
    for side in ("chosen", "rejected"):
        x, y = batch[f"{side}_inputs"], batch[f"{side}_targets"]
        mine = ch07["sequence_logprob_tt"](nm, x, y)
        ref = dd.sequence_logprobs_reference(nm(x).data, y)
        np.testing.assert_allclose(mine.data, ref, rtol=1e-12)
        np.testing.assert_allclose(mine.data, NDPO.sequence_logprobs(nm, x, y).data, rtol=1e-12)
        t_mine = ch07["sequence_logprob_torch"](tm, x, y)
        np.testing.assert_allclose(t_mine.detach().numpy(), TDPO.sequence_logprobs(tm, x, y).detach().numpy(),
                                   rtol=1e-12)
        np.testing.assert_allclose(t_mine.detach().numpy(), ref, rtol=1e-10)
        g = np.random.default_rng(seed).standard_normal(len(x))  # 梯度：与库的写法（交叉熵 reduction=none）对照
        nm.zero_grad()
        (mine * tt.tensor(g)).sum().backward()
        ours = {n: p.grad.data.copy() for n, p in nm.named_parameters()}
        nm.zero_grad()
        (NDPO.sequence_logprobs(nm, x, y) * tt.tensor(g)).sum().backward()
        for n, p in nm.named_parameters():
            np.testing.assert_allclose(ours[n], p.grad.data, rtol=1e-9, atol=1e-13, err_msg=n)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_and_stats(ch07: dict[str, Any], f64: None, beta: float) -> None:
    rng = np.random.default_rng(3)
    pc_np, pr_np, rc, rr = (rng.standard_normal(5) * 3 for _ in range(4))
    pc, pr = tt.tensor(pc_np, requires_grad=True), tt.tensor(pr_np, requires_grad=True)
    loss, cr, rjr = ch07["dpo_loss_tt"](pc, pr, rc, rr, beta)
    ref_loss, ref_cr, ref_rjr = dd.dpo_loss_reference(pc_np, pr_np, rc, rr, beta)
    assert abs(loss.item() - ref_loss) < 1e-12
    np.testing.assert_allclose(cr, ref_cr, rtol=1e-12)
    np.testing.assert_allclose(rjr, ref_rjr, rtol=1e-12)
    stats = dd.preference_stats(ref_loss, ref_cr, ref_rjr)
    margin, acc = ch07["preference_summary"](cr, rjr)
    assert abs(margin - stats.margin) < 1e-12 and acc == stats.accuracy
    loss.backward()
    lpc, lpr = tt.tensor(pc_np, requires_grad=True), tt.tensor(pr_np, requires_grad=True)
    lib_loss, _, _ = NDPO.dpo_loss(lpc, lpr, rc, rr, beta)
    lib_loss.backward()
    np.testing.assert_allclose(pc.grad.data, lpc.grad.data, rtol=1e-12)
    np.testing.assert_allclose(pr.grad.data, lpr.grad.data, rtol=1e-12)
    tpc, tpr = torch.tensor(pc_np, requires_grad=True), torch.tensor(pr_np, requires_grad=True)
    t_loss, t_cr, t_rjr = ch07["dpo_loss_torch"](tpc, tpr, rc, rr, beta)
    t_lib, _, _ = TDPO.dpo_loss(tpc, tpr, rc, rr, beta)
    assert abs(t_loss.item() - ref_loss) < 1e-12 and abs(t_lib.item() - ref_loss) < 1e-12
    np.testing.assert_allclose(t_cr, ref_cr, rtol=1e-12)
    t_loss.backward()
    np.testing.assert_allclose(tpc.grad.numpy(), pc.grad.data, rtol=1e-12)
    # 策略 = 参照：损失 ln 2，奖励差 0，偏好准确率 0；log σ 在很大、很小的输入上不溢出
    l0, c0, r0 = ch07["dpo_loss_tt"](tt.tensor(rc), tt.tensor(rr), rc, rr, beta)
    assert abs(l0.item() - math.log(2)) < 1e-12 and ch07["preference_summary"](c0, r0) == (0.0, 0.0)
    big = ch07["log_sigmoid_tt"](tt.tensor(np.array([-800.0, 0.0, 800.0])))
    np.testing.assert_allclose(big.data, [-800.0, -math.log(2), 0.0], atol=1e-12)


def test_dpo_batch_matches_library_both_tracks(ch07: dict[str, Any], f64: None) -> None:
    """一整批：手写的对数概率 + 损失，与库的 dpo_batch_loss 在两条轨道上的损失、统计与每个参数的梯度相同。"""
    policy, reference = numpy_model(tiny_cfg(), 4), numpy_model(tiny_cfg(), 5)
    batch = pair_batch(policy.cfg, 7, b=4)
    with tt.no_grad():
        rc = ch07["sequence_logprob_tt"](reference, batch["chosen_inputs"], batch["chosen_targets"]).data
        rr = ch07["sequence_logprob_tt"](reference, batch["rejected_inputs"], batch["rejected_targets"]).data
    pc = ch07["sequence_logprob_tt"](policy, batch["chosen_inputs"], batch["chosen_targets"])
    pr = ch07["sequence_logprob_tt"](policy, batch["rejected_inputs"], batch["rejected_targets"])
    loss, cr, rjr = ch07["dpo_loss_tt"](pc, pr, rc, rr, 0.2)
    policy.zero_grad()
    loss.backward()
    ours = {n: p.grad.data.copy() for n, p in policy.named_parameters()}
    lib_loss, stats = NDPO.dpo_batch_loss(policy, reference, batch, 0.2)
    policy.zero_grad()
    lib_loss.backward()
    assert abs(loss.item() - lib_loss.item()) < 1e-12
    margin, acc = ch07["preference_summary"](cr, rjr)
    assert abs(margin - stats.margin) < 1e-12 and acc == stats.accuracy
    for n, p in policy.named_parameters():
        np.testing.assert_allclose(ours[n], p.grad.data, rtol=1e-9, atol=1e-13, err_msg=n)
    tp, tr = TorchGPT(policy.cfg).double(), TorchGPT(policy.cfg).double()
    tp.load_arrays(policy.state_arrays())
    tr.load_arrays(reference.state_arrays())
    with torch.no_grad():
        trc = ch07["sequence_logprob_torch"](tr, batch["chosen_inputs"], batch["chosen_targets"])
        trr = ch07["sequence_logprob_torch"](tr, batch["rejected_inputs"], batch["rejected_targets"])
    tpc = ch07["sequence_logprob_torch"](tp, batch["chosen_inputs"], batch["chosen_targets"])
    tpr = ch07["sequence_logprob_torch"](tp, batch["rejected_inputs"], batch["rejected_targets"])
    t_loss, _, _ = ch07["dpo_loss_torch"](tpc, tpr, trc, trr, 0.2)
    assert abs(t_loss.item() - loss.item()) < 1e-10
    assert abs(TDPO.dpo_batch_loss(tp, tr, batch, 0.2)[0].item() - loss.item()) < 1e-10
    t_loss.backward()
    for n, p in tp.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ours[n], rtol=1e-7, atol=1e-11, err_msg=n)
