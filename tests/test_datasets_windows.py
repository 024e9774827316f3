"""滑动窗口数据集、批加载器与词元文件。"""

from __future__ import annotations

import numpy as np
import pytest

from llmcore.datasets import (
    BatchLoader,
    RandomWindowSampler,
    SlidingWindowDataset,
    create_dataloader,
    encode_file_to_npy,
    encode_to_npy,
    load_tokens,
    save_tokens,
)
from llmcore.tokenizers import EOT, BPETokenizer, CharTokenizer, get_gpt2_tokenizer


def test_windows_are_shifted_by_one() -> None:
    ids = np.arange(100, 120)
    ds = SlidingWindowDataset(ids, max_length=4, stride=1)
    for k in range(len(ds)):
        x, y = ds[k]
        assert x.dtype == np.int64 and y.dtype == np.int64 and x.shape == (4,)
        assert np.array_equal(x[1:], y[:-1])
        assert np.array_equal(x, ids[k : k + 4]) and np.array_equal(y, ids[k + 1 : k + 5])


@pytest.mark.parametrize(
    ("n", "max_length", "stride", "starts"),
    [
        (10, 4, 4, [0, 4]),  # 不重叠：第 3 个窗口需要 ids[8:13]，越界，丢弃
        (9, 4, 4, [0, 4]),  # 最后一个窗口的目标恰好用到最后一个词元
        (8, 4, 4, [0]),
        (5, 4, 4, [0]),  # 恰好 max_length + 1 个词元：一个窗口
        (10, 4, 2, [0, 2, 4]),  # 重叠
        (10, 4, 1, [0, 1, 2, 3, 4, 5]),
        (10, 3, 5, [0, 5]),  # stride > max_length：跳过中间的词元
    ],
)
def test_stride_and_last_window(n: int, max_length: int, stride: int, starts: list[int]) -> None:
    ds = SlidingWindowDataset(np.arange(n), max_length, stride)
    assert ds.starts.tolist() == starts
    last_x, last_y = ds[-1]
    assert last_y[-1] == starts[-1] + max_length <= n - 1


