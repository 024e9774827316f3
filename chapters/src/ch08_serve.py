# %% [markdown]
# # 第 8 章（下）：服务与界面
#
# 模型训练好了（第 5 章预训练、第 7 章按对话格式微调），接下来要让别人用上它：别的程序通过网络调用它，
# 人在浏览器里和它聊天。业界事实上的约定是 **OpenAI 兼容的 HTTP 接口**：`POST /v1/chat/completions`，
# 请求里放一串消息，回复按“一次给完”或“边生成边推送”两种方式返回。只要接口兼容，任何 OpenAI 客户端
# （Python 的 `openai` 包、curl、各种聊天前端）都能直接连上我们的小模型；哪天模型大到一台机器放不下，
# 同样的客户端也能原样换到 vLLM 这类生产级服务器上。
#
# 本节的路线：
#
# 1. 对话模板：一串消息怎样变成模型要续写的词元；
# 2. 引擎接口：服务器眼里的模型只有四样东西；停止字符串与“半个汉字”怎么处理；
# 3. 启动服务器，先不用任何库、只用标准库发请求，看清楚 JSON 长什么样；
# 4. 流式输出：server-sent events (SSE) 在线路上的样子，自己写一个最小的 SSE 解析器；
# 5. 用官方 `openai` 客户端和 curl 调用；错误长什么样；排队与断开；
# 6. 量一量：经由 API 与直接生成，首词元延迟和每秒词元数差多少；
# 7. 聊天页面，以及为什么模型输出里的 `<script>` 必须只当文字显示。
#
# 服务器代码在 `llmcore/server/`（两条轨道共用，不导入任何计算引擎），命令行是
# `python -m gpt_numpy serve` 或 `python -m gpt_torch serve`。设置 `LLMZH_QUICK=1` 时（测试就是这样跑的），
# 用一个随机权重的小模型代替训练好的模型，整节很快跑完；本文件保存的输出来自完整运行。

# %%
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from threadpoolctl import threadpool_limits

import gpt_numpy
from gpt_numpy.__main__ import TRACK
from llmcore.cli import load_tokenizer_for
from llmcore.config import TrainConfig
from llmcore.server import ZH_TEMPLATE, GPTEngine, TextAssembler

QUICK = os.environ.get("LLMZH_QUICK") == "1"
ROOT = Path(gpt_numpy.__file__).resolve().parent.parent
WORK = Path(tempfile.mkdtemp(prefix="llmzh-ch08-"))
# 批大小为 1 的生成全是小矩阵乘法，多线程的 BLAS 反而互相等待（见 bench/bench_generate.py）；
# 本进程与服务器子进程都只用 1 个 BLAS 线程，两边的测量才可比
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
threadpool_limits(1)
print("快速模式" if QUICK else "完整模式")

# %% [markdown]
# 先准备一个模型。完整模式下用第 5 章的默认配置（《人民日报》语料、字符级分词、tiny 模型）训练 300 步——
# 只是一个会写几句“新闻腔”的预训练模型，没有学过对话，但足以演示服务的全部机制；第 7 章微调出的对话模型
# 用法完全一样（换一个 `--ckpt`）。快速模式直接写一个随机权重的小模型。

# %%
CKPT = WORK / "run"
if QUICK:
    import tinytensor as tt
    from gpt_numpy.model import GPTModel
    from llmcore.config import GPTConfig
    from llmcore.tokenizers import UNK, CharTokenizer

    tok = CharTokenizer.train("用户助手系统：，。！？\n新华社北京电记者今天报道了经济文化建设", special_tokens=(UNK,))
    tt.manual_seed(0)
    cfg = GPTConfig(vocab_size=tok.vocab_size, context_length=128, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0)
    GPTModel(cfg).save(CKPT / "ckpt_best")
    tok.save(CKPT / "tokenizer.json")
else:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "gpt_numpy", "train", "--max_steps=300", f"--out_dir={CKPT}",
                    "--progress=false", "--eval_interval=300"], env=ENV, check=True, capture_output=True)
    print(f"训练 300 步用了 {time.time() - t0:.0f} 秒")
CKPT_DIR = CKPT / "ckpt_best"
tokenizer = load_tokenizer_for(CKPT_DIR)
model = TRACK.load_model(CKPT_DIR, TrainConfig())
print(f"词表 {tokenizer.vocab_size:,}，上下文 {model.cfg.context_length}，参数 {model.num_parameters():,} 个")

