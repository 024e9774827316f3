"""Qwen3-0.6B 结构（随机权重）在 CPU 上的推理速度：transformers eager 与我们的 NumPy 轨道（fp32 / int8 / bf16）。

    python bench/bench_qwen3.py                      # 2 线程，批大小 1，预填充 512 个词元，再解码 32 个
    python bench/bench_qwen3.py --decode 64 --engines numpy-int8,hf-fp32
    python bench/bench_qwen3.py --model 目录          # 用已有的 HF 格式目录（例如真实的 Qwen3-0.6B）

第一次运行时在 --workdir（默认 /tmp/llmzh-bench-qwen3）写一个 Qwen3-0.6B 结构的随机权重检查点：
config.json 与 Qwen/Qwen3-0.6B 的相同字段，model.safetensors 为 bf16（与真实文件同样的布局与大小，约 1.2 GB）。
权重是随机的（N(0, 0.02²)，归一化层为 1），所以这里只测速度；生成质量见第 8 章。

每个引擎在独立的子进程里运行（峰值内存才互不影响，见 peak_rss_mb；torch 与 numba 的线程池也不互相干扰），
线程数由 OMP_NUM_THREADS / NUMBA_NUM_THREADS / torch.set_num_threads 统一设定。
同一次运行里测所有引擎，看比值；机器不同、时间不同的绝对数字不可比。不作为测试运行。
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QWEN3_06B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
    "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
    "intermediate_size": 3072, "rope_theta": 1000000, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
    "max_position_embeddings": 40960, "hidden_act": "silu", "attention_bias": False, "use_sliding_window": False,
    "rope_scaling": None, "torch_dtype": "bfloat16", "bos_token_id": 151643, "eos_token_id": 151645,
}
ENGINES = ("hf-fp32", "numpy-fp32", "numpy-int8", "numpy-bf16", "hf-bf16")


def write_random_checkpoint(directory: Path, seed: int = 0) -> Path:
    """写 config.json + bf16 的 model.safetensors（逐个张量生成并写入，不占用整份内存）。"""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from llmcore.qwen3.config import Qwen3Config
    from llmcore.qwen3.weights import expected_shapes, float32_to_bf16

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "model.safetensors"
    if target.is_file() and (directory / "config.json").is_file():
        return directory
    shapes = expected_shapes(Qwen3Config.from_hf_dict(QWEN3_06B))
    header, off = {}, 0
    for k, s in shapes.items():
        n = int(np.prod(s)) * 2
        header[k] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    rng = np.random.default_rng(seed)
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for k, s in shapes.items():
            if k.endswith("norm.weight"):
                w = np.ones(s, np.float32)
            else:
                w = np.empty(s, np.float32)
                for lo in range(0, s[0], 8192):
                    w[lo : lo + 8192] = rng.standard_normal((min(8192, s[0] - lo), *s[1:]), np.float32) * 0.02
            f.write(float32_to_bf16(w).tobytes())
    os.replace(tmp, target)
    (directory / "config.json").write_text(json.dumps(QWEN3_06B, indent=2))
    return directory


def cpu_name() -> str:
    """CPU 型号（Linux 读 /proc/cpuinfo 的 model name；读不到时用 platform 给的架构名）。"""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb(resource: Any) -> float:
    """本进程的峰值常驻内存（MB）。Linux 上读 /proc/self/status 的 VmHWM：它只算本进程自己的地址空间。
    不用 ru_maxrss：子进程 exec 时会继承父进程 fork 那一刻的常驻内存（父进程刚写完检查点时有近 2 GB），
    子进程自己用得少时报出的就是父进程的数。"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # 单位 kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux 上单位是 KB；macOS 上是字节


