"""Qwen3 对话：抽样工具、多轮会话复用 KV 缓存（结果与从头计算相同）、超长对话的两种处理、chat 命令。"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from qwen3_testutil import write_qwen_style_tokenizer, write_tiny_qwen3  # noqa: E402

from gpt_numpy.qwen3 import Qwen3Model  # noqa: E402
from llmcore.qwen3.chat import render_chat, strip_thinking  # noqa: E402
from llmcore.qwen3.generate import ChatSession, SamplingConfig, apply_repetition_penalty, stream_sample  # noqa: E402
from llmcore.tokenizers.hf_json import HFJsonTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """小分词器 + 词表相同大小的随机权重 Qwen3，放在同一个目录（与真实模型目录的布局相同）。"""
    d = tmp_path_factory.mktemp("qwen3chat")
    tok = write_qwen_style_tokenizer(d / "tokenizer.json", ["你好，我是一个语言模型。Hello there, how are you?"] * 20,
                                     320, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    write_tiny_qwen3(d, vocab_size=tok.get_vocab_size(), max_position_embeddings=256, seed=4)
    return d


def test_repetition_penalty():
    lg = np.array([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(lg, [0, 1, 1], 2.0)
    np.testing.assert_allclose(out, [[1.0, -2.0, 0.5, 3.0]])
    np.testing.assert_array_equal(apply_repetition_penalty(lg, [0], 1.0), lg)
    with pytest.raises(ValueError, match="repetition_penalty"):
        apply_repetition_penalty(lg, [0], 0.0)


def test_strip_thinking_and_template_errors():
    assert strip_thinking("<think>\n想一想\n</think>\n\n答案") == "答案"
    assert strip_thinking("答案") == "答案"
    hist = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "<think>嗯</think>\n\n2"}]
    assert render_chat(hist, add_generation_prompt=False) == (
        "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n")
    with pytest.raises(ValueError, match="角色 'tool'"):
        render_chat([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="system 消息只能是第一条"):
        render_chat([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}])


def test_session_reuses_cache_exactly(model_dir):
    """第二轮只计算新增的词元；结果与把同样的历史从头算一遍完全相同。"""
    model = Qwen3Model.from_pretrained(model_dir)
    tok = HFJsonTokenizer.from_file(model_dir)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=12)
    a = ChatSession(model.step, model.new_cache(max_len=200), tok, system="你是助手。", enable_thinking=False)
    r1 = "".join(a.reply("你好", cfg))
    r2 = "".join(a.reply("how are you?", cfg))
    b = ChatSession(model.step, model.new_cache(max_len=200), tok, system="你是助手。", enable_thinking=False)
    assert a.messages[1:3] == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": r1}]
    b.messages += [{"role": "user", "content": "你好"}, {"role": "assistant", "content": r1}]
    assert "".join(b.reply("how are you?", cfg)) == r2
    assert len(r1) > 0 and a.messages[-1] == {"role": "assistant", "content": r2}
    a.reset()
    assert a.cache.pos == 0 and a.messages == [{"role": "system", "content": "你是助手。"}]


def test_stop_strings_and_ids(model_dir):
    model = Qwen3Model.from_pretrained(model_dir)
    tok = HFJsonTokenizer.from_file(model_dir)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=15)
    full = "".join(ChatSession(model.step, model.new_cache(max_len=200), tok).reply("你好", greedy))
    clean = [i for i in range(1, len(full) - 1) if "\ufffd" not in full[i : i + 2]]
    assert clean, full
    stop = full[clean[0] : clean[0] + 2]
    cut = SamplingConfig(temperature=0.0, max_new_tokens=15, stop_strings=(stop,))
    got = "".join(ChatSession(model.step, model.new_cache(max_len=200), tok).reply("你好", cut))
    assert full.startswith(got) and len(got) < len(full) and stop not in got  # 在停止串之前截断
    cache = model.new_cache(max_len=50)
    first = next(stream_sample(model.step, cache, [1, 5, 9], greedy))
    cache.pos = 0
    assert list(stream_sample(model.step, cache, [1, 5, 9], greedy, stop_ids=[first])) == []


def test_overflow_error_and_truncate(model_dir):
    model = Qwen3Model.from_pretrained(model_dir)
    tok = HFJsonTokenizer.from_file(model_dir)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=8)
    s = ChatSession(model.step, model.new_cache(max_len=48), tok, on_overflow="error")
    with pytest.raises(ValueError, match="超过了上下文长度 48"):
        list(s.reply("你好 " * 40, cfg))
    assert s.messages == []  # 失败的消息不留在历史里
    t = ChatSession(model.step, model.new_cache(max_len=48), tok, on_overflow="truncate")
    for _ in range(4):
        list(t.reply("你好，how are you?", cfg))
    assert t.cache.pos <= 48 and len(t.messages) < 8
    with pytest.raises(ValueError, match="on_overflow"):
        ChatSession(model.step, model.new_cache(), tok, on_overflow="drop")


@pytest.mark.parametrize("track", ["gpt_numpy", "gpt_torch"])
def test_chat_command(model_dir, track):
    pytest.importorskip("torch")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_HUB_OFFLINE": "1"}
    inp = "你好\n/reset\nhow are you?\n/exit\n"
    quant = ["--quant=int8"] if track == "gpt_numpy" else []
    r = subprocess.run([sys.executable, "-m", track, "chat", f"--model={model_dir}", "--max-new-tokens=6",
                        "--seed=1", "--no-think", *quant], input=inp, capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Qwen：") == 2 and "对话已清空" in r.stderr
    bad = subprocess.run([sys.executable, "-m", track, "chat", "--model=./没有这个目录"], input="", capture_output=True,
                         text=True, timeout=60, env=env)
    assert bad.returncode == 6 and "不是模型目录" in bad.stderr  # 6：检查点错误
