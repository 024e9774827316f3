#!/usr/bin/env bash
# GPU 检查：gpt2-small 的 bf16 + torch.compile 训练步与 fp32 对照，打印吞吐与 MFU（说明见 bench/gpu_check.py）。
# 用法：bash bench/gpu_check.sh [--batch 8 --seq 1024 --steps 20 --peak-tflops 989 ...]
# 没有 CUDA 时打印说明并以状态 2 退出。
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m bench.gpu_check "$@"
