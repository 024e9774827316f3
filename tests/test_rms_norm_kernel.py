"""RMSNorm 前向内核：与 NumPy 参考、与 torch.nn.functional.rms_norm 一致；错误输入给出中文说明。"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytensor.kernels import backend_scope
from tinytensor.kernels.rms_norm import rms_norm_fwd, rms_norm_numpy


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("shape", [(1, 1, 1024), (2, 3, 16, 128), (5, 7)])
def test_matches_reference_and_torch(dtype, tol, shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    w = rng.standard_normal(shape[-1]).astype(dtype)
    ref = rms_norm_numpy(x, w, 1e-6)
    got = rms_norm_fwd(x, w, 1e-6)
    assert got.shape == x.shape and got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=tol * 10, atol=tol * 10)
    want = torch.nn.functional.rms_norm(torch.from_numpy(x), (shape[-1],), torch.from_numpy(w), 1e-6).numpy()
    np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10)
    # 不连续的输入（如从 qkv 里切出来的头）
    big = np.concatenate([x, x], axis=-1)
    np.testing.assert_allclose(rms_norm_fwd(big[..., : shape[-1]], w, 1e-6), ref, rtol=tol * 10, atol=tol * 10)
    with backend_scope("numpy"):
        np.testing.assert_array_equal(rms_norm_fwd(x, w, 1e-6), ref)


def test_bad_inputs():
    with pytest.raises(ValueError, match="最后一维应与 w 的长度相同"):
        rms_norm_fwd(np.ones((2, 4), np.float32), np.ones(5, np.float32), 1e-6)
    with pytest.raises(TypeError, match="float32 或 float64"):
        rms_norm_fwd(np.ones((2, 4), np.int64), np.ones(4, np.int64), 1e-6)