# %% [markdown]
# ## 8.1 对话模板
#
# 聊天接口收到的是一串**消息**，每条有角色 (role) 和内容：`system`（系统提示，给助手定规矩）、`user`（用户）、
# `assistant`（助手之前的回答）。GPT 只会“接着往下写”，所以服务器要先把消息排成一段文本，
# 结尾停在助手该开口的地方，让模型续写——这个排版规则叫**对话模板** (chat template)。
#
# 我们的小模型没有专门的特殊词元，预训练出来的模型用一个纯文本的中文模板：每条消息一行，以“系统：”“用户：”“助手：”开头，
# 最后以“助手：”结尾。推理时模型生成 `<|endoftext|>`、或者开始替用户说话（生成出“\n用户：”），就该停下。
#
# 第 7 章指令微调过的模型学的是另一种格式（Alpaca 风格的“### 指令：……### 回答：”）。`serve` 读到检查点
# `config.json` 里的 `"task": "instruct"` 时自动换用 `InstructChatTemplate`：一条消息里第一个空行之前是指令、
# 之后是输入，与训练时的提示逐字相同；启动时打印的“对话模板”一项说明用的是哪一个。

# %%
messages = [
    {"role": "system", "content": "你是一名新闻编辑。"},
    {"role": "user", "content": "写一句新闻导语。"},
    {"role": "assistant", "content": "新华社北京电"},
    {"role": "user", "content": "再写一句。"},
]
print(ZH_TEMPLATE.render(messages))
print("----\n默认停止字符串：", ZH_TEMPLATE.stop)

# %% [markdown]
# 模板还有一个安全上的细节：用户在消息里写 `<|endoftext|>` 这几个字，不能被编码成真正的特殊词元，
# 否则用户就能伪造“对话结束”。`encode` 把它们当普通字符编码（`disallowed_special=()`）。
#
# 别的模型有自己的模板，例如 Qwen3 用 `<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`，
# 由它自带的特殊词元分隔。所以模板不写死在服务器里：任何有 `name`、`stop` 和 `encode(messages, tokenizer)`
# 的对象都可以当模板，由模型（引擎）自己带来。

# %% [markdown]
# ## 8.2 引擎：服务器眼里的模型
#
# 服务器不关心模型是 tinytensor 还是 PyTorch 写的，它只要四样东西：上下文长度、默认停止字符串、
# “按模板编码消息”、解码，外加一个逐个产出新词元的 `stream`。`GPTEngine` 用两条轨道现成的
# `stream_generate`（第 5 章，带 KV 缓存）把它们包起来：

# %%
engine = GPTEngine(model, tokenizer, TRACK.stream)
ids = engine.encode_chat([{"role": "user", "content": "新华社北京电"}])
new = list(engine.stream(ids, temperature=0.8, top_k=40, top_p=None, seed=1, max_new_tokens=40))
print(f"提示 {len(ids)} 个词元 → 新生成 {len(new)} 个：")
print(engine.decode(new))

# %% [markdown]
# 把词元一个个变成文字推给客户端时，有两处容易出错：
#
# - **半个汉字**。字节级 BPE（如 GPT-2 的分词器）常把一个汉字拆成两三个词元，只解码到一半时得到的是
#   替换字符 U+FFFD（�）。这种字符不能先发出去，要等后面的词元到齐。
# - **停止字符串**。停止字符串可能跨越几个词元（“\n”“用”“户：”），也可能只是看起来像开头（“\n用心”）。
#   已经发给客户端的文字收不回来，所以文本末尾只要**可能**是某个停止字符串的开头，就先扣住；
#   确定不是再放行，确定是就截断在它前面（停止字符串本身不返回，OpenAI 也是这样）。
#
# `TextAssembler` 做这两件事。先看半个汉字：

# %%
from llmcore.tokenizers import get_gpt2_tokenizer

gpt2 = get_gpt2_tokenizer()
pieces = gpt2.encode("模型")
print("“模型”在 GPT-2 分词器里是", len(pieces), "个词元：", pieces)
for k in range(1, len(pieces) + 1):
    print(f"  解码前 {k} 个：{gpt2.decode(pieces[:k])!r}")
asm = TextAssembler(gpt2.decode, stop=[])
print("逐个推入 TextAssembler，每次放行的文字：", [asm.push(t)[0] for t in pieces])

# %% [markdown]
# 再看停止字符串。把“每个词元解码成一段文字”的过程换成一张表，就能看清扣住与放行：

