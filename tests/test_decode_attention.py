"""解码注意力内核（一行查询对 KV 缓存，支持 GQA）：numba 内核与 NumPy 参考一致，参考与逐头的定义一致；
分组注意力的参考实现（多个查询、带因果偏移）与 torch 的 scaled_dot_product_attention 一致。"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytensor.kernels import backend_scope
from tinytensor.kernels.decode_attention import decode_attention, decode_attention_numpy, grouped_attention_numpy


def _by_definition(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """逐个头按定义算：第 h 个查询头用第 h // g 组的键值。"""
    b, nh, hs = q.shape
    g = nh // k.shape[1]
    out = np.empty((b, nh, hs))
    for i in range(b):
        for h in range(nh):
            s = k[i, h // g].astype(np.float64) @ q[i, h] * scale
            p = np.exp(s - s.max())
            out[i, h] = (p / p.sum()) @ v[i, h // g]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b,nh,nkv,t_max,length,hs", [
    (1, 6, 6, 32, 17, 16),     # 普通多头（GPT）
    (2, 8, 2, 40, 40, 32),     # GQA，g = 4，缓存写满
    (1, 16, 8, 600, 540, 128),  # Qwen3-0.6B 的形状，工作量大，走并行内核
    (1, 4, 4, 8, 1, 8),        # 只有一个位置
])  # fmt: skip
def test_kernel_matches_reference(dtype, b, nh, nkv, t_max, length, hs):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((b, nh, hs)).astype(dtype)
    k = rng.standard_normal((b, nkv, t_max, hs)).astype(dtype)
    v = rng.standard_normal((b, nkv, t_max, hs)).astype(dtype)
    k[:, :, length:] = 1e4  # 缓存里 length 之后的位置是旧数据，不能被读到
    scale = hs**-0.5
    ref = decode_attention_numpy(q, k[:, :, :length], v[:, :, :length], scale)
    np.testing.assert_allclose(ref, _by_definition(q, k[:, :, :length], v[:, :, :length], scale),
                               rtol=1e-5, atol=1e-5 if dtype == np.float32 else 1e-12)
    got = decode_attention(q, k, v, scale, length)
    assert got.shape == (b, nh, hs) and got.dtype == dtype
    tol = dict(rtol=1e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, ref, **tol)
    # 切片视图也能用（先拷成连续的）；NumPy 后端走参考实现
    np.testing.assert_allclose(decode_attention(q, k[:, :, :length], v[:, :, :length], scale), ref, **tol)
    with backend_scope("numpy"):
        np.testing.assert_array_equal(decode_attention(q, k, v, scale, length), ref)


@pytest.mark.parametrize("nh,nkv,t,start", [(4, 4, 5, 0), (8, 2, 6, 0), (8, 2, 3, 7), (6, 3, 1, 9)])
def test_grouped_reference_matches_torch(nh, nkv, t, start):
    """预填充（start = 0）、接在缓存后面的一段（start > 0）与单个新词元：与 torch 逐头复制键值后的因果注意力相同。"""
    rng = np.random.default_rng(1)
    b, hs = 2, 16
    s = start + t
    q = rng.standard_normal((b, nh, t, hs))
    k = rng.standard_normal((b, nkv, s, hs))
    v = rng.standard_normal((b, nkv, s, hs))
    got = grouped_attention_numpy(q, k, v, hs**-0.5, start)
    g = nh // nkv
    kt, vt = (torch.from_numpy(a).repeat_interleave(g, dim=1) for a in (k, v))
    mask = torch.arange(s)[None, :] <= (start + torch.arange(t))[:, None]  # (T, S)，True 表示能看到
    want = torch.nn.functional.scaled_dot_product_attention(torch.from_numpy(q), kt, vt, attn_mask=mask)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
    if t == 1:  # 解码的参考实现就是它的特例
        np.testing.assert_array_equal(decode_attention_numpy(q[:, :, 0], k, v, hs**-0.5), got[:, :, 0])


def test_bad_inputs():
    q = np.zeros((1, 6, 8), np.float32)
    k = np.zeros((1, 4, 10, 8), np.float32)
    with pytest.raises(ValueError, match="nh 是 nkv 的整数倍"):
        decode_attention(q, k, k, 1.0)
    k = np.zeros((1, 3, 10, 8), np.float32)
    with pytest.raises(ValueError, match=r"length=11 应在 \[1, 10\] 内"):
        decode_attention(q, k, k, 1.0, 11)
    with pytest.raises(ValueError, match="同形状"):
        decode_attention(q, k, k[:, :, :5], 1.0)
    with pytest.raises(TypeError, match="float32 或 float64"):
        decode_attention(q.astype(np.int32), k, k, 1.0)
