"""SFT 与 DPO 的跨轨道一致性（float64，逐个参数按名字比较梯度，含 LoRA），以及与手算、NumPy 参照公式的对照。"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt_testutil import default_dtype, numpy_model, tiny_cfg, torch_threads  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy import dpo as ndpo  # noqa: E402
from gpt_numpy import lora as nlora  # noqa: E402
from gpt_torch import dpo as tdpo  # noqa: E402
from gpt_torch import lora as tlora  # noqa: E402
from gpt_torch.model import GPTModel as TorchGPT  # noqa: E402
from llmcore.errors import UsageError  # noqa: E402
from llmcore.finetune import dpo_data as dd  # noqa: E402
from llmcore.finetune import sft_data as sd  # noqa: E402

pytestmark = pytest.mark.torch
F64 = dict(rtol=1e-9, atol=1e-12)
PAD = 0


@pytest.fixture(autouse=True)
def _env():
    with torch_threads(1), default_dtype(tt.float64):
        yield


def twin(seed, lora=False, tied=False):
    nm = numpy_model(tiny_cfg(tie_weights=tied, qkv_bias=True), seed)
    tm = TorchGPT(nm.cfg).double()
    tm.load_arrays(nm.state_arrays())
    if lora:
        nlora.replace_linear_with_lora(nm, rank=2, alpha=4.0, seed=11)
        tlora.replace_linear_with_lora(tm, rank=2, alpha=4.0, seed=11)
        rng = np.random.default_rng(seed + 50)  # 非零的 B，A 才有梯度
        tparams = dict(tm.named_parameters())
        for n, p in nm.named_parameters():
            if n.endswith(".lora.B"):
                p.data[...] = rng.normal(0, 0.3, p.shape)
                with torch.no_grad():
                    tparams[n].copy_(torch.as_tensor(p.data))
    return nm, tm


def pair_batch(cfg, seed, b=3):
    """随机的偏好对（提示 + 两个不同长度的回答），经 collate_pairs 成批。"""
    rng = np.random.default_rng(seed)
    v = cfg.vocab_size
    data = dd.PairData([], [], [], [])
    for _ in range(b):
        p = int(rng.integers(2, 5))
        data.prompts.append(rng.integers(1, v, p).tolist())
        data.chosen.append(rng.integers(1, v, int(rng.integers(1, 5))).tolist())
        data.rejected.append(rng.integers(1, v, int(rng.integers(1, 5))).tolist())
        data.kept.append(len(data.kept))
    return dd.collate_pairs(data, list(range(b)), PAD)


def grads(nm, tm, loss_n, loss_t):
    nm.zero_grad()
    loss_n.backward()
    tm.zero_grad()
    loss_t.backward()
    gn = {n: p.grad.data for n, p in nm.named_parameters() if p.requires_grad}
    gt = {n: p.grad.numpy() for n, p in tm.named_parameters() if p.requires_grad}
    assert list(gn) == list(gt)
    return gn, gt


def test_dpo_loss_hand_computation():
    pc, pr = np.array([-1.0, -2.0]), np.array([-3.0, -1.0])
    rc, rr = np.array([-1.5, -2.0]), np.array([-2.5, -1.5])
    beta = 0.5
    # logits = (pc − pr) − (rc − rr) = [2 − 1, −1 + 0.5] = [1, −0.5]；L = −(log σ(0.5) + log σ(−0.25)) / 2
    want = -(math.log(1 / (1 + math.exp(-0.5))) + math.log(1 / (1 + math.exp(0.25)))) / 2
    assert want == pytest.approx(0.6500082, abs=1e-6)
    loss_ref, cr, rj = dd.dpo_loss_reference(pc, pr, rc, rr, beta)
    assert loss_ref == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(cr, [0.25, 0.0])
    np.testing.assert_allclose(rj, [-0.25, 0.25])
    stats = dd.preference_stats(loss_ref, cr, rj)
    assert stats.margin == pytest.approx(0.125) and stats.accuracy == 0.5
    # 两条轨道：损失相同，对策略对数概率的梯度 = −β(1 − σ(β·logits)) / B（rejected 取相反数）
    n_pc, n_pr = tt.tensor(pc, requires_grad=True), tt.tensor(pr, requires_grad=True)
    ln, _, _ = ndpo.dpo_loss(n_pc, n_pr, rc, rr, beta)
    ln.backward()
    t_pc, t_pr = torch.tensor(pc, requires_grad=True), torch.tensor(pr, requires_grad=True)
    lt, tcr, trj = tdpo.dpo_loss(t_pc, t_pr, rc, rr, beta)
    lt.backward()
    assert ln.item() == pytest.approx(want, rel=1e-12) and lt.item() == pytest.approx(want, rel=1e-12)
    sig = 1 / (1 + np.exp(-beta * np.array([1.0, -0.5])))
    g = -beta * (1 - sig) / 2
    np.testing.assert_allclose(n_pc.grad.data, g, **F64)
    np.testing.assert_allclose(n_pr.grad.data, -g, **F64)
    np.testing.assert_allclose(t_pc.grad.numpy(), g, **F64)
    np.testing.assert_allclose(tcr, cr) and np.testing.assert_allclose(trj, rj)
    # 很大的差值不溢出
    big, _, _ = ndpo.dpo_loss(tt.tensor([500.0]), tt.tensor([-500.0]), np.zeros(1), np.zeros(1), 1.0)
    assert big.item() == 0.0
    big, _, _ = ndpo.dpo_loss(tt.tensor([-500.0]), tt.tensor([500.0]), np.zeros(1), np.zeros(1), 1.0)
    assert big.item() == pytest.approx(1000.0)
    with pytest.raises(UsageError, match="beta"):
        ndpo.dpo_loss(n_pc, n_pr, rc, rr, 0.0)


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logprobs_match_reference(average):
    nm, tm = twin(0)
    batch = pair_batch(nm.cfg, 0)
    x, y = batch["chosen_inputs"], batch["chosen_targets"]
    with tt.no_grad():
        logits = nm(x).data
    want = dd.sequence_logprobs_reference(logits, y, average)
    np.testing.assert_allclose(ndpo.sequence_logprobs(nm, x, y, average).data, want, **F64)
    np.testing.assert_allclose(tdpo.sequence_logprobs(tm, x, y, average).detach().numpy(), want, **F64)
    # 只计回答：改动提示或补齐处的目标不改变结果，改动回答的目标会改变
    y2 = y.copy()
    y2[y2 == sd.IGNORE_INDEX] = sd.IGNORE_INDEX
    first_answer = int(np.argmax(y[0] != sd.IGNORE_INDEX))
    y2[0, first_answer] = (y[0, first_answer] + 1) % nm.cfg.vocab_size
    changed = ndpo.sequence_logprobs(nm, x, y2, average).data
    assert changed[0] != pytest.approx(want[0]) and changed[1:] == pytest.approx(want[1:])


@pytest.mark.parametrize("lora,average", [(False, False), (True, False), (False, True)])
def test_dpo_parity_loss_and_grads(lora, average):
    nm, tm = twin(1, lora=lora)
    ref_n, ref_t = twin(2)  # 参照模型：另一组权重（真实训练里是 SFT 模型的冻结副本）
    batch = pair_batch(nm.cfg, 1)
    ln, sn = ndpo.dpo_batch_loss(nm, ref_n, batch, beta=0.3, average=average)
    lt, st = tdpo.dpo_batch_loss(tm, ref_t, batch, beta=0.3, average=average)
    assert ln.item() == pytest.approx(lt.item(), rel=1e-12)
    for k, v in sn.as_dict().items():
        assert v == pytest.approx(st.as_dict()[k], rel=1e-9, abs=1e-12), k
    # 与 NumPy 参照公式一致
    with tt.no_grad():
        lp = {m: {s: dd.sequence_logprobs_reference(m(batch[f"{s}_inputs"]).data, batch[f"{s}_targets"], average)
                  for s in ("chosen", "rejected")} for m in (nm, ref_n)}
    want, _, _ = dd.dpo_loss_reference(lp[nm]["chosen"], lp[nm]["rejected"], lp[ref_n]["chosen"],
                                       lp[ref_n]["rejected"], 0.3)
    assert ln.item() == pytest.approx(want, rel=1e-10)
    gn, gt = grads(nm, tm, ln, lt)
    if lora:
        assert gn and all(".lora." in n for n in gn)
    else:
        assert len(gn) == len(list(nm.parameters()))
    for n in gn:
        np.testing.assert_allclose(gn[n], gt[n], **F64, err_msg=n)
        assert np.abs(gt[n]).max() > 0, n
    # 参照模型冻结：没有梯度
    assert all(p.grad is None for p in ref_n.parameters()) and all(p.grad is None for p in ref_t.parameters())


def test_dpo_starts_at_log2_when_policy_is_reference():
    nm, tm = twin(3)
    ref_n, ref_t = twin(3)
    batch = pair_batch(nm.cfg, 3)
    ln, stats = ndpo.dpo_batch_loss(nm, ref_n, batch)
    assert ln.item() == pytest.approx(math.log(2), rel=1e-12)
    assert stats.margin == 0.0 and stats.accuracy == 0.0 and stats.chosen_reward == 0.0
    # 事先算好参照对数概率，结果相同
    ref = tdpo.reference_logprobs(ref_t, batch)
    lt, _ = tdpo.dpo_batch_loss(tm, None, batch, ref_logprobs=ref)
    assert lt.item() == pytest.approx(math.log(2), rel=1e-12)
    with pytest.raises(ValueError, match="参照模型"):
        ndpo.dpo_batch_loss(nm, None, batch)


@pytest.mark.parametrize("lora,mask_prompt", [(False, False), (False, True), (True, True)])
def test_sft_loss_parity(lora, mask_prompt):
    nm, tm = twin(4, lora=lora, tied=not lora)
    rng = np.random.default_rng(4)
    seqs = [rng.integers(1, nm.cfg.vocab_size, n).tolist() for n in (9, 4, 6)]
    inputs, targets = sd.collate(seqs, PAD, prompt_lengths=[5, 2, 3] if mask_prompt else None)
    ln = ndpo.sft_loss(nm, inputs, targets)
    lt = tdpo.sft_loss(tm, inputs, targets)
    with tt.no_grad():
        logits = nm(inputs).data
    mask = targets != sd.IGNORE_INDEX
    want = -dd.sequence_logprobs_reference(logits, targets).sum() / mask.sum()  # 计入位置上的平均交叉熵
    assert ln.item() == pytest.approx(want, rel=1e-10) and lt.item() == pytest.approx(want, rel=1e-10)
    gn, gt = grads(nm, tm, ln, lt)
    for n in gn:
        np.testing.assert_allclose(gn[n], gt[n], **F64, err_msg=n)
