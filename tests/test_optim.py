"""tt.optim 与 tt.nn.utils：更新与 torch.optim 逐步一致、状态保存恢复、错误、梯度裁剪、学习率调度。"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import tinytensor as tt
from llmcore.schedule import warmup_cosine_lr
from tinytensor import nn, optim
from tinytensor.optim.lr_scheduler import LambdaLR

SHAPES = [(3, 4), (5,), (2, 3, 2), (), (1, 6)]
N_STEPS = 10

# (名字, tinytensor 构造, torch 构造名, 关键字参数)
CONFIGS = [
    ("sgd", "SGD", dict(lr=0.1)),
    ("sgd_mom", "SGD", dict(lr=0.05, momentum=0.9)),
    ("sgd_damp_wd", "SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov_wd", "SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("adam", "Adam", dict(lr=1e-2)),
    ("adam_l2", "Adam", dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("adamw_default", "AdamW", dict()),
    ("adamw", "AdamW", dict(lr=3e-2, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.1)),
]


def _torch():
    return pytest.importorskip("torch")


def _init_values(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grad_schedule(dtype=np.float64, steps=N_STEPS):
    """每一步每个参数的梯度；参数 4 一直没有梯度，参数 1 在奇数步没有梯度（两边都应跳过）。"""
    rng = np.random.default_rng(42)
    out = []
    for t in range(steps):
        gs = []
        for i, s in enumerate(SHAPES):
            g = rng.standard_normal(s).astype(dtype)
            gs.append(None if i == 4 or (i == 1 and t % 2 == 1) else g)
        out.append(gs)
    return out


def _make_groups(params, kw):
    base = kw.get("lr", 1e-3)
    return [{"params": params[:2]}, {"params": params[2:], "lr": base * 0.5}]


def _run_tt(opt_name, kw, values, grads, state=None, start=0, stop=N_STEPS):
    ps = [nn.Parameter(v.copy()) for v in values]
    opt = getattr(optim, opt_name)(_make_groups(ps, kw), **kw)
    if state is not None:
        opt.load_state_dict(state)
    for t in range(start, stop):
        for p, g in zip(ps, grads[t]):
            p.grad = None if g is None else tt.tensor(g)
        opt.step()
    return ps, opt


def _run_torch(opt_name, kw, values, grads):
    torch = _torch()
    ps = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    opt = getattr(torch.optim, opt_name)(_make_groups(ps, kw), foreach=False, **kw)
    history = []
    for t in range(N_STEPS):
        for p, g in zip(ps, grads[t]):
            p.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()
        history.append([p.detach().numpy().copy() for p in ps])
    return history


@pytest.mark.torch
@pytest.mark.parametrize("name,opt_name,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_ten_steps_equal_torch_float64(name, opt_name, kw):
    values, grads = _init_values(), _grad_schedule()
    history = _run_torch(opt_name, kw, values, grads)
    ps = [nn.Parameter(v.copy()) for v in values]
    opt = getattr(optim, opt_name)(_make_groups(ps, kw), **kw)
    for t in range(N_STEPS):
        for p, g in zip(ps, grads[t]):
            p.grad = None if g is None else tt.tensor(g)
        opt.step()
        for i, (p, ref) in enumerate(zip(ps, history[t])):
            np.testing.assert_allclose(p.data, ref, rtol=1e-10, atol=1e-14, err_msg=f"{name} 第 {t} 步参数 {i}")
    np.testing.assert_array_equal(ps[4].data, values[4])  # 从没有梯度的参数不动
    assert len(opt.state) == (4 if opt_name != "SGD" or kw.get("momentum") else 0)
    # 参数没有漂成别的 dtype
    assert all(p.dtype == np.float64 for p in ps)


@pytest.mark.torch
@pytest.mark.parametrize("opt_name,kw", [("SGD", dict(lr=0.05, momentum=0.9)), ("AdamW", dict(lr=1e-2))])
def test_float32_close_to_torch(opt_name, kw):
    values, grads = _init_values(dtype=np.float32), _grad_schedule(np.float32)
    history = _run_torch(opt_name, kw, values, grads)
    ps, _ = _run_tt(opt_name, kw, values, grads)
    assert all(p.dtype == np.float32 for p in ps)
    for p, ref in zip(ps, history[-1]):
        np.testing.assert_allclose(p.data, ref, rtol=1e-5, atol=1e-6)


def test_adam_and_adamw_differ_only_by_weight_decay():
    values, grads = _init_values(), _grad_schedule()
    a, _ = _run_tt("Adam", dict(lr=1e-2), values, grads)
    w, _ = _run_tt("AdamW", dict(lr=1e-2, weight_decay=0.0), values, grads)
    for x, y in zip(a, w):
        np.testing.assert_array_equal(x.data, y.data)
    w2, _ = _run_tt("AdamW", dict(lr=1e-2, weight_decay=0.1), values, grads)
    a2, _ = _run_tt("Adam", dict(lr=1e-2, weight_decay=0.1), values, grads)
    assert not np.allclose(w2[0].data, a2[0].data)


@pytest.mark.parametrize("name,opt_name,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_state_dict_resume_equals_uninterrupted(name, opt_name, kw):
    """5 步后保存，载入全新的优化器再走 5 步 == 不间断的 10 步（逐位相同）。"""
    values, grads = _init_values(), _grad_schedule()
    full, _ = _run_tt(opt_name, kw, values, grads)
    half, opt = _run_tt(opt_name, kw, values, grads, stop=5)
    state = pickle.loads(pickle.dumps(opt.state_dict()))  # 可序列化
    mid = [p.data.copy() for p in half]
    for p, g in zip(half, grads[5]):  # 保存后原优化器继续更新，不应影响已保存的状态
        p.grad = None if g is None else tt.tensor(g)
    opt.step()
    resumed, _ = _run_tt(opt_name, kw, mid, grads, state=state, start=5)
    for x, y in zip(full, resumed):
        np.testing.assert_array_equal(x.data, y.data)
    fresh, _ = _run_tt(opt_name, kw, mid, grads, start=5)  # 不载入状态：结果不同（测试能失败）
    if opt_name != "SGD" or kw.get("momentum"):
        assert not np.array_equal(fresh[0].data, full[0].data)


def test_load_state_dict_restores_hyperparameters_and_copies():
    ps = [nn.Parameter(v) for v in _init_values()]
    opt = optim.AdamW(ps, lr=0.1)
    for p in ps:
        p.grad = tt.ones(*p.shape) if p.ndim else tt.tensor(1.0, dtype=tt.float64)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["params"] == list(range(len(ps)))
    assert sd["state"][0]["step"] == 1
    sd["state"][0]["exp_avg"][...] = 123.0  # state_dict 是副本
    assert not np.any(opt.state[0]["exp_avg"] == 123.0)
    qs = [nn.Parameter(v) for v in _init_values()]
    opt2 = optim.AdamW(qs, lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["params"][0] is qs[0]
    assert opt2.state[0]["exp_avg"] is not opt.state[0]["exp_avg"]


def test_zero_grad_set_to_none_true_and_false():
    ps = [nn.Parameter(v) for v in _init_values()]
    opt = optim.SGD(ps, lr=0.1)
    for p in ps:
        p.grad = tt.tensor(np.full(p.shape, 2.0))
    g0 = ps[0].grad
    opt.zero_grad(set_to_none=False)
    assert ps[0].grad is g0 and all(not p.grad.data.any() for p in ps)
    opt.zero_grad()
    assert all(p.grad is None for p in ps)
    opt.zero_grad(set_to_none=False)  # 没有梯度时什么也不做
    assert all(p.grad is None for p in ps)


def test_step_with_closure_returns_loss():
    lin = nn.Linear(3, 1)
    for opt in (optim.SGD(lin.parameters(), lr=0.1), optim.AdamW(lin.parameters(), lr=0.1)):

        def closure(opt=opt):
            opt.zero_grad()
            loss = (lin(tt.ones(2, 3)) ** 2).mean()
            loss.backward()  # step 在 no_grad 下，closure 里仍能建图、反向
            return loss

        w0 = lin.weight.data.copy()
        loss = opt.step(closure)
        assert isinstance(loss, tt.Tensor) and loss.item() > 0
        assert not np.array_equal(lin.weight.data, w0)
        assert opt.step() is None


def test_frozen_params_are_accepted_and_untouched():
    # 与 torch 相同：冻结的参数也可交给优化器（微调时常把 model.parameters() 整个传入）
    lin = nn.Linear(3, 2)
    lin.weight.requires_grad_(False)
    w0 = lin.weight.data.copy()
    opt = optim.AdamW(lin.parameters(), lr=0.1)
    lin(tt.ones(4, 3)).sum().backward()
    opt.step()
    np.testing.assert_array_equal(lin.weight.data, w0)
    assert list(opt.state) == [1]  # 只有 bias（序号 1）有状态


@pytest.mark.torch
def test_add_param_group_matches_torch():
    torch = _torch()
    values, grads = _init_values(), _grad_schedule()
    ps = [nn.Parameter(v.copy()) for v in values]
    tps = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    opt = optim.Adam(ps[:2], lr=0.01)
    topt = torch.optim.Adam(tps[:2], lr=0.01, foreach=False)
    for t in range(N_STEPS):
        if t == 3:
            opt.add_param_group({"params": ps[2:], "lr": 0.05, "weight_decay": 0.1})
            topt.add_param_group({"params": tps[2:], "lr": 0.05, "weight_decay": 0.1})
        for p, tp, g in zip(ps, tps, grads[t]):
            p.grad = None if g is None else tt.tensor(g)
            tp.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-14)
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)  # 未给的超参数取 defaults


def test_constructor_errors():
    p = nn.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="学习率"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="学习率"):
        optim.AdamW([p], lr=-1e-3)
    for betas in [(1.0, 0.9), (0.9, -0.1), (-0.1, 0.9)]:
        with pytest.raises(ValueError, match="betas"):
            optim.Adam([p], betas=betas)
    with pytest.raises(ValueError, match="eps"):
        optim.Adam([p], eps=-1)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.AdamW([p], weight_decay=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD([p], momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="为空"):
        optim.AdamW([])
    with pytest.raises(ValueError, match="为空"):
        optim.AdamW(iter([]))
    with pytest.raises(ValueError, match="不止一次"):
        optim.SGD([p, p])
    q = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="不止一次"):
        optim.SGD([{"params": [p, q]}, {"params": [q]}])
    with pytest.raises(TypeError, match="单个张量"):
        optim.SGD(p)
    with pytest.raises(TypeError, match="Tensor"):
        optim.SGD([np.zeros(3)])
    with pytest.raises(ValueError, match="非叶子"):
        optim.SGD([p * 2])
    with pytest.raises(ValueError, match="params"):
        optim.SGD([{"lr": 0.1}])
    # 组里的单个张量会被包成列表（不会被按行拆开）
    opt = optim.SGD([{"params": p}], lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 1 and opt.param_groups[0]["params"][0] is p
    opt2 = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="不止一次"):
        opt2.add_param_group({"params": [p]})


def test_load_state_dict_mismatch_errors_leave_state_intact():
    ps = [nn.Parameter(v) for v in _init_values()]
    opt = optim.AdamW(ps, lr=0.1)
    for p in ps:
        p.grad = tt.tensor(np.ones(p.shape))
    opt.step()
    good = opt.state_dict()

    two = optim.AdamW([{"params": ps[:2]}, {"params": ps[2:]}])
    with pytest.raises(ValueError, match="参数组"):
        two.load_state_dict(good)
    fewer = optim.AdamW(ps[:3])
    with pytest.raises(ValueError, match="参数个数"):
        fewer.load_state_dict(good)
    other = optim.AdamW([nn.Parameter(v) for v in _init_values()])
    bad = opt.state_dict()
    bad["state"][2]["exp_avg"] = np.zeros((7, 7))
    with pytest.raises(ValueError, match=r"形状 \(7, 7\)"):
        other.load_state_dict(bad)
    assert other.state == {} and other.param_groups[0]["lr"] == 1e-3  # 出错时保持原样
    bad2 = opt.state_dict()
    bad2["state"][99] = bad2["state"][0]
    with pytest.raises(ValueError, match="99"):
        other.load_state_dict(bad2)


# ---------------------------------------------------------------- clip_grad_norm_


def _grad_params(dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(3)
    ps = [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p in ps:
        p.grad = tt.tensor((rng.standard_normal(p.shape) * scale).astype(dtype))
    ps.append(nn.Parameter(np.zeros(2, dtype=dtype)))  # 没有梯度：跳过
    return ps


@pytest.mark.torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype):
    torch = _torch()
    ps = _grad_params(dtype)
    tps = []
    for p in ps:
        tp = torch.nn.Parameter(torch.from_numpy(p.data.copy()))
        tp.grad = None if p.grad is None else torch.from_numpy(p.grad.data.copy())
        tps.append(tp)
    before = [None if p.grad is None else p.grad.data.copy() for p in ps]
    total = nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=norm_type, foreach=False)
    tol = dict(rtol=1e-12) if dtype == np.float64 else dict(rtol=1e-5)
    assert total.dtype == dtype
    np.testing.assert_allclose(total.item(), ttotal.item(), **tol)
    for p, tp, b in zip(ps, tps, before):
        if p.grad is None:
            assert tp.grad is None
            continue
        np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), **tol)
        if max_norm > 1e5:
            np.testing.assert_array_equal(p.grad.data, b)  # 低于阈值：梯度完全不变
    if max_norm < 1:
        flat = np.concatenate([p.grad.data.ravel() for p in ps if p.grad is not None])
        after = np.abs(flat).max() if norm_type == math.inf else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
        np.testing.assert_allclose(after, max_norm, rtol=1e-4)


def test_clip_grad_norm_edge_cases():
    p = nn.Parameter(np.array([3.0, 4.0]))
    p.grad = tt.tensor([3.0, 4.0], dtype=tt.float64)
    assert nn.utils.clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)  # 单个张量也可
    np.testing.assert_allclose(p.grad.data, [0.6, 0.8], rtol=1e-6)
    assert nn.utils.clip_grad_norm_([nn.Parameter(np.zeros(2))], 1.0).item() == 0.0  # 没有梯度
    q = nn.Parameter(np.zeros(2))
    q.grad = tt.tensor([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="非有限"):
        nn.utils.clip_grad_norm_([q], 1.0, error_if_nonfinite=True)
    q.grad = tt.tensor([np.nan, 1.0])
    assert math.isnan(nn.utils.clip_grad_norm_([q], 1.0).item())
    assert np.all(np.isnan(q.grad.data))  # 与 torch 一样，nan 范数把梯度变成 nan


@pytest.mark.torch
def test_clip_grad_value_matches_torch():
    torch = _torch()
    ps = _grad_params(scale=3.0)
    tps = []
    for p in ps:
        tp = torch.nn.Parameter(torch.from_numpy(p.data.copy()))
        tp.grad = None if p.grad is None else torch.from_numpy(p.grad.data.copy())
        tps.append(tp)
    nn.utils.clip_grad_value_(ps, 1.5)
    torch.nn.utils.clip_grad_value_(tps, 1.5)
    for p, tp in zip(ps[:3], tps[:3]):
        np.testing.assert_array_equal(p.grad.data, tp.grad.numpy())


# ---------------------------------------------------------------- 学习率调度


def test_warmup_cosine_lr_key_values():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert warmup_cosine_lr(0, **kw) == pytest.approx(0.1)  # (0+1)/10：第 0 步就有非零学习率
    assert warmup_cosine_lr(4, **kw) == pytest.approx(0.5)
    assert warmup_cosine_lr(9, **kw) == pytest.approx(1.0)  # 预热最后一步到峰值
    assert warmup_cosine_lr(10, **kw) == pytest.approx(1.0)  # 余弦起点
    assert warmup_cosine_lr(60, **kw) == pytest.approx(0.55)  # 余弦中点 = (max + min) / 2
    assert warmup_cosine_lr(35, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine_lr(110, **kw) == pytest.approx(0.1)  # 终点
    assert warmup_cosine_lr(10_000, **kw) == 0.1  # 之后保持 min_lr
    lrs = [warmup_cosine_lr(s, **kw) for s in range(200)]
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))  # 预热单调升
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # 之后单调降
    assert max(lrs) == pytest.approx(1.0) and min(lrs) == pytest.approx(0.1)
    assert warmup_cosine_lr(0, max_lr=1.0, warmup_steps=4, total_steps=8, initial_lr=0.2) == pytest.approx(0.4)
    assert warmup_cosine_lr(0, max_lr=2.0, warmup_steps=0, total_steps=8) == pytest.approx(2.0)  # 无预热
    for bad in [dict(warmup_steps=-1, total_steps=10), dict(warmup_steps=0, total_steps=0),
                dict(warmup_steps=20, total_steps=10)]:
        with pytest.raises(ValueError, match="warmup_steps"):
            warmup_cosine_lr(0, max_lr=1.0, **bad)


def _two_group_opt(lib, lrs=(0.1, 0.02)):
    if lib == "tt":
        ps = [nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))]
        return optim.AdamW([{"params": [ps[0]], "lr": lrs[0]}, {"params": [ps[1]], "lr": lrs[1]}])
    torch = _torch()
    ps = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    return torch.optim.AdamW([{"params": [ps[0]], "lr": lrs[0]}, {"params": [ps[1]], "lr": lrs[1]}])


def _lam(s):
    return warmup_cosine_lr(s, max_lr=1.0, warmup_steps=7, total_steps=60, min_lr=0.1)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["lambda", "lambda_list"])
def test_lambda_lr_matches_torch(kind):
    torch = _torch()
    opt, topt = _two_group_opt("tt"), _two_group_opt("torch")
    if kind == "lambda":
        sch = LambdaLR(opt, _lam)
    else:
        sch = LambdaLR(opt, [_lam, lambda s: 0.9**s])
    tsch = torch.optim.lr_scheduler.LambdaLR(topt, [_lam, lambda s: 0.9**s] if kind == "lambda_list" else _lam)
    for _ in range(80):
        np.testing.assert_allclose(sch.get_last_lr(), tsch.get_last_lr(), rtol=1e-12)
        np.testing.assert_allclose(
            [g["lr"] for g in opt.param_groups], [g["lr"] for g in topt.param_groups], rtol=1e-12
        )
        opt.step()
        topt.step()
        sch.step()
        tsch.step()
    assert sch.last_epoch == tsch.last_epoch == 80


def _lam5(s):
    return warmup_cosine_lr(s, max_lr=1.0, warmup_steps=5, total_steps=40, min_lr=0.1)


def test_scheduler_state_dict_round_trip():
    opt = _two_group_opt("tt")
    sch = LambdaLR(opt, _lam5)
    ref = []
    for _ in range(30):
        sch.step()
        ref.append(sch.get_last_lr())
    opt_a = _two_group_opt("tt")
    sch_a = LambdaLR(opt_a, _lam5)
    for _ in range(12):
        sch_a.step()
    saved_opt, saved_sch = opt_a.state_dict(), pickle.loads(pickle.dumps(sch_a.state_dict()))
    opt_b = _two_group_opt("tt", lrs=(9.0, 9.0))  # 新的优化器，初始 lr 不同：应被状态覆盖
    opt_b.load_state_dict(saved_opt)
    sch_b = LambdaLR(opt_b, _lam5)
    sch_b.load_state_dict(saved_sch)
    assert sch_b.get_last_lr() == ref[11]
    assert sch_b.base_lrs == [0.1, 0.02]
    got = [ref[11]]
    for _ in range(18):
        sch_b.step()
        got.append(sch_b.get_last_lr())
    assert got == ref[11:]
    with pytest.raises(ValueError, match="参数组"):
        LambdaLR(optim.SGD([nn.Parameter(np.zeros(1))]), _lam5).load_state_dict(saved_sch)


def test_scheduler_resume_requires_initial_lr_and_lambda_list_length():
    opt = _two_group_opt("tt")
    with pytest.raises(KeyError, match="initial_lr"):
        LambdaLR(opt, _lam, last_epoch=5)
    with pytest.raises(ValueError, match="参数组"):
        LambdaLR(opt, [_lam])
    LambdaLR(opt, _lam)
    sch = LambdaLR(opt, _lam, last_epoch=5)  # 已有 initial_lr：可以从第 5 步接着来
    assert sch.last_epoch == 6
    assert sch.get_last_lr() == pytest.approx([0.1 * _lam(6), 0.02 * _lam(6)])