# %%
def run_assembler(pieces: list[str], stop: list[str]) -> None:
    asm = TextAssembler(lambda ids: "".join(pieces[i] for i in ids), stop)
    for i, p in enumerate(pieces):
        delta, stopped = asm.push(i)
        print(f"  推入 {p!r:8} → 放行 {delta!r:10} {'（遇到停止字符串）' if stopped else ''}")
        if stopped:
            return
    print(f"  生成结束 → 放行 {asm.finish()!r}")


print("停止字符串 '\\n用户：'，模型开始替用户说话：")
run_assembler(["好的", "\n", "用", "户：", "谢谢"], ["\n用户："])
print("只是看起来像：")
run_assembler(["好的", "\n", "用", "心"], ["\n用户："])

# %% [markdown]
# ### 排队
#
# 一个模型同一时刻只能做一次生成（KV 缓存、模型的 train/eval 状态都是它自己的），所以每个模型有一个
# “工人” (`ModelWorker`)：请求按到达顺序排队，轮到谁谁进引擎。生成放在单独的线程里，
# 服务器的事件循环 (event loop) 因此始终空着，能随时接收新请求、回答健康检查、发现客户端断开。
# 每个请求带一个取消标志；客户端断开，服务器就把它的标志立起来，生成线程在下一个词元处停下，
# 只影响这一个请求。

# %% [markdown]
# ## 8.3 启动服务器，用标准库发请求
#
# 命令行就是一行（`--model-name` 是 API 里的模型名）：
#
# ```bash
# python -m gpt_numpy serve --ckpt=runs/gpt_numpy --port=8000 --model-name=tiny
# ```
#
# 这里在子进程里启动它，端口挑一个空闲的：

# %%
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
server = subprocess.Popen(
    [sys.executable, "-m", "gpt_numpy", "serve", f"--ckpt={CKPT}", f"--port={PORT}", "--model-name=tiny"],
    env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
)


def get(path: str) -> dict:
    with urllib.request.urlopen(BASE + path, timeout=5) as r:
        return json.loads(r.read())


for _ in range(600):
    try:
        print("GET /health →", get("/health"))
        break
    except OSError:
        time.sleep(0.1)
print("GET /v1/models →", json.dumps(get("/v1/models"), ensure_ascii=False))

# %% [markdown]
# 一次普通（非流式）的请求：POST 一个 JSON，回来一个 JSON。`usage` 报告提示和回复各用了多少词元，
# `finish_reason` 说明为什么停：`length` 是用完了 `max_tokens`，`stop` 是遇到了停止字符串或结束词元。

