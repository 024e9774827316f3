"""第 8 章页面上亲手写的 int8 量化与 W8A8 矩阵-向量乘，与库里的 quantize_int8 / int8 内核一致。"""

from __future__ import annotations

import numpy as np
import pytest
from chapter_inline import inline_namespace

from tinytensor.kernels.int8_matmul import int8_matmul, int8_matmul_numpy, quantize_int8


@pytest.fixture(scope="module")
def ch08() -> dict:
    return inline_namespace("ch08", min_cells=1)


@pytest.mark.parametrize("n,k,group", [(48, 256, 128), (7, 96, 32), (3, 64, 64)])
def test_w8a8_on_page_matches_library(ch08, n, k, group):
    rng = np.random.default_rng(n)
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.05
    x = rng.standard_normal((1, k)).astype(np.float32)
    q, s = ch08["quantize_groups"](w, group)
    rq, rs = quantize_int8(w, group)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)
    mine = ch08["w8a8_matvec"](x, q, s, group)
    assert mine.shape == (1, n)
    np.testing.assert_allclose(mine, int8_matmul(x, rq, rs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mine, int8_matmul_numpy(x, rq, rs), rtol=1e-5, atol=1e-5)
