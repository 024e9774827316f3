"""int8 (W8A8) / bf16 量化矩阵乘：numba 内核与 NumPy 参考实现一致；量化误差在理论范围内。"""

from __future__ import annotations

import numpy as np
import pytest

from llmcore.qwen3.weights import bf16_to_float32, float32_to_bf16
from tinytensor.kernels import backend_scope
from tinytensor.kernels.int8_matmul import (
    SMALL_M,
    _quantize_rows,
    bf16_matmul,
    bf16_matmul_numpy,
    dequantize_int8,
    f32_matvec,
    fake_quantize_int8,
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


@pytest.mark.parametrize("m,k,group", [(1, 64, 32), (3, 256, 128), (2, 96, 96)])
def test_activation_quantizer_matches_numpy(m, k, group):
    """numba 的激活量化与 NumPy 的 quantize_int8 逐位相同（包括正好落在 .5 上的值与全零的组）。"""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[0, :group] = 0.0  # 全零的组
    x[-1, :group] = 0.0
    x[-1, :5] = [127.0, 0.5, 1.5, -2.5, 3.5]  # 缩放正好是 1：这几个值落在 .5 上（四舍六入五成双）
    xq, xs = _quantize_rows(x, group)
    rq, rs = quantize_int8(x, group)
    np.testing.assert_array_equal(xq, rq)
    np.testing.assert_array_equal(xs, rs)


def test_int8_error_bound_against_float():
    """W8A8 的结果与浮点矩阵乘之差，不超过权重与激活两边量化误差之和的上界。"""
    rng = np.random.default_rng(5)
    k, g = 256, 64
    w = rng.standard_normal((40, k)).astype(np.float32)
    x = rng.standard_normal((1, k)).astype(np.float32)
    q, s = quantize_int8(w, g)
    got = int8_matmul(x, q, s).astype(np.float64)
    xf = fake_quantize_int8(x, g).astype(np.float64)
    # |x·w - xf·wq| ≤ Σ |x-xf|·|w| + |xf|·|w-wq|（wq 为量化后的权重），每个元素的量化误差至多半个缩放
    ex = np.repeat(quantize_int8(x, g)[1], g, axis=1) / 2
    ew = np.repeat(s, g, axis=1) / 2
    bound = ex @ np.abs(w.T).astype(np.float64) + np.abs(xf) @ ew.T
    err = np.abs(got - x.astype(np.float64) @ w.T.astype(np.float64))
    assert np.all(err <= bound * 1.001 + 1e-4)
    assert err.max() > 0  # 激活确实量化了（不是浮点乘）


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
