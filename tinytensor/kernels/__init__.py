"""临时的 NumPy 版内核（kernels 分支合并后被完整实现替换）。"""
import numpy as np


def layer_norm_fwd(x, w, b, eps):
    mean = x.mean(-1)
    d = x - mean[:, None]
    var = (d * d).mean(-1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = d * rstd[:, None]
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.astype(x.dtype), mean, rstd.astype(x.dtype)

def layer_norm_bwd(g, x, w, mean, rstd):
    xhat = (x - mean[:, None]) * rstd[:, None]
    gh = g * w if w is not None else g
    dx = rstd[:, None] * (gh - gh.mean(-1, keepdims=True) - xhat * (gh * xhat).mean(-1, keepdims=True))
    dw = (g * xhat).sum(0) if w is not None else None
    db = g.sum(0) if w is not None else None
    return dx, dw, db

def cross_entropy_fwd(logits, targets, ignore_index):
    m = logits.max(1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
    valid = targets != ignore_index
    t = np.where(valid, targets, 0)
    loss = lse - logits[np.arange(len(t)), t]
    return np.where(valid, loss, 0).astype(logits.dtype), lse

def cross_entropy_bwd(logits, targets, lse, row_scale):
    p = np.exp(logits - lse[:, None])

    t = np.where(targets < 0, 0, targets)
    p[np.arange(len(t)), t] -= 1
    return p * row_scale[:, None]

def gelu_fwd(x):
    t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)).astype(x.dtype)
    return (0.5 * x * (1 + t)).astype(x.dtype), t

def gelu_bwd(g, x, t):
    k = np.sqrt(2 / np.pi)
    return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x))).astype(x.dtype)

def embedding_bwd(n, idx, g):
    out = np.zeros((n, g.shape[1]), dtype=g.dtype)
    np.add.at(out, idx, g)
    return out

def adamw_step(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, weight_decay, step):
    param *= 1 - lr * weight_decay
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    bc1 = 1 - beta1**step
    bc2 = 1 - beta2**step
    denom = np.sqrt(exp_avg_sq) / np.sqrt(bc2) + eps
    param -= (lr / bc1) * exp_avg / denom