# %%
def post(body: dict) -> dict:
    req = urllib.request.Request(BASE + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


body = {"model": "tiny", "messages": [{"role": "user", "content": "新华社北京电"}],
        "max_tokens": 30, "temperature": 0.8, "top_k": 40, "seed": 7}
reply = post(body)
reply["id"], reply["created"] = "chatcmpl-…", 0  # 每次都不同，打印时隐去
print(json.dumps(reply, ensure_ascii=False, indent=1))

# %% [markdown]
# ## 8.4 流式输出：server-sent events
#
# 生成一个词元要几毫秒到几百毫秒，整段回复可能要几秒到几分钟；让用户干等不如边生成边显示。
# 加上 `"stream": true`，服务器返回 `Content-Type: text/event-stream`，连接保持打开，
# 每有新文字就写一个**事件**：一行 `data: <JSON>`，再跟一个空行。这就是 server-sent events (SSE)——
# 普通的 HTTP 响应，只是分很多次写完（生成比发送快时，服务器把已经到达的几段文字并成一个事件）。OpenAI 的约定是：每个事件是一个 `chat.completion.chunk`，
# 新文字在 `choices[0].delta.content`；最后一块带 `finish_reason`；要用量就加
# `stream_options.include_usage`，会多一个 `choices` 为空、带 `usage` 的块；最后一个事件是 `data: [DONE]`。
#
# 直接看线路上的字节：

# %%
conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
stream_body = {**body, "max_tokens": 4, "stream": True, "stream_options": {"include_usage": True}}
conn.request("POST", "/v1/chat/completions", json.dumps(stream_body), {"Content-Type": "application/json"})
resp = conn.getresponse()
print(resp.status, resp.getheader("Content-Type"))
raw = resp.read().decode()
conn.close()
for line in raw.splitlines():
    if line.startswith("data: {"):
        obj = json.loads(line[6:])
        obj["id"], obj["created"] = "…", 0
        line = "data: " + json.dumps(obj, ensure_ascii=False)
    print(line)

# %% [markdown]
# 解析 SSE 只要十来行：按行读，`data:` 开头的行攒起来，遇到空行就是一个完整事件。
# 这个解析器边读边产出事件，不等响应结束——这正是流式的意义。

# %%
def sse_events(lines):
    """从一行行的文本里切出 SSE 事件的 data 部分（一个事件可以有多行 data:，用换行连接）。"""
    data = []
    for line in lines:
        line = line.rstrip("\r\n")
        if line == "":
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        # 以 ":" 开头的是注释（常用作心跳），event:/id:/retry: 字段这里用不到


def stream_chat(body: dict):
    """发一个流式请求，逐段产出新文字。"""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    lines = (raw.decode("utf-8") for raw in iter(resp.readline, b""))
    for data in sse_events(lines):
        if data == "[DONE]":
            break
        obj = json.loads(data)
        for choice in obj["choices"]:
            if choice["delta"].get("content"):
                yield choice["delta"]["content"]
    conn.close()


parts = list(stream_chat(body))
print(f"收到 {len(parts)} 段：", parts[:8], "…")
print("拼起来与非流式的回复相同（同一个种子）：", "".join(parts) == reply["choices"][0]["message"]["content"])

# %% [markdown]
# 同一个种子、同样的参数，流式与非流式得到逐字相同的文字：两者走的是同一个生成循环，区别只在于
# 文字是攒齐了一次发，还是来一段发一段。

# %% [markdown]
# ## 8.5 官方 `openai` 客户端与 curl
#
# 因为接口兼容，官方客户端只要把 `base_url` 指向我们的服务器（`api_key` 随便填，我们不检查）。
# `top_k` 不是 OpenAI 的参数，用 `extra_body` 传（vLLM 等服务器也这样接受它）。

# %%
from openai import OpenAI

client = OpenAI(base_url=BASE + "/v1", api_key="not-needed")
kw = dict(model="tiny", messages=body["messages"], max_tokens=30, temperature=0.8, seed=7, extra_body={"top_k": 40})
r = client.chat.completions.create(**kw)
print("非流式：", r.choices[0].message.content, "|", r.usage.completion_tokens, "个词元，", r.choices[0].finish_reason)
text = ""
for chunk in client.chat.completions.create(stream=True, **kw):
    text += chunk.choices[0].delta.content or "" if chunk.choices else ""
print("流式：  ", text)

# %% [markdown]
# `stop` 让回复在某个字符串之前停下。取上面回复里的一个字作为停止字符串：

# %%
full = r.choices[0].message.content
stop = full[10]
r2 = client.chat.completions.create(stop=[stop], **kw)
print(f"stop={stop!r} →", repr(r2.choices[0].message.content), r2.choices[0].finish_reason)
print("恰好是原回复在它第一次出现之前的部分：", r2.choices[0].message.content == full[: full.index(stop)])

# %% [markdown]
# 命令行里用 curl 也一样，`-N` 关掉 curl 自己的缓冲，事件一到就打印：
#
# ```bash
# curl -N http://127.0.0.1:8000/v1/chat/completions -H "Content-Type: application/json" \
#   -d '{"model": "tiny", "messages": [{"role": "user", "content": "新华社北京电"}], "max_tokens": 3, "stream": true}'
# ```

# %%
if shutil.which("curl"):
    data = json.dumps({"model": "tiny", "messages": body["messages"], "max_tokens": 3, "stream": True, "seed": 7},
                      ensure_ascii=False)
    out = subprocess.run(["curl", "-sN", BASE + "/v1/chat/completions", "-H", "Content-Type: application/json",
                          "-d", data], capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        if line.startswith("data: {"):
            d = json.loads(line[6:])
            print("data: … \"delta\":", json.dumps(d["choices"][0]["delta"], ensure_ascii=False),
                  "\"finish_reason\":", json.dumps(d["choices"][0]["finish_reason"]))
        elif line:
            print(line)
else:
    print("这台机器上没有 curl")

# %% [markdown]
# ### 出错时
#
# 坏请求得到 4xx 和 OpenAI 格式的错误：`{"error": {"message", "type", "param", "code"}}`。
# 服务器不会因为任何一个请求退出。几种常见的错：

# %%
def post_raw(data: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(BASE + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


ctx = model.cfg.context_length
cases = {
    "不是 JSON": b"{model: tiny",
    "没有这个模型": json.dumps({"model": "gpt-4", "messages": body["messages"]}).encode(),
    "缺少 messages": json.dumps({"model": "tiny"}).encode(),
    "温度为负": json.dumps({"model": "tiny", "messages": body["messages"], "temperature": -1}).encode(),
    "提示超过上下文": json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "长" * ctx}]}).encode(),
}
for name, data in cases.items():
    status, err = post_raw(data)
    e = err["error"]
    print(f"{name}：{status} {e['code']}\n    {e['message']}")