def run_engine(engine: str, model_dir: str, prompt_len: int, decode: int, threads: int) -> dict:
    """在本进程里测一个引擎（由子进程调用）。"""
    import resource

    import numpy as np

    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 151936, (1, prompt_len))
    if engine.startswith("hf"):
        import torch
        from transformers import Qwen3ForCausalLM
        from transformers.cache_utils import DynamicCache

        torch.set_num_threads(threads)
        dtype = torch.float32 if engine == "hf-fp32" else torch.bfloat16
        model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager").eval()
        load_s = time.perf_counter() - t0
        with torch.no_grad():
            cache = DynamicCache(config=model.config)
            t1 = time.perf_counter()
            out = model(torch.tensor(ids), past_key_values=cache, use_cache=True, logits_to_keep=1)
            prefill_s = time.perf_counter() - t1
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            t2 = time.perf_counter()
            for _ in range(decode):
                out = model(tok, past_key_values=out.past_key_values, use_cache=True)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
            decode_s = time.perf_counter() - t2
    else:
        sys.path.insert(0, str(ROOT))
        from gpt_numpy.qwen3 import Qwen3Model

        scheme = engine.split("-")[1]
        model = Qwen3Model.from_pretrained(model_dir, scheme=scheme)
        load_s = time.perf_counter() - t0
        cache = model.new_cache(1, prompt_len + decode + 1)
        model.infer(ids[:, :8], model.new_cache(1, 16))  # 预热：numba 内核编译 / 读磁盘缓存
        t1 = time.perf_counter()
        logits = model.infer(ids, cache)
        prefill_s = time.perf_counter() - t1
        tok = logits.argmax(-1)[:, None]
        t2 = time.perf_counter()
        for _ in range(decode):
            tok = model.infer(tok, cache).argmax(-1)[:, None]
        decode_s = time.perf_counter() - t2
    rss = peak_rss_mb(resource)
    return {"engine": engine, "load_s": load_s, "prefill_tok_s": prompt_len / prefill_s,
            "decode_tok_s": decode / decode_s, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES[:4]), help=f"逗号分隔，可选 {', '.join(ENGINES)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512, help="预填充的词元数（默认 512）")
    ap.add_argument("--decode", type=int, default=32, help="解码的词元数（默认 32）")
    ap.add_argument("--model", default=None, help="已有的 HF 格式目录（默认写随机权重检查点）")
    ap.add_argument("--workdir", default="/tmp/llmzh-bench-qwen3")
    ap.add_argument("--save", default=None, help="把结果（连同命令、机器、日期）写成 JSON 文件")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        res = run_engine(args._child, args.model, args.prompt, args.decode, args.threads)
        print("RESULT " + json.dumps(res))
        return
    model_dir = args.model or str(write_random_checkpoint(Path(args.workdir)))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    print(f"机器：{cpu_name()}，{os.cpu_count()} 核；线程 {args.threads}，批大小 1，"
          f"预填充 {args.prompt} 个词元，解码 {args.decode} 个；模型 {model_dir}")
    results = {}
    for eng in args.engines.split(","):
        if eng not in ENGINES:
            raise SystemExit(f"未知的引擎 {eng!r}，可选：{', '.join(ENGINES)}")
        cmd = [sys.executable, __file__, f"--_child={eng}", f"--model={model_dir}", f"--prompt={args.prompt}",
               f"--decode={args.decode}", f"--threads={args.threads}"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode or not line:
            print(f"{eng} 失败：\n{r.stderr[-2000:]}")
            continue
        res = json.loads(line[0][7:])
        results[eng] = res
        print(f"{eng:11s} 解码 {res['decode_tok_s']:6.2f} 词元/秒  预填充 {res['prefill_tok_s']:7.1f} 词元/秒  "
              f"峰值内存 {res['peak_rss_mb']:7.0f} MB  加载 {res['load_s']:5.1f} 秒", flush=True)
    base = results.get("hf-fp32")
    if base:
        print("\n相对 transformers fp32（同一次运行）：")
        for eng, res in results.items():
            print(f"  {eng:11s} 解码 ×{res['decode_tok_s'] / base['decode_tok_s']:.2f}  "
                  f"预填充 ×{res['prefill_tok_s'] / base['prefill_tok_s']:.2f}")
    print("JSON " + json.dumps(results))
    if args.save:
        argv, skip = [], False
        for a in sys.argv[1:]:  # 记录的命令里去掉 --save 与它的值
            if skip or a.startswith("--save"):
                skip = a == "--save" and not skip
                continue
            argv.append(a)
        record = {"command": " ".join(["python bench/bench_qwen3.py", *argv]),
                  "machine": f"{cpu_name()}，{os.cpu_count()} 核",
                  "date": time.strftime("%Y-%m-%d"), "threads": args.threads, "prompt": args.prompt,
                  "decode": args.decode, "results": results}
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
