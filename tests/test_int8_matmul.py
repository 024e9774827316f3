"""int8 / bf16 仅权重量化矩阵乘：numba 内核与 NumPy 参考实现一致；量化误差在理论范围内。"""

from __future__ import annotations

import numpy as np
import pytest

from llmcore.qwen3.weights import bf16_to_float32, float32_to_bf16
from tinytensor.kernels import backend_scope
from tinytensor.kernels.int8_matmul import (
    SMALL_M,
    bf16_matmul,
    bf16_matmul_numpy,
    dequantize_int8,
    f32_matvec,
    int8_matmul,
    int8_matmul_numpy,
    quantize_int8,
)

SHAPES = [(1, 64, 32, 32), (3, 96, 256, 64), (SMALL_M + 5, 200, 128, None), (1, 3000, 512, 128)]


@pytest.mark.parametrize("m,n,k,group", SHAPES)
def test_int8_kernel_matches_reference(m, n, k, group):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    q, s = quantize_int8(w, group)
    assert q.dtype == np.int8 and s.shape == (n, k // (group or k))
    ref = int8_matmul_numpy(x, q, s)
    got = int8_matmul(x, q, s)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4 * np.sqrt(k))
    with backend_scope("numpy"):
        np.testing.assert_array_equal(int8_matmul(x, q, s), ref)


@pytest.mark.parametrize("m,n,k,_", SHAPES)
def test_bf16_kernel_matches_reference(m, n, k, _):
    rng = np.random.default_rng(1)
    w = float32_to_bf16(rng.standard_normal((n, k)).astype(np.float32))
    x = rng.standard_normal((m, k)).astype(np.float32)
    ref = bf16_matmul_numpy(x, w)
    np.testing.assert_allclose(bf16_matmul(x, w), ref, rtol=1e-5, atol=1e-4 * np.sqrt(k))
    np.testing.assert_allclose(ref, x @ bf16_to_float32(w).T, rtol=1e-5, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("m,n,k,_", SHAPES)
def test_f32_matvec_matches_blas(m, n, k, _):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    np.testing.assert_allclose(f32_matvec(x, w), x @ w.T, rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_quantization_error_bound():
    """每个元素的误差不超过所在组缩放的一半（四舍五入）；分组越小误差越小。"""
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((64, 256)) * np.linspace(0.1, 3, 256)).astype(np.float32)
    errs = {}
    for g in (32, 256):
        q, s = quantize_int8(w, g)
        deq = dequantize_int8(q, s)
        bound = np.repeat(s, g, axis=1) / 2
        assert np.all(np.abs(deq - w) <= bound * (1 + 1e-5))
        errs[g] = np.abs(deq - w).mean()
    assert errs[32] < errs[256]
    q, s = quantize_int8(np.zeros((2, 8), np.float32), 4)  # 全零的组：缩放为 0，不出 NaN
    assert np.all(dequantize_int8(q, s) == 0)


def test_bad_inputs():
    q, s = quantize_int8(np.ones((4, 8), np.float32), 4)
    with pytest.raises(ValueError, match="group=3 必须整除输入维度 K=8"):
        quantize_int8(np.ones((4, 8), np.float32), 3)
    with pytest.raises(ValueError, match=r"输入应为 \(M, 8\)"):
        int8_matmul(np.ones((1, 7), np.float32), q, s)
    with pytest.raises(ValueError, match="uint16"):
        bf16_matmul(np.ones((1, 8), np.float32), np.ones((4, 8), np.float32))