def test_too_short_text_error_names_counts() -> None:
    with pytest.raises(ValueError, match=r"只有 4 个词元.*需要 max_length \+ 1 = 5"):
        SlidingWindowDataset(np.arange(4), max_length=4, stride=1)
    tok = CharTokenizer.train("今天天气好")
    with pytest.raises(ValueError, match="只有 3 个词元"):
        SlidingWindowDataset.from_text("天气好", tok, max_length=8, stride=8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_lengths(bad) -> None:
    with pytest.raises(ValueError, match="正整数"):
        SlidingWindowDataset(np.arange(20), max_length=bad, stride=1)
    with pytest.raises(ValueError, match="正整数"):
        SlidingWindowDataset(np.arange(20), max_length=4, stride=bad)


def test_rejects_non_integer_tokens() -> None:
    with pytest.raises(ValueError, match="float64"):
        SlidingWindowDataset(np.linspace(0, 1, 20), 4, 1)


def test_get_batch_matches_getitem() -> None:
    ds = SlidingWindowDataset(np.arange(50) * 3, max_length=6, stride=3)
    x, y = ds.get_batch([4, 0, 7])
    assert x.shape == (3, 6) and y.shape == (3, 6)
    for row, k in enumerate([4, 0, 7]):
        assert np.array_equal(x[row], ds[k][0]) and np.array_equal(y[row], ds[k][1])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_loader_covers_dataset_in_order_without_shuffle() -> None:
    ds = SlidingWindowDataset(np.arange(41), max_length=4, stride=4)  # 10 个窗口
    loader = BatchLoader(ds, batch_size=3, shuffle=False, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [b[0].shape for b in batches] == [(3, 4)] * 3
    assert batches[0][0][:, 0].tolist() == [0, 4, 8]
    keep = BatchLoader(ds, batch_size=3, drop_last=False)
    sizes = [x.shape[0] for x, _ in keep]
    assert sizes == [3, 3, 3, 1] and len(keep) == 4


def test_loader_shuffle_is_seeded_and_changes_per_epoch() -> None:
    ds = SlidingWindowDataset(np.arange(201), max_length=4, stride=4)  # 50 个窗口
    a = BatchLoader(ds, batch_size=5, shuffle=True, seed=7)
    b = BatchLoader(ds, batch_size=5, shuffle=True, seed=7)
    first_a = np.concatenate([x[:, 0] for x, _ in a])
    first_b = np.concatenate([x[:, 0] for x, _ in b])
    assert np.array_equal(first_a, first_b)
    assert sorted(first_a.tolist()) == list(range(0, 200, 4))  # 每个窗口恰好一次
    assert not np.array_equal(first_a, np.arange(0, 200, 4))
    second_a = np.concatenate([x[:, 0] for x, _ in a])
    assert not np.array_equal(first_a, second_a)
    a.set_epoch(0)
    assert np.array_equal(np.concatenate([x[:, 0] for x, _ in a]), first_a)
    c = BatchLoader(ds, batch_size=5, shuffle=True, seed=8)
    assert not np.array_equal(np.concatenate([x[:, 0] for x, _ in c]), first_a)


def test_loader_works_with_plain_sequence_dataset() -> None:
    pairs = [(np.arange(k, k + 3), np.arange(k + 1, k + 4)) for k in range(5)]  # 没有 get_batch 的数据集
    x, y = next(iter(BatchLoader(pairs, batch_size=2)))
    assert x.tolist() == [[0, 1, 2], [1, 2, 3]] and y.tolist() == [[1, 2, 3], [2, 3, 4]]


def test_loader_never_empty() -> None:
    ds = SlidingWindowDataset(np.arange(13), max_length=4, stride=4)  # 3 个窗口
    with pytest.raises(ValueError, match=r"只有 3 个样本.*batch_size=8"):
        BatchLoader(ds, batch_size=8)
    assert len(BatchLoader(ds, batch_size=8, drop_last=False)) == 1


def test_create_dataloader_with_gpt2() -> None:
    text = "In the heart of the city stood the old library. " * 40 + EOT
    loader = create_dataloader(
        text, get_gpt2_tokenizer(), batch_size=4, max_length=16, stride=16, allowed_special={EOT}
    )
    x, y = next(iter(loader))
    assert x.shape == (4, 16) and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="未被允许的特殊词元"):
        create_dataloader(text, get_gpt2_tokenizer(), max_length=16, stride=16)


@pytest.fixture(scope="module")
def tiny_bpe() -> BPETokenizer:
    return BPETokenizer.train("今天天气很好。明天天气也很好。\n  缩进的行\n", vocab_size=300)


def test_token_file_roundtrip_uint16(tmp_path, tiny_bpe) -> None:
    text = "今天天气很好。\n明天也好！\n"
    path = encode_to_npy(text, tiny_bpe, tmp_path / "a.npy")
    arr = load_tokens(path)
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint16
    assert arr.tolist() == tiny_bpe.encode(text)
    big = save_tokens(np.array([0, 70_000]), tmp_path / "b.npy", vocab_size=100_000)
    assert load_tokens(big).dtype == np.uint32
    with pytest.raises(ValueError, match="超出词表范围"):
        save_tokens(np.array([5, 300]), tmp_path / "c.npy", vocab_size=300)
    assert not list(tmp_path.glob(".*part"))


def test_streaming_encode_equals_whole_text(tmp_path, tiny_bpe) -> None:
    # 各种行尾与行首空白：块只能在安全边界处切开，结果必须与整体编码相同
    lines = ["今天天气很好。\n", "  缩进的行\n", "尾部空格  \n", "\n", "\n", "明天\r\n", "好\n", "x\n"] * 30
    text = "".join(lines)
    src = tmp_path / "src.txt"
    src.write_text(text, encoding="utf-8", newline="")
    out = encode_file_to_npy(src, tiny_bpe, tmp_path / "s.npy", block_chars=20)
    assert load_tokens(out).tolist() == tiny_bpe.encode(text)
    gpt2 = get_gpt2_tokenizer()
    out2 = encode_file_to_npy(src, gpt2, tmp_path / "g.npy", block_chars=7)
    assert load_tokens(out2).tolist() == gpt2.encode(text)
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert len(load_tokens(encode_file_to_npy(empty, tiny_bpe, tmp_path / "e.npy"))) == 0
    assert not list(tmp_path.glob(".*part"))


def test_random_window_sampler(tmp_path) -> None:
    path = save_tokens(np.arange(1000), tmp_path / "t.npy", vocab_size=1000)
    tokens = load_tokens(path)  # 词元值 = 位置，于是 x[:, 0] 就是窗口起点
    s = RandomWindowSampler(tokens, batch_size=8, context_length=32, seed=3)
    x, y = s.sample()
    assert x.shape == (8, 32) and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1]) and np.array_equal(x + 1, y)
    x2, _ = RandomWindowSampler(tokens, 8, 32, seed=3).sample()
    assert np.array_equal(x, x2)
    big = RandomWindowSampler(tokens, batch_size=4000, context_length=32, seed=0)
    starts = big.sample()[0][:, 0]
    assert starts.min() == 0 and starts.max() == 1000 - 33  # 两端都能取到，且目标不越界
    with pytest.raises(ValueError, match="只有 10 个词元"):
        RandomWindowSampler(np.arange(10), 2, 10)
