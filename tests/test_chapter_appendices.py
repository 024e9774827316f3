"""附录 A、D 页面上的实现（标着 `# 章内实现` 的单元）与库的实现逐项一致。

只取出这些单元执行（不跑整个 notebook），在同样的输入上与库比较（float64）：
- 附录 D：学习率调度（llmcore.schedule、torch 与 tinytensor 的 LambdaLR）、梯度裁剪（tinytensor 与 torch 的
  clip_grad_norm_）、AdamW（tt.optim.AdamW、torch.optim.AdamW，多步、多个参数组形状）。
- 附录 A：手算的逻辑回归梯度（对 torch、tinytensor 的自动求导）、SimpleSGD（对 torch.optim.SGD、tt.optim.SGD）、
  simple_loader（对 DataLoader）、shard_indices（对 DistributedSampler）、rank_slice（对 StepBatches）、
  average_gradients（torchrun 起 2 个进程，对 DDP 的同步梯度）。
页面上的代码一旦与库分道扬镳，这里就会失败。
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from chapter_inline import ROOT, inline_cells, inline_namespace  # noqa: E402

import tinytensor as tt  # noqa: E402
from llmcore.batches import StepBatches  # noqa: E402
from llmcore.schedule import warmup_cosine_lr  # noqa: E402

pytestmark = pytest.mark.torch

@pytest.fixture(scope="module")
def appd() -> dict[str, Any]:
    return inline_namespace("appendix_d", min_cells=3)


@pytest.fixture(scope="module")
def appa() -> dict[str, Any]:
    return inline_namespace("appendix_a", min_cells=3)


# ---------------- 附录 D ----------------


@pytest.mark.parametrize(
    "max_lr,warmup,total,min_lr", [(2e-3, 100, 2000, 2e-4), (1.0, 0, 10, 0.0), (3e-4, 7, 7, 3e-5), (0.5, 1, 50, 0.1)]
)
def test_schedule(appd: dict[str, Any], max_lr: float, warmup: int, total: int, min_lr: float) -> None:
    mine = appd["warmup_cosine"]
    steps = range(total + 5)
    got = [mine(s, max_lr, warmup, total, min_lr) for s in steps]
    ref = [warmup_cosine_lr(s, max_lr=max_lr, warmup_steps=warmup, total_steps=total, min_lr=min_lr) for s in steps]
    assert got == ref  # 逐位相同

    def factor(s: int) -> float:
        return mine(s, 1.0, warmup, total, min_lr / max_lr)

    for lib, opt_cls, sched_cls in (
        (torch, torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR),
        (tt, tt.optim.SGD, tt.optim.lr_scheduler.LambdaLR),
    ):
        opt = opt_cls([lib.zeros(1, requires_grad=True)], lr=max_lr)
        sched = sched_cls(opt, factor)
        seen = []
        for _ in steps:
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        np.testing.assert_allclose(seen, ref, rtol=1e-13, atol=0)


def _grads(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    return [rng.standard_normal(sh) * scale for sh in [(7, 5), (5,), (3, 4, 2), (1,)]]


@pytest.mark.parametrize("scale,max_norm", [(1.0, 0.5), (1.0, 100.0), (1e-3, 1.0), (10.0, 1.0)])
def test_clip_grad_norm(appd: dict[str, Any], scale: float, max_norm: float) -> None:
    grads = _grads(np.random.default_rng(0), scale)
    mine_np = [g.copy() for g in grads]
    mine_t = [torch.from_numpy(g.copy()) for g in grads]
    n_np = appd["clip_grad_norm_numpy"](mine_np, max_norm)
    n_t = appd["clip_grad_norm_torch"](mine_t, max_norm)

    p_tt = [tt.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    p_torch = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(p_tt, grads):
        p.grad = tt.tensor(g.copy())
    for p, g in zip(p_torch, grads):
        p.grad = torch.from_numpy(g.copy())
    ref_tt = tt.nn.utils.clip_grad_norm_(p_tt, max_norm).item()
    ref_torch = torch.nn.utils.clip_grad_norm_(p_torch, max_norm).item()

    assert n_np == pytest.approx(ref_tt, rel=1e-14)
    assert n_t.item() == pytest.approx(ref_torch, rel=1e-14)
    for a, b, c, d in zip(mine_np, mine_t, p_tt, p_torch):
        np.testing.assert_allclose(a, c.grad.numpy(), rtol=1e-14, atol=0)
        np.testing.assert_allclose(b.numpy(), d.grad.numpy(), rtol=1e-14, atol=0)
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-14, atol=0)
    clipped = math.sqrt(sum(float((a**2).sum()) for a in mine_np))
    assert clipped == pytest.approx(min(n_np, max_norm), rel=1e-5)


@pytest.mark.parametrize("wd,betas", [(0.1, (0.9, 0.95)), (0.0, (0.9, 0.999)), (0.01, (0.5, 0.9))])
def test_adamw(appd: dict[str, Any], wd: float, betas: tuple[float, float]) -> None:
    rng = np.random.default_rng(1)
    shapes = [(4, 3), (3,), (2, 2, 5)]
    start = [rng.standard_normal(sh) for sh in shapes]
    target = [rng.standard_normal(sh) for sh in shapes]
    noise = [[rng.standard_normal(sh) * 0.5 for sh in shapes] for _ in range(40)]
    lrs = [warmup_cosine_lr(s, max_lr=0.05, warmup_steps=5, total_steps=40, min_lr=0.005) for s in range(40)]
    hyper = dict(betas=betas, eps=1e-8, weight_decay=wd)

    mine = appd["AdamWNumpy"]([w.copy() for w in start], lr=lrs[0], **hyper)
    p_tt = [tt.tensor(w.copy(), requires_grad=True) for w in start]
    p_torch = [torch.tensor(w.copy(), requires_grad=True) for w in start]
    opt_tt = tt.optim.AdamW(p_tt, lr=lrs[0], **hyper)
    opt_torch = torch.optim.AdamW(p_torch, lr=lrs[0], **hyper)
    for s in range(40):
        mine.lr = lrs[s]
        opt_tt.param_groups[0]["lr"] = opt_torch.param_groups[0]["lr"] = lrs[s]
        mine.step([w - tg + nz for w, tg, nz in zip(mine.params, target, noise[s])])
        for p, tg, nz in zip(p_tt, target, noise[s]):
            p.grad = tt.tensor(p.data - tg + nz)
        for p, tg, nz in zip(p_torch, target, noise[s]):
            p.grad = torch.from_numpy(p.detach().numpy() - tg + nz)
        opt_tt.step()
        opt_torch.step()
    for i, (a, b, c) in enumerate(zip(mine.params, p_tt, p_torch)):
        np.testing.assert_allclose(a, b.data, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(a, c.detach().numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(mine.m[i], opt_torch.state[c]["exp_avg"].numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(mine.v[i], opt_torch.state[c]["exp_avg_sq"].numpy(), rtol=1e-12, atol=1e-16)
    assert mine.t == 40


# ---------------- 附录 A ----------------


def test_logistic_grads(appa: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((9, 4)), rng.standard_normal(4)
    y = (rng.random(9) > 0.5).astype(np.float64)
    b = 0.3
    loss, dw, db = appa["logistic_loss_and_grads"](x, y, w, b)
    for lib in (torch, tt):
        wt, bt = lib.tensor(w, requires_grad=True), lib.tensor(np.array(b), requires_grad=True)
        p = lib.sigmoid(lib.tensor(x) @ wt + bt)
        yt = lib.tensor(y)
        ref = -(yt * lib.log(p) + (1 - yt) * lib.log(1 - p)).mean()
        ref.backward()
        assert loss == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-14)
        assert db == pytest.approx(bt.grad.item(), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_simple_sgd(appa: dict[str, Any], momentum: float) -> None:
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((30, 2)), rng.integers(0, 3, size=30)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double().state_dict()

    def run_torch(make_opt: Any) -> list[np.ndarray]:
        m = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
        m.load_state_dict(start)
        opt = make_opt(m.parameters())
        for _ in range(15):
            loss = torch.nn.functional.cross_entropy(m(torch.from_numpy(xs)), torch.from_numpy(ys))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach().numpy() for p in m.parameters()]

    def run_tt(make_opt: Any) -> list[np.ndarray]:
        m = tt.nn.Sequential(tt.nn.Linear(2, 5), tt.nn.Tanh(), tt.nn.Linear(5, 3)).double()
        m.load_state_dict({k: v.numpy() for k, v in start.items()})
        opt = make_opt(m.parameters())
        for _ in range(15):
            loss = tt.nn.functional.cross_entropy(m(tt.tensor(xs)), tt.tensor(ys))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.data for p in m.parameters()]

    mine_t = run_torch(lambda ps: appa["SimpleSGD"](ps, lr=0.2, momentum=momentum))
    ref_t = run_torch(lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=momentum))
    mine_n = run_tt(lambda ps: appa["SimpleSGDTT"](ps, lr=0.2, momentum=momentum))
    ref_n = run_tt(lambda ps: tt.optim.SGD(ps, lr=0.2, momentum=momentum))
    for a, b, c, d in zip(mine_t, ref_t, mine_n, ref_n):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c, d, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n,batch,drop_last", [(20, 6, True), (20, 6, False), (18, 6, True), (5, 8, False)])
def test_simple_loader(appa: dict[str, Any], n: int, batch: int, drop_last: bool) -> None:
    from torch.utils.data import DataLoader

    rng = np.random.default_rng(n)
    ds = [(torch.from_numpy(rng.standard_normal(3)), torch.tensor(int(rng.integers(0, 4)))) for _ in range(n)]
    order = rng.permutation(n).tolist()
    ours = list(appa["simple_loader"](ds, batch, order, drop_last))
    theirs = list(DataLoader(ds, batch_size=batch, sampler=order, drop_last=drop_last))
    assert len(ours) == len(theirs)
    for bo, bt in zip(ours, theirs):
        assert len(bo) == len(bt) == 2
        for a, b in zip(bo, bt):
            assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("n,replicas", [(10, 2), (10, 3), (7, 4), (16, 4), (5, 5)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shard_indices(appa: dict[str, Any], n: int, replicas: int, shuffle: bool) -> None:
    from torch.utils.data import DistributedSampler

    for epoch in (0, 1, 5):
        for rank in range(replicas):
            sampler = DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=shuffle, seed=3)
            sampler.set_epoch(epoch)
            assert appa["shard_indices"](n, replicas, rank, epoch, seed=3, shuffle=shuffle) == list(sampler)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_rank_slice(appa: dict[str, Any], world: int) -> None:
    batches = StepBatches(np.arange(500), batch_size=8, context_length=6, seed=9)
    for step in range(3):
        xa, ya = batches.get(step)
        for rank in range(world):
            x, y = batches.get(step, rank=rank, world_size=world)
            np.testing.assert_array_equal(appa["rank_slice"](xa, rank, world), x)
            np.testing.assert_array_equal(appa["rank_slice"](ya, rank, world), y)


@pytest.mark.ddp
@pytest.mark.slow
def test_average_gradients_matches_ddp(tmp_path: Path) -> None:
    """2 个进程（gloo）：页面上的 average_gradients 与 DDP 同步后的梯度逐位相同、与单进程整批相同（float64）。"""
    if not torch.distributed.is_available():
        pytest.skip("此 torch 不支持 torch.distributed")
    cells = [c for c in inline_cells("appendix_a") if "def average_gradients" in c or "def shard_indices" in c]
    assert len(cells) == 2
    main = textwrap.dedent(
        """
        import copy
        import os
        from torch import nn
        from torch.nn.parallel import DistributedDataParallel as DDP
        from gpt_torch.ddp import cleanup_distributed, exit_process

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(12, 5, dtype=torch.float64, generator=gen)
        y = torch.randn(12, 3, dtype=torch.float64, generator=gen)
        mine = shard_indices(len(x), world, rank, epoch=2, seed=5)
        manual = copy.deepcopy(model)
        nn.functional.mse_loss(manual(x[mine]), y[mine]).backward()
        average_gradients(manual)
        wrapped = DDP(copy.deepcopy(model))
        nn.functional.mse_loss(wrapped(x[mine]), y[mine]).backward()
        full = copy.deepcopy(model)
        nn.functional.mse_loss(full(x), y).backward()
        pairs = zip(manual.parameters(), wrapped.module.parameters())
        d_ddp = max((a.grad - b.grad).abs().max().item() for a, b in pairs)
        d_full = max((a.grad - b.grad).abs().max().item() for a, b in zip(manual.parameters(), full.parameters()))
        scale = max(p.grad.abs().max().item() for p in full.parameters())
        # 两个进程写同一个管道：一次 os.write 写完整行（短于 PIPE_BUF，不会与另一个进程的输出交错；
        # print 会把文字和换行分两次写，曾经出现过两行粘在一起）
        os.write(1, f"RESULT {rank} {d_ddp!r} {d_full!r} {scale!r}\\n".encode())
        cleanup_distributed()
        exit_process(0)
        """
    )
    script = tmp_path / "check.py"
    script.write_text("\n\n".join(cells) + "\n" + main, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    # 偶发：机器很忙时 torchrun 的集合点偶尔起不来，或（一次：退出码 0）只收到一个进程的输出；
    # 再试一次，两次都不完整才算失败，并把两次的输出都报出来
    tries = []
    for _ in range(2):
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        rows = [("RESULT " + part).split()[:5] for part in p.stdout.split("RESULT ")[1:]]  # 按标记切，不依赖换行
        if p.returncode == 0 and sorted(int(r[1]) for r in rows) == [0, 1]:
            break
        tries.append(f"退出码 {p.returncode}\nstdout:\n{p.stdout[-1500:]}\nstderr:\n{p.stderr[-1500:]}")
    assert len(tries) < 2, "\n\n".join(tries)
    for _, _, d_ddp, d_full, scale in rows:
        assert float(d_ddp) == 0.0
        assert float(d_full) <= 1e-14 * max(1.0, float(scale))
