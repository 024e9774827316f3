"""GPU 检查（不是 CI 测试）：在 CUDA 机器上用 gpt_torch 的训练后端跑 gpt2-small 的训练步。

    bash bench/gpu_check.sh                       # 默认 batch 8 × 1024，bf16 autocast + torch.compile
    python -m bench.gpu_check --batch 8 --seq 1024 --steps 20 --peak-tflops 989

做三件事：
1. 正确性：同一份初始权重、同一个批次，分别做一步 fp32（关闭 TF32）与一步 bf16 autocast + compile 的训练
   （前向、反向、梯度裁剪、fused AdamW），比较步前损失、梯度范数与步后损失，超出容差则以状态 1 退出；
2. 速度：计时若干个 bf16 + compile 训练步（先预热，编译不计时），打印 词元/秒；
3. MFU = 每词元 FLOPs × 词元/秒 ÷ 峰值算力。每词元 FLOPs = 6·N_mm + 12·L·T·C，N_mm = 12·L·C² + C·V
   （前向 + 反向的矩阵乘，含注意力的 QK^T 与 AV）。峰值取 bf16 稠密（不含 2:4 稀疏）：
   H100 SXM / H200 为 989 TFLOPS，H100 PCIe 为 756，A100 为 312；其余型号请用 --peak-tflops 指定。

没有 CUDA 的机器上给出说明并以状态 2 退出（检查没有执行）。
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np

# bf16 稠密峰值（TFLOPS），按设备名里的关键字匹配，先匹配先得
PEAK_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H100", "PCIE"), 756.0),
    (("H200",), 989.0),
    (("GH200",), 989.0),
    (("H100",), 989.0),  # SXM
    (("A100",), 312.0),
]


def peak_for(device_name: str) -> float | None:
    """按设备名给出 bf16 稠密峰值 (TFLOPS)；不认识的型号返回 None。"""
    name = device_name.upper()
    for keys, tflops in PEAK_BF16_TFLOPS:
        if all(k in name for k in keys):
            return tflops
    return None


def flops_per_token(n_layers: int, emb_dim: int, vocab_size: int, seq_len: int) -> float:
    """训练一步每个词元的 FLOPs：6·N_mm + 12·L·T·C，N_mm = 12·L·C² + C·V。"""
    n_mm = 12 * n_layers * emb_dim**2 + emb_dim * vocab_size
    return 6.0 * n_mm + 12.0 * n_layers * seq_len * emb_dim


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description="GPU 检查：bf16+compile 与 fp32 对照、吞吐与 MFU"
    )
    ap.add_argument("--batch", type=int, default=8, help="每步序列数 B（默认 8）")
    ap.add_argument("--seq", type=int, default=1024, help="序列长度 T（默认 1024）")
    ap.add_argument("--steps", type=int, default=20, help="计时的训练步数（默认 20）")
    ap.add_argument("--warmup", type=int, default=3, help="不计时的预热步数（含编译，默认 3）")
    ap.add_argument("--preset", default="gpt2-small", help="模型预设（默认 gpt2-small）")
    ap.add_argument("--no-compile", action="store_true", help="不用 torch.compile（对照用）")
    ap.add_argument("--peak-tflops", type=float, default=None, help="算 MFU 用的 bf16 峰值 (TFLOPS)，默认按型号猜")
    ap.add_argument("--rtol", type=float, default=2e-2, help="bf16 与 fp32 的损失、梯度范数的相对容差（默认 0.02）")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu 只用来在没有 GPU 的机器上用小模型走通脚本逻辑（如 --preset=tiny --seq 64）")
    return ap.parse_args(argv)


def make_backend(cfg: Any, args: argparse.Namespace, amp: str, compile_: bool) -> Any:
    from gpt_torch.train import TorchBackend
    from llmcore.config import TrainConfig

    tcfg = TrainConfig(
        device=args.device, amp=amp, compile=compile_, batch_size=args.batch, seed=args.seed, lr=6e-4,
        weight_decay=0.1, out_dir="/tmp/llmzh-gpu-check",
    )
    return TorchBackend(cfg, tcfg)


def train_step(be: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """一步完整的训练：前向 + 反向 + 裁剪 + AdamW；返回 (步前损失, 裁剪前梯度范数)。"""
    be.zero_grad()
    loss = be.forward_backward(x, y, 1.0, sync=True)
    gnorm = be.clip_grad_norm(1.0)
    be.optimizer_step(6e-4)
    return loss, gnorm


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_check：没有安装 PyTorch（pip install -e '.[torch]'），无法运行 GPU 检查", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check：本机没有可用的 CUDA GPU（torch.cuda.is_available() 为 False，"
            f"torch {torch.__version__}，CUDA 版本 {torch.version.cuda}），检查没有执行；请在 NVIDIA GPU 机器上运行。",
            file=sys.stderr,
        )
        return 2
    from llmcore.config import GPTConfig

    cfg = GPTConfig.preset(args.preset, context_length=args.seq, drop_rate=0.0)
    cuda = args.device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    peak = args.peak_tflops or peak_for(name)
    print(f"设备 {name}；torch {torch.__version__}；模型 {args.preset}（L {cfg.n_layers}，C {cfg.emb_dim}，"
          f"V {cfg.vocab_size}），批次 {args.batch} × {args.seq}")
    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(args.batch, args.seq + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]

    # 1) fp32 参照（关闭 TF32，得到真正的 fp32 矩阵乘）
    ref = make_backend(cfg, args, amp="fp32", compile_=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    loss32, gnorm32 = train_step(ref, x, y)
    after32 = ref.eval_loss([(x, y)])
    del ref
    if cuda:
        torch.cuda.empty_cache()

    # 2) bf16 autocast + compile（训练时的设置；TorchBackend 会重新打开 TF32）
    be = make_backend(cfg, args, amp="bf16", compile_=not args.no_compile)
    t0 = time.perf_counter()
    loss16, gnorm16 = train_step(be, x, y)
    sync()
    first = time.perf_counter() - t0
    after16 = be.eval_loss([(x, y)])
    print(f"第一步（含编译）{first:.1f} 秒")

    ok = True
    for what, a, b in (("步前损失", loss32, loss16), ("梯度范数", gnorm32, gnorm16), ("步后损失", after32, after16)):
        rel = abs(a - b) / max(abs(a), 1e-12)
        good = math.isfinite(b) and rel <= args.rtol
        ok &= good
        print(f"{what}：fp32 {a:.5f}，bf16 {b:.5f}，相对差 {rel:.2e}（容差 {args.rtol:g}）{'通过' if good else '失败'}")
    if not after16 < loss16:
        print("失败：一步更新后同一批次上的损失没有下降", file=sys.stderr)
        ok = False

    # 3) 计时
    for _ in range(max(0, args.warmup - 1)):
        train_step(be, x, y)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        train_step(be, x, y)
    sync()
    dt = time.perf_counter() - t0
    tok_s = args.batch * args.seq * args.steps / dt
    fpt = flops_per_token(cfg.n_layers, cfg.emb_dim, cfg.vocab_size, args.seq)
    achieved = fpt * tok_s / 1e12
    mem = f"，显存峰值 {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
    print(f"吞吐 {tok_s:,.0f} 词元/秒（每步 {dt / args.steps * 1000:.1f} 毫秒）{mem}")
    print(f"每词元 {fpt / 1e9:.3f} GFLOP，实际 {achieved:.3g} TFLOPS")
    if peak:
        src = "--peak-tflops" if args.peak_tflops else f"按型号 {name}"
        print(f"MFU {achieved / peak:.1%}（峰值 {peak:g} TFLOPS bf16 稠密，{src}）")
    else:
        print(f"不认识型号 {name!r} 的峰值：用 --peak-tflops 指定后即可算 MFU")
    print("结论：" + ("通过" if ok else "失败"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