# %% [markdown]
# ### 排队与断开
#
# 同时来 4 个请求：它们在服务器里排队、逐个生成，事件循环照常回答健康检查。再模拟一个中途断开的客户端：
# 读到两块就关掉连接，服务器随即取消那次生成（`/health` 里的 `cancelled` 加一，队列清空）。

# %%
results = {}


def worker(i: int) -> None:
    t0 = time.perf_counter()
    out = post({**body, "seed": i, "max_tokens": 40})
    results[i] = (time.perf_counter() - t0, out["usage"]["completion_tokens"])


threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
time.sleep(0.05)
print("生成进行中，健康检查照常回答：队列里有", get("/health")["models"]["tiny"]["queued"], "个请求")
for t in threads:
    t.join()
for i in sorted(results, key=lambda i: results[i][0]):
    print(f"  请求 {i}：{results[i][1]} 个词元，等到回复用了 {results[i][0] * 1000:.0f} 毫秒")

before = get("/health")["models"]["tiny"]["cancelled"]
conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
conn.request("POST", "/v1/chat/completions", json.dumps({**body, "max_tokens": 100000, "stream": True}),
             {"Content-Type": "application/json"})
resp = conn.getresponse()
resp.readline(), resp.readline(), resp.readline(), resp.readline()  # 两个事件（各一行 data 加一个空行）
conn.sock.shutdown(socket.SHUT_RDWR)
conn.close()
for _ in range(100):
    h = get("/health")["models"]["tiny"]
    if h["queued"] == 0:
        break
    time.sleep(0.05)
print(f"断开之后：队列 {h['queued']}，被取消的生成 {h['cancelled'] - before} 个（本来要生成十万个词元）")

# %% [markdown]
# 四个请求的等待时间依次变长，正是排队的样子：后到的要等前面的生成完。更大的服务器会把多个请求
# 拼成一个批次一起算（continuous batching），那是 vLLM 这类系统的主要本领，这里不展开。

# %% [markdown]
# ## 8.6 量一量：经由 API 与直接生成
#
# HTTP、JSON、线程之间的传递都要时间。在同一次运行里用同一个提示、同一组种子量两件事：
# **首词元延迟**（从发出请求到拿到第一个词元）和**生成速度**（词元数除以从发出请求到最后一个词元的时间）。
# 直接生成在本进程里调用 `engine.stream`；经由 API 用 `openai` 客户端的流式请求。两边交替各量几次，取中位数。

# %%
N_TOK, REPEATS = (30, 3) if QUICK else (100, 7)
msgs = [{"role": "user", "content": "新华社北京电"}]


def direct(seed: int) -> tuple[float, float, int]:
    ids = engine.encode_chat(msgs)
    t0 = time.perf_counter()
    ts = [time.perf_counter() for _ in engine.stream(ids, 0.8, 40, None, seed, N_TOK)]
    return ts[0] - t0, len(ts) / (ts[-1] - t0), len(ts)


