"""gpt_torch.data：torch Dataset / DataLoader 适配与 NumPy 轨道逐个相同。"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt_torch.data import TorchWindowDataset, create_torch_dataloader, to_torch_batch  # noqa: E402
from llmcore.datasets import SlidingWindowDataset  # noqa: E402
from llmcore.tokenizers import get_gpt2_tokenizer  # noqa: E402

pytestmark = pytest.mark.torch

TEXT = "Every effort moves you forward, one small step at a time. " * 30


def test_torch_dataset_matches_numpy() -> None:
    ids = np.arange(60)
    ds = SlidingWindowDataset(ids, max_length=8, stride=5)
    tds = TorchWindowDataset(ds)
    assert len(tds) == len(ds)
    for k in range(len(ds)):
        x, y = tds[k]
        assert x.dtype == torch.long and y.dtype == torch.long
        assert np.array_equal(x.numpy(), ds[k][0]) and np.array_equal(y.numpy(), ds[k][1])


def test_torch_dataloader_batches_and_seed() -> None:
    tok = get_gpt2_tokenizer()
    a = create_torch_dataloader(TEXT, tok, batch_size=4, max_length=16, stride=16, seed=1)
    b = create_torch_dataloader(TEXT, tok, batch_size=4, max_length=16, stride=16, seed=1)
    xa, ya = next(iter(a))
    xb, _ = next(iter(b))
    assert xa.shape == (4, 16) and xa.dtype == torch.long
    assert torch.equal(xa, xb) and torch.equal(xa[:, 1:], ya[:, :-1])
    ids = tok.encode(TEXT)
    assert len(a) == len(range(0, len(ids) - 16, 16)) // 4


def test_torch_dataloader_errors() -> None:
    tok = get_gpt2_tokenizer()
    with pytest.raises(ValueError, match="只有 .* 个词元"):
        create_torch_dataloader("short text", tok, max_length=64)
    with pytest.raises(ValueError, match="batch_size=64"):
        create_torch_dataloader(TEXT, tok, batch_size=64, max_length=16, stride=16)


def test_to_torch_batch() -> None:
    x, y = to_torch_batch(np.zeros((2, 3), dtype=np.int64), np.ones((2, 3), dtype=np.int64))
    assert x.dtype == torch.long and y.sum().item() == 6
