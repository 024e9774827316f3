"""GPT-2 权重（Hugging Face 布局）→ gpt_torch：与独立参考前向、与 gpt_numpy 一致。"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt_testutil import gpt2_reference_logits, hf_config, hf_state, torch_threads, write_hf_dir  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy.generate import generate as np_generate  # noqa: E402
from gpt_numpy.pretrained import load_hf_gpt2 as load_numpy  # noqa: E402
from gpt_torch.generate import generate  # noqa: E402
from gpt_torch.pretrained import load_hf_gpt2  # noqa: E402

pytestmark = pytest.mark.torch
IDS = np.array([[3, 0, 36, 7, 7, 12, 5, 1, 30, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.mark.parametrize("prefix,attn_impl", [("", "sdpa"), ("transformer.", "explicit")])
def test_torch_matches_reference_and_numpy(tmp_path, prefix, attn_impl):
    cfg = hf_config()
    st = hf_state(cfg, seed=5, prefix=prefix)
    path = write_hf_dir(tmp_path, cfg, st)
    tm = load_hf_gpt2(path, dtype=torch.float64, attn_impl=attn_impl)
    assert not tm.training and tm.out_head.weight is tm.tok_emb.weight
    with torch.no_grad():
        lt = tm(torch.as_tensor(IDS)).numpy()
    np.testing.assert_allclose(lt, gpt2_reference_logits(st, 4, IDS), rtol=1e-9, atol=1e-9)
    nm = load_numpy(path, dtype=np.float64)
    with tt.no_grad():
        np.testing.assert_allclose(nm(IDS).data, lt, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(
        generate(tm, torch.as_tensor(IDS[:, :3]), 15, temperature=1.0, top_k=5, seed=3).numpy(),
        np_generate(nm, IDS[:, :3], 15, temperature=1.0, top_k=5, seed=3),
    )


def test_float32_default_and_drop_rate_override(tmp_path):
    cfg = hf_config()
    st = hf_state(cfg, seed=6)
    tm = load_hf_gpt2(write_hf_dir(tmp_path, cfg, st), drop_rate=0.0)
    assert tm.tok_emb.weight.dtype == torch.float32 and tm.cfg.drop_rate == 0.0
    with torch.no_grad():
        lt = tm(torch.as_tensor(IDS)).numpy()
    np.testing.assert_allclose(lt, gpt2_reference_logits(st, 4, IDS), rtol=1e-4, atol=1e-4)
