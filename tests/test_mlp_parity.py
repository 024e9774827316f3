"""整体对照：同一个小 MLP（2 个隐藏层、GELU、LayerNorm、交叉熵）在 tinytensor 与 torch 上
从相同的初始权重、用相同的批次、AdamW 训练 50 步，损失曲线与最终参数一致。"""

from __future__ import annotations

import numpy as np
import pytest

import tinytensor as tt
from llmcore.schedule import warmup_cosine_lr
from tinytensor import nn, optim
from tinytensor.nn import functional as F
from tinytensor.optim.lr_scheduler import LambdaLR

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

N_IN, HIDDEN, N_CLASS, BATCH, STEPS = 6, 32, 3, 16, 50


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """小矩阵上 torch 的多线程只有开销；机器繁忙时 2 线程比 1 线程慢上十几倍。"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _dataset(n=300, seed=0):
    """三团高斯点，每类一个中心；返回 (x, y)。"""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((N_CLASS, N_IN)) * 0.8  # 有重叠：损失不会降到 0
    y = rng.integers(0, N_CLASS, size=n)
    x = centers[y] + rng.standard_normal((n, N_IN))
    return x, y


def _batches(n, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=BATCH, replace=False) for _ in range(STEPS)]


def _tt_model():
    return nn.Sequential(
        nn.Linear(N_IN, HIDDEN), nn.GELU(), nn.LayerNorm(HIDDEN),
        nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Dropout(0.0),
        nn.Linear(HIDDEN, N_CLASS),
    )


def _torch_model():
    return torch.nn.Sequential(
        torch.nn.Linear(N_IN, HIDDEN), torch.nn.GELU(approximate="tanh"), torch.nn.LayerNorm(HIDDEN),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.GELU(approximate="tanh"), torch.nn.Dropout(0.0),
        torch.nn.Linear(HIDDEN, N_CLASS),
    )


def _lr_lambda(step):
    return warmup_cosine_lr(step, max_lr=1.0, warmup_steps=5, total_steps=STEPS, min_lr=0.1)


def _train(dtype, extras):
    """返回 (tinytensor 损失曲线, torch 损失曲线, tt 模型, torch 模型)。"""
    x_all, y_all = _dataset()
    batches = _batches(len(x_all))
    tt.manual_seed(0)
    m = _tt_model().to(dtype)
    tm = _torch_model().to(getattr(torch, np.dtype(dtype).name))
    assert list(m.state_dict()) == list(tm.state_dict())
    tm.load_state_dict({k: torch.from_numpy(np.array(v.data)) for k, v in m.state_dict().items()})

    opt = optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    topt = torch.optim.AdamW(tm.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    if extras:
        sch, tsch = LambdaLR(opt, _lr_lambda), torch.optim.lr_scheduler.LambdaLR(topt, _lr_lambda)

    losses, tlosses = [], []
    for idx in batches:
        xb, yb = x_all[idx].astype(dtype), y_all[idx]

        loss = F.cross_entropy(m(tt.tensor(xb)), tt.tensor(yb))
        opt.zero_grad()
        loss.backward()
        if extras:
            nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())

        tloss = torch.nn.functional.cross_entropy(tm(torch.from_numpy(xb)), torch.from_numpy(yb))
        topt.zero_grad()
        tloss.backward()
        if extras:
            torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0, foreach=False)
        topt.step()
        tlosses.append(tloss.item())
        if extras:
            sch.step()
            tsch.step()
    return np.array(losses), np.array(tlosses), m, tm


@pytest.mark.parametrize("extras", [False, True], ids=["adamw", "adamw+clip+schedule"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mlp_loss_curve_matches_torch(dtype, extras):
    losses, tlosses, m, tm = _train(dtype, extras)
    assert losses[-5:].mean() < 0.5 * losses[:5].mean()  # 确实在学
    if dtype == np.float64:
        np.testing.assert_allclose(losses, tlosses, rtol=1e-10, atol=0)
        ptol = dict(rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_allclose(losses, tlosses, rtol=1e-4, atol=0)
        ptol = dict(rtol=1e-3, atol=1e-4)
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        assert p.dtype == dtype
        np.testing.assert_allclose(p.data, tparams[name].detach().numpy(), **ptol, err_msg=name)
