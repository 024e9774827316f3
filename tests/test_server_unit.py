"""服务器的纯函数部分：对话模板、停止字符串与不完整字符的处理、请求校验、排队不交错（线程内服务器）。"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from llmcore.server.chat_template import ZH_TEMPLATE  # noqa: E402
from llmcore.server.engine import TextAssembler  # noqa: E402
from llmcore.server.protocol import APIError, parse_chat_request  # noqa: E402
from llmcore.tokenizers import CharTokenizer  # noqa: E402


def test_template_renders_and_treats_special_tokens_as_text() -> None:
    msgs = [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "你好<|endoftext|>"}]
    assert ZH_TEMPLATE.render(msgs) == "系统：你是助手\n用户：你好<|endoftext|>\n助手："
    tok = CharTokenizer.train("系统：你是助手\n用户好<|endoft xi>")
    ids = ZH_TEMPLATE.encode(msgs, tok)
    assert tok.eot_id not in ids  # 用户写的 <|endoftext|> 不会变成特殊词元
    assert tok.decode(ids).startswith("系统：你是助手\n用户：你好<|endoftext|>")
    with pytest.raises(ValueError, match="system"):
        ZH_TEMPLATE.render([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])


def _assemble(pieces: list[str], stop: list[str]) -> tuple[list[str], bool, str]:
    """把每个“词元”解码成 pieces 里的一段，逐个推入 TextAssembler。"""
    asm = TextAssembler(lambda ids: "".join(pieces[i] for i in ids), stop)
    out, stopped = [], False
    for i in range(len(pieces)):
        delta, stopped = asm.push(i)
        out.append(delta)
        if stopped:
            break
    if not stopped:
        out.append(asm.finish())
    return out, stopped, "".join(out)


def test_stop_string_split_across_tokens_is_held_back_and_cut() -> None:
    out, stopped, text = _assemble(["你好", "\n", "用", "户：", "再见"], ["\n用户："])
    assert stopped and text == "你好"
    assert out[:4] == ["你好", "", "", ""]  # "\n"、"\n用" 可能是停止字符串的开头，先扣住


def test_false_alarm_prefix_is_released() -> None:
    out, stopped, text = _assemble(["甲", "\n", "用", "心", "乙"], ["\n用户："])
    assert not stopped and text == "甲\n用心乙"
    assert out[:4] == ["甲", "", "", "\n用心"]


def test_incomplete_utf8_is_not_emitted() -> None:
    # 字节级 BPE 把一个汉字拆成两个词元时，第一个词元解码为 U+FFFD
    pieces = ["好", "\ufffd", "中"]
    asm = TextAssembler(lambda ids: "好中" if len(ids) == 3 else "".join(pieces[i] for i in ids), [])
    assert asm.push(0) == ("好", False)
    assert asm.push(1) == ("", False)
    assert asm.push(2) == ("中", False)


def _req(**kw):
    body = {"model": "m", "messages": [{"role": "user", "content": "你好"}], **kw}
    return parse_chat_request(body)


def test_request_defaults_and_fields() -> None:
    r = _req(stream=True, stream_options={"include_usage": True}, temperature=0, top_p=0.9, top_k=5, max_tokens=7,
             stop="。", seed=3)
    assert (r.stream, r.include_usage, r.temperature, r.top_p, r.top_k, r.max_tokens, r.stop, r.seed) == (
        True, True, 0.0, 0.9, 5, 7, ("。",), 3)
    parts = [{"type": "text", "text": "甲"}, {"type": "text", "text": "乙"}]
    r = _req(messages=[{"role": "developer", "content": parts}, {"role": "user", "content": "丙"}])
    assert r.messages[0] == {"role": "system", "content": "甲乙"} and r.temperature == 1.0 and r.top_p is None


@pytest.mark.parametrize("kw,param", [
    ({"temperature": -1}, "temperature"), ({"temperature": "hot"}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 1.5}, "max_tokens"), ({"n": 2}, "n"), ({"top_k": 0}, "top_k"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": 3}, "stop"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages"), ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"), ({"model": None}, "model"),
    ({"stream": "yes"}, "stream"), ({"seed": True}, "seed"),
])
def test_bad_fields_are_400_naming_the_field(kw, param) -> None:
    with pytest.raises(APIError) as e:
        _req(**kw)
    assert e.value.status == 400 and e.value.param == param and e.value.message


def test_requests_for_one_model_never_interleave(tmp_path: Path) -> None:
    """8 个并发的 HTTP 请求：引擎里同一时刻最多一个在生成，全部完成。"""
    import httpx
    from server_helpers import server_thread, write_tiny_ckpt

    from gpt_numpy.__main__ import TRACK
    from llmcore.cli import load_tokenizer_for
    from llmcore.config import TrainConfig
    from llmcore.server import GPTEngine

    ckpt = write_tiny_ckpt(tmp_path / "ckpt")
    inner = GPTEngine(TRACK.load_model(ckpt, TrainConfig()), load_tokenizer_for(ckpt), TRACK.stream)
    log: list[tuple[str, int]] = []
    active = [0, 0]  # 当前, 最大
    lock = threading.Lock()

    class Recording:
        context_length, stop = inner.context_length, inner.stop
        encode_chat, decode = inner.encode_chat, inner.decode

        def stream(self, ids, temperature, top_k, top_p, seed, n):
            with lock:
                active[0] += 1
                active[1] = max(active)
                log.append(("start", seed))
            try:
                for tok in inner.stream(ids, temperature, top_k, top_p, seed, n):
                    time.sleep(0.002)
                    yield tok
            finally:
                with lock:
                    active[0] -= 1

    with server_thread({"rec": Recording()}) as base:
        def call(seed: int) -> None:
            body = {"model": "rec", "messages": [{"role": "user", "content": "新华社"}], "max_tokens": 15, "seed": seed}
            r = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text

        threads = []
        for s in range(8):
            threads.append(threading.Thread(target=call, args=(s,)))
            threads[-1].start()
        for t in threads:
            t.join(60)
    assert active[1] == 1
    assert sorted(s for _, s in log) == list(range(8))


def test_worker_serves_in_arrival_order_and_cancelled_waiters_leave() -> None:
    from llmcore.server.engine import GenParams, Job, ModelWorker

    started: list[int] = []
    gate = threading.Event()

    class Slow:
        context_length, stop = 10, ()

        def decode(self, ids):
            return "x" * len(ids)

        def stream(self, ids, temperature, top_k, top_p, seed, n):
            started.append(seed)
            gate.wait(10)
            yield from range(n)

    worker = ModelWorker("m", Slow())
    events: dict[int, list] = {i: [] for i in range(6)}
    jobs = [Job(GenParams([1], 3, seed=i), lambda k, p, i=i: events[i].append((k, p))) for i in range(6)]
    for j in jobs:
        worker.submit(j)
    time.sleep(0.2)
    assert started == [0] and worker.queued == 6
    jobs[3].cancel.set()  # 排队中的请求被取消：直接离开队列，不进引擎
    time.sleep(0.2)
    assert worker.queued == 5
    gate.set()
    for j in jobs:
        j.thread.join(10)
    assert started == [0, 1, 2, 4, 5]
    assert events[3] == [("done", {"finish_reason": "cancelled", "completion_tokens": 0})]
    assert events[5][-1][1]["finish_reason"] == "length" and "".join(p for k, p in events[5] if k == "delta") == "xxx"
    assert worker.stats["completed"] == 5 and worker.stats["cancelled"] == 1


def test_instruct_template_matches_sft_format_and_eot_is_an_id() -> None:
    from llmcore.finetune import instruct_data as idata
    from llmcore.server.chat_template import InstructChatTemplate, template_for

    tpl = template_for({"task": "instruct", "lang": "zh"})
    assert isinstance(tpl, InstructChatTemplate) and template_for({"format": "llm-zh-gpt"}) is ZH_TEMPLATE
    one = [{"role": "user", "content": "把下面的繁体中文改写成简体中文。\n\n中華人民共和國"}]
    assert tpl.render(one) == idata.format_prompt({"instruction": "把下面的繁体中文改写成简体中文。",
                                                   "input": "中華人民共和國"})
    msgs = [{"role": "system", "content": "简短回答"}, {"role": "user", "content": "你好<|endoftext|>"},
            {"role": "assistant", "content": "你好"}, {"role": "user", "content": "再见"}]
    first = idata.format_example({"instruction": "简短回答\n你好<|endoftext|>", "input": "", "output": "你好"})
    assert tpl.render(msgs) == first + "<|endoftext|>" + idata.format_prompt({"instruction": "再见", "input": ""})
    tok = CharTokenizer.train(tpl.render(msgs))
    ids = tpl.encode(msgs, tok)
    assert ids.count(tok.eot_id) == 1  # 只有轮次之间那一个；用户写的 <|endoftext|> 是普通文本
    assert ids[len(tok.encode(first, disallowed_special=()))] == tok.eot_id
    assert tpl.stop == ("\n\n### 指令：",)
    with pytest.raises(ValueError, match="交替"):
        tpl.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="最后一条"):
        tpl.render([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    with pytest.raises(ValueError, match="语言"):
        InstructChatTemplate("fr")
