"""经由 API 与直接生成的对比：首词元延迟与生成速度（同一次运行、同一个检查点、同样的提示与种子）。

    python bench/bench_serve.py --ckpt=runs/gpt_numpy [--track=gpt_numpy] [--tokens=100] [--repeats=5]

直接生成：本进程里调用 GPTEngine.stream（即轨道的 stream_generate，带 KV 缓存）。
经由 API：`python -m <track> serve` 子进程 + 官方 openai 客户端的流式请求（本机回环）。
首词元延迟：从发出调用到拿到第一个词元（API：第一个带文字的块）；生成速度：词元数 / 从发出调用到最后一个词元的时间
（服务器会把已经到达的几段文字并成一块发送，所以不用“块与块之间的间隔”来算速度）。
两边都先预热一次；之后两边交替各跑 repeats 次（机器上的其他负载对两边的影响因此相近），报告中位数。
BLAS 线程数两边相同（--threads，默认 1：批大小 1 的小矩阵乘法
多线程反而互相等待，见 bench_generate.py）。
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MESSAGES = [{"role": "user", "content": "新华社北京电"}]


def measure_direct(engine, n: int, seed: int) -> tuple[float, float, int]:
    ids = engine.encode_chat(MESSAGES)
    t0 = time.perf_counter()
    times = [time.perf_counter() for _ in engine.stream(ids, 0.8, 40, None, seed, n)]
    return times[0] - t0, len(times) / (times[-1] - t0), len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description="API 与直接生成的首词元延迟与生成速度")
    ap.add_argument("--threads", type=int, default=1, help="BLAS 与 torch 的线程数（两边相同，默认 1）")
    ap.add_argument("--ckpt", default=None, help="检查点（默认写一个随机权重的 tiny 预设模型）")
    ap.add_argument("--track", default="gpt_numpy", choices=("gpt_numpy", "gpt_torch"))
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # 子进程继承；须在导入 NumPy 之前
        os.environ[var] = str(args.threads)

    import openai
    from server_helpers import server_process

    from llmcore.cli import find_ckpt, load_tokenizer_for
    from llmcore.config import TrainConfig
    from llmcore.server import GPTEngine

    track = importlib.import_module(f"{args.track}.__main__").TRACK
    if args.ckpt is None:
        import tempfile

        from server_helpers import write_tiny_ckpt

        args.ckpt = str(write_tiny_ckpt(Path(tempfile.mkdtemp()) / "ckpt", context_length=128))
    ckpt = find_ckpt(args.ckpt, track)
    engine = GPTEngine(track.load_model(ckpt, TrainConfig(device="cpu")), load_tokenizer_for(ckpt), track.stream)
    print(f"检查点 {ckpt}，轨道 {args.track}，每次 {args.tokens} 个词元，重复 {args.repeats} 次（取中位数）")
    cpuinfo = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
             if ln.startswith("model name")] if cpuinfo.exists() else []
    cpu = names[0] if names else platform.processor() or platform.machine()
    print(f"机器：{cpu}，{os.cpu_count()} 核；Python {platform.python_version()}；BLAS 线程数 {args.threads}")

    rows: dict[str, list[tuple[float, float, int]]] = {"直接生成": [], "经由 API（流式）": []}
    with server_process(args.track, ckpt, "--device=cpu") as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        model = client.models.list().data[0].id
        measure_direct(engine, args.tokens, 0)  # 预热
        measure_api(client, model, args.tokens, 0)
        for s in range(1, args.repeats + 1):
            rows["直接生成"].append(measure_direct(engine, args.tokens, s))
            rows["经由 API（流式）"].append(measure_api(client, model, args.tokens, s))

    print("\n| 方式 | 首词元延迟 | 生成速度 | 词元数 |\n|---|---|---|---|")
    for name, rs in rows.items():
        first = statistics.median(r[0] for r in rs) * 1000
        tps = statistics.median(r[1] for r in rs)
        print(f"| {name} | {first:.1f} 毫秒 | {tps:,.0f} 词元/秒 | {rs[0][2]} |")
    d, a = rows["直接生成"], rows["经由 API（流式）"]
    ratio = statistics.median(r[1] for r in a) / statistics.median(r[1] for r in d)
    extra = (statistics.median(r[0] for r in a) - statistics.median(r[0] for r in d)) * 1000
    print(f"\nAPI 的生成速度是直接生成的 {ratio:.2f} 倍；首词元多花 {extra:.1f} 毫秒（HTTP、JSON、线程间传递）")


def measure_api(client, model: str, n: int, seed: int) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    times, count = [], 0
    stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=n, temperature=0.8, seed=seed,
                                            stream=True, extra_body={"top_k": 40},
                                            stream_options={"include_usage": True})
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content:
            times.append(time.perf_counter())
        if ch.usage:
            count = ch.usage.completion_tokens
    return times[0] - t0, count / (times[-1] - t0), count


if __name__ == "__main__":
    main()