def via_api(seed: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    ts, n = [], 0
    for ch in client.chat.completions.create(model="tiny", messages=msgs, max_tokens=N_TOK, temperature=0.8, seed=seed,
                                             extra_body={"top_k": 40}, stream=True,
                                             stream_options={"include_usage": True}):
        if ch.choices and ch.choices[0].delta.content:
            ts.append(time.perf_counter())
        if ch.usage:
            n = ch.usage.completion_tokens
    return ts[0] - t0, n / (ts[-1] - t0), n


direct(0), via_api(0)  # 预热
rows = {"直接生成": [], "经由 API（流式）": []}
for s in range(1, REPEATS + 1):  # 交替测量：机器上别的负载对两边的影响相近
    rows["直接生成"].append(direct(s))
    rows["经由 API（流式）"].append(via_api(s))
med = {k: (statistics.median(r[0] for r in v) * 1000, statistics.median(r[1] for r in v)) for k, v in rows.items()}
for k, (first, tps) in med.items():
    print(f"{k:10}  首词元 {first:6.1f} 毫秒   生成 {tps:6.0f} 词元/秒")
(d_first, d_tps), (a_first, a_tps) = med["直接生成"], med["经由 API（流式）"]
print(f"API 的首词元多 {a_first - d_first:.1f} 毫秒，生成速度是直接生成的 {a_tps / d_tps:.2f} 倍")

# %% [markdown]
# 这次运行里，经由 API 的首词元多了约 21 毫秒，生成速度是直接生成的 0.94 倍。直接生成的首词元只是一次前向
# （提示很短，约 2 毫秒）；经由 API 还要加上建立连接、解析请求、编码、排队、线程交接、把 JSON 写上网络和客户端解析，
# 多出来的是几十毫秒的量级——人在聊天页面上察觉不到。
#
# 生成速度的比值在这台 2 核、同时跑着别的任务的机器上波动很大：README 里 `bench/bench_serve.py` 连续 4 次运行，
# 同一个检查点得到的是 0.35–0.44 倍。原因在于这个模型很小（一个词元两三毫秒），而每个词元在服务器里还要经过
# 线程交接、JSON 编码和一次网络写，在客户端还要解析一块 JSON，这些固定开销与一次前向在同一个量级；
# 客户端、服务器的事件循环和生成线程又在抢同一组 CPU，抢得凶时 API 这边就慢得多。模型越大，
# 每个词元的前向越贵，这部分开销的占比就越小。

# %% [markdown]
# ## 8.7 聊天页面
#
# 同一个服务器在 `/` 提供一个聊天页面（`llmcore/server/static/` 下的 HTML、JavaScript、CSS，不依赖任何 CDN，
# 断网也能用）。启动服务器后在浏览器里打开 `http://127.0.0.1:8000/`：
#
# ![聊天页面](../docs/images/chat.png)
#
# 页面做的事和上面的 `stream_chat` 一样：`fetch` 发一个流式请求，用 `response.body.getReader()`
# 一块块读、按空行切出 SSE 事件、把 `delta.content` 追加到回复里。（浏览器自带的 `EventSource`
# 只能发 GET 请求，所以不用它。）“停止”按钮调用 `AbortController.abort()`，连接一断，
# 服务器就取消这次生成。对话记录保存在页面里，每次请求把整段对话连同新消息一起发过去——
# 服务器本身不记任何状态，这也是 OpenAI 接口的约定。对话一长就会超过上下文，那时服务器回 400，
# 页面显示错误，点“清空对话”重新开始。
#
# 回复按 Markdown 显示（代码块、粗体等）。这里有一个必须当心的地方：模型输出的是任意文本，
# 可能包含 `<script>` 或 `<img onerror=…>`。如果直接塞进 `innerHTML`，浏览器就会执行它们——
# 这叫 HTML 注入 (XSS)。做法是**先转义，再排版**：把 `& < > " '` 全部换成实体，
# 然后只在转义后的文字上识别少数几种 Markdown 记号。这样模型能控制的只有文字，生成不出任何标签：

# %%
md = (ROOT / "llmcore/server/static/markdown.js").read_text(encoding="utf-8")
start = md.index("function escapeHtml")
print(md[start : md.index("}", start) + 1])

# %% [markdown]
# 测试 `tests/test_server_browser.py` 在真正的浏览器（chromium，由 Playwright 驱动）里检查这些：
# 输入消息、看回复逐字流入、按停止、发第二条消息、截图，以及模型输出的 `<script>` 只显示成文字、没有被执行。

# %% [markdown]
# ## 8.8 关闭服务器
#
# 服务器收到 SIGINT（Ctrl-C）或 SIGTERM 时不再接受新连接，正在进行的请求再给几秒（`--graceful-timeout`，
# 默认 5 秒）收尾，还没完的生成在下一个词元处停下，流式请求收到一条“服务器正在关闭”的错误事件，然后进程以
# 退出码 0 结束。

# %%
server.send_signal(signal.SIGTERM)
code = server.wait(timeout=30)
log = server.stdout.read().splitlines()
print("退出码", code)
print("\n".join(line for line in log if "Shutting down" in line or "服务器已停止" in line))

# %% [markdown]
# ## 练习
#
# 1. 写一个函数 `count_chunks(body)`：用本节的 `sse_events` 发一个流式请求，返回收到的事件个数、拼起来的文字
#    和最后的 `finish_reason`。对 `max_tokens=5` 的请求，事件最多有几个？为什么有时会更少？
# 2. 给消息加上一条 system 消息，`usage.prompt_tokens` 增加了多少？用 `ZH_TEMPLATE.render` 解释这个数。
# 3. 停止字符串的“扣住”逻辑：用 `TextAssembler` 构造一个例子，停止字符串是 `"。\n"`，
#    生成的文字里出现了 `"。"` 但后面不是换行。验证 `"。"` 最终被放行，且是在下一个词元到来时才放行的。
# 4. 为什么 `max_tokens` 很大、客户端却中途断开时，服务器必须主动停止生成？如果不停，
#    在“一个模型一次只做一个生成”的设计下，后面排队的请求会怎样？

# %% [markdown]
# **练习 1 解答。** 重新启动一个服务器（上面的已经关闭），逐个事件计数。第一块只带角色（`role: assistant`，
# 内容为空），之后每个词元最多一块（字符级分词器一个词元一个字），再加一块只带 `finish_reason`，
# 所以最多 1 + 5 + 1 = 7 块。生成比发送快时，服务器把已经到达的几段文字并成一块发出，块数就少于 7；
# 文字本身不受影响，永远是 5 个字。

# %%
PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
server = subprocess.Popen(
    [sys.executable, "-m", "gpt_numpy", "serve", f"--ckpt={CKPT}", f"--port={PORT}", "--model-name=tiny"],
    env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
for _ in range(600):
    try:
        get("/health")
        break
    except OSError:
        time.sleep(0.1)
client = OpenAI(base_url=BASE + "/v1", api_key="not-needed")


def count_chunks(body: dict) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                 {"Content-Type": "application/json"})
    lines = (raw.decode() for raw in iter(conn.getresponse().readline, b""))
    n, text, reason = 0, "", None
    for data in sse_events(lines):
        if data == "[DONE]":
            break
        n += 1
        choice = json.loads(data)["choices"][0]
        text += choice["delta"].get("content") or ""
        reason = choice["finish_reason"] or reason
    conn.close()
    return n, text, reason


n, text, reason = count_chunks({**body, "max_tokens": 5})
print(f"{n} 个事件（不超过 7：{n <= 7}），文字 {len(text)} 个字，finish_reason = {reason}")

# %% [markdown]
# **练习 2 解答。** system 消息渲染成“系统：你是一名新闻编辑。\n”一行，字符级分词器一个字一个词元，
# 增加的词元数就是这一行的字符数。

# %%
with_sys = [{"role": "system", "content": "你是一名新闻编辑。"}] + body["messages"]
a = client.chat.completions.create(model="tiny", messages=body["messages"], max_tokens=1)
b = client.chat.completions.create(model="tiny", messages=with_sys, max_tokens=1)
print("增加", b.usage.prompt_tokens - a.usage.prompt_tokens, "个词元；这一行有", len("系统：你是一名新闻编辑。\n"), "个字符")

# %% [markdown]
# **练习 3 解答。**

# %%
pieces = ["今天", "。", "明天", "。\n", "后天"]
asm = TextAssembler(lambda ids: "".join(pieces[i] for i in ids), ["。\n"])
for i, p in enumerate(pieces):
    delta, stopped = asm.push(i)
    print(f"推入 {p!r:6} → 放行 {delta!r:8} 停止：{stopped}")
    if stopped:
        break

# %% [markdown]
# 第二个词元“。”被扣住（它可能是“。\n”的开头），第三个词元“明天”到来时才和它一起放行；
# 第四个词元凑出了“。\n”，回复截断在它前面，`stopped` 为 True。
#
# **练习 4 解答。** 断开的客户端已经收不到任何东西，继续生成只是白白占着模型：在一次只做一个生成的设计下，
# 后面排队的请求要一直等到那十万个词元生成完。服务器发现断开就立起这个请求的取消标志，生成线程在下一个词元处
# 退出、释放模型，排在后面的请求马上开始。上面 8.5 节的实验和 `tests/test_server_api.py` 里被强行杀掉的
# 客户端都验证了这一点。

# %%
server.send_signal(signal.SIGTERM)
print("退出码", server.wait(timeout=30))
shutil.rmtree(WORK, ignore_errors=True)
