"""检查点跨轨道往返与 gpt_torch 的错误处理：一边保存、另一边载入，logits 相同；共享权重保持共享。"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt_testutil import default_dtype, numpy_model, tiny_cfg, torch_threads  # noqa: E402

import tinytensor as tt  # noqa: E402
from gpt_numpy.model import GPTModel as NumpyGPT  # noqa: E402
from gpt_torch.model import GPTModel as TorchGPT  # noqa: E402
from llmcore.checkpoint import CheckpointError  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield
X = np.array([[0, 5, 9, 36, 2, 2, 17], [3, 1, 4, 1, 5, 9, 26]])


def numpy_logits(m: NumpyGPT) -> np.ndarray:
    with tt.no_grad():
        return m(X).data


def torch_logits(m: TorchGPT) -> np.ndarray:
    with torch.no_grad():
        return m(torch.as_tensor(X)).numpy()


@pytest.mark.parametrize("tied", [False, True])
def test_numpy_to_torch(tmp_path, tied):
    with default_dtype(tt.float64):
        nm = numpy_model(tiny_cfg(tie_weights=tied, qkv_bias=True), 2)
    nm.save(tmp_path)
    tm = TorchGPT.load(tmp_path, dtype=torch.float64)
    np.testing.assert_allclose(torch_logits(tm), numpy_logits(nm), rtol=1e-10, atol=1e-12)
    assert (tm.out_head.weight is tm.tok_emb.weight) == tied
    tm32 = TorchGPT.load(tmp_path)
    assert tm32.tok_emb.weight.dtype == torch.float32
    np.testing.assert_allclose(torch_logits(tm32), numpy_logits(nm), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tied", [False, True])
def test_torch_to_numpy(tmp_path, tied):
    torch.manual_seed(0)
    tm = TorchGPT(tiny_cfg(tie_weights=tied)).double()
    with torch.no_grad():
        for p in tm.parameters():
            p.normal_(0, 0.3)
    tm.save(tmp_path)
    nm = NumpyGPT.load(tmp_path, dtype=np.float64)
    np.testing.assert_allclose(numpy_logits(nm), torch_logits(tm), rtol=1e-10, atol=1e-12)
    assert (nm.out_head.weight is nm.tok_emb.weight) == tied
    # 再存回 torch：数值逐位不变
    nm.save(tmp_path / "again")
    tm2 = TorchGPT.load(tmp_path / "again", dtype=torch.float64)
    for (k, a), (k2, b) in zip(tm.state_dict().items(), tm2.state_dict().items()):
        assert k == k2
        assert torch.equal(a, b), k


def test_tied_stays_tied_after_load_and_training_step(tmp_path):
    numpy_model(tiny_cfg(tie_weights=True), 0).save(tmp_path)
    tm = TorchGPT.load(tmp_path)
    assert tm.out_head.weight is tm.tok_emb.weight
    opt = torch.optim.AdamW(tm.parameters(), lr=1e-2)
    tm(torch.as_tensor(X)).sum().backward()
    opt.step()
    assert torch.equal(tm.out_head.weight, tm.tok_emb.weight)
    from safetensors.numpy import load_file

    assert "out_head.weight" not in load_file(str(tmp_path / "model.safetensors"))  # 共享的权重只存一份


def test_torch_errors():
    m = TorchGPT(tiny_cfg())
    with pytest.raises(ValueError, match=r"输入长度 13 超过了模型的上下文长度 context_length=12"):
        m(torch.zeros(1, 13, dtype=torch.long))
    for bad in (37, -2):
        with pytest.raises(IndexError, match=rf"词元 id {bad} 超出嵌入表范围 \[0, 37\)"):
            m(torch.tensor([[1, bad, 2]]))
    # GPU 上用的设备端断言（CPU 张量上立即生效，所以这里能测到它的判断与消息）
    from gpt_torch.model import assert_ids_in_vocab_async

    assert_ids_in_vocab_async(torch.tensor([[0, 36]]), 37)
    for bad in (37, -2):
        with pytest.raises(RuntimeError, match=r"词元 id 超出嵌入表范围 \[0, 37\)"):
            assert_ids_in_vocab_async(torch.tensor([[1, bad]]), 37)
    small = NumpyGPT(tiny_cfg(emb_dim=8, n_heads=2))
    shape_msg = r"'tok_emb.weight' 形状不匹配：检查点中为 \(37, 8\)，模型需要 \(37, 16\)"
    with pytest.raises(CheckpointError, match=shape_msg):
        m.load_arrays(small.state_arrays())
    with pytest.raises(CheckpointError, match="共享"):
        TorchGPT(tiny_cfg(tie_weights=True)).load_arrays(NumpyGPT(tiny_cfg()).state_arrays())


def test_torch_load_corrupted(tmp_path):
    numpy_model(tiny_cfg(), 0).save(tmp_path)
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="已损坏"):
        TorchGPT.load(tmp_path)
    w.unlink()
    with pytest.raises(CheckpointError, match="缺少文件 .*model.safetensors"):
        TorchGPT.load(tmp_path)


def test_unsupported_dtype_is_not_called_corrupt(tmp_path):
    from safetensors.torch import save_file

    from llmcore.checkpoint import load_arrays

    path = tmp_path / "bf16.safetensors"
    save_file({"w": torch.zeros(3, dtype=torch.bfloat16)}, str(path))
    with pytest.raises(CheckpointError, match="不支持的数据类型 BF16") as e:
        load_arrays(path)
    assert "损坏" not in str(e.value)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(CheckpointError, match="已损坏"):
        load_arrays(path)
