"""`python -m gpt_numpy serve` / `python -m gpt_torch serve`：载入检查点，用 uvicorn 启动服务器。

收到 SIGINT/SIGTERM 时：不再接受新连接（uvicorn 负责），正在进行的请求再给 --graceful-timeout 秒，
到时还没完成的生成在下一个词元处停下，流式请求收到一条 "服务器正在关闭" 的错误事件后正常结束，然后进程退出，
退出码 0。uvicorn 默认会在退出前把信号重新发给自己
（进程于是“死于信号”，SIGINT 还会打印 KeyboardInterrupt 的回溯）；服务器按信号正常关闭是预期的结局，这里不这样做。
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from .engine import Engine


def serve(engines: Mapping[str, Engine], host: str = "127.0.0.1", port: int = 8000, default_max_tokens: int = 256,
          max_queue: int = 64, graceful_timeout: float = 5.0, log_level: str = "info") -> None:
    """阻塞运行服务器，直到收到 SIGINT/SIGTERM。"""
    import uvicorn

    from .app import create_app

    app = create_app(engines, default_max_tokens, max_queue)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            timer = threading.Timer(graceful_timeout, app.state.server.shutdown)
            timer.daemon = True
            timer.start()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    # uvicorn 自己的期限留得比我们的长：到期时它会直接取消任务（日志里是一段回溯），我们先让生成停下
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=round(graceful_timeout) + 3)
    server = Server(config)
    server.run()
    if server._captured_signals:
        names = "、".join(signal.Signals(s).name for s in server._captured_signals)
        print(f"收到 {names}，服务器已停止", file=sys.stderr)


def build_parser(track_name: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=f"python -m {track_name} serve",
        description="启动 OpenAI 兼容的 HTTP 服务器（/v1/chat/completions）与聊天页面",
    )
    ap.add_argument("--ckpt", help=f"检查点目录或训练输出目录（默认 runs/{track_name}）")
    ap.add_argument("--host", default="127.0.0.1", help="监听地址（默认 127.0.0.1，只有本机能访问）")
    ap.add_argument("--port", type=int, default=8000, help="端口（默认 8000）")
    ap.add_argument("--model-name", default=None, help=f"API 里的模型名（默认 {track_name}）")
    ap.add_argument("--max-tokens", type=int, default=256, help="请求没给 max_tokens 时最多生成多少词元（默认 256）")
    ap.add_argument("--max-queue", type=int, default=64, help="每个模型最多排队的请求数，再多回 429（默认 64）")
    ap.add_argument("--graceful-timeout", type=float, default=5.0,
                    help="收到 SIGINT/SIGTERM 后等正在进行的请求多少秒（默认 5）")
    ap.add_argument("--device", default="auto", help="gpt_torch 用的设备：auto|cpu|cuda|mps（默认 auto）")
    return ap


def cmd_serve(argv: list[str], track: Any) -> int:
    """serve 子命令（track 是 llmcore.cli.Track）。"""
    from ..checkpoint import read_config
    from ..cli import check_vocab, find_ckpt, load_tokenizer_for
    from ..config import TrainConfig
    from ..errors import UsageError
    from .chat_template import template_for
    from .engine import GPTEngine

    args = build_parser(track.name).parse_args(argv)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        hint = 'pip install -e ".[serve]"'
        raise UsageError(f"serve 需要 starlette 与 uvicorn，{e.name} 没有安装；请运行 {hint}") from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port 应在 0–65535 之间，收到 {args.port}")
    if args.max_tokens < 1 or args.max_queue < 1:
        raise UsageError(f"--max-tokens 与 --max-queue 应 ≥ 1，收到 {args.max_tokens}、{args.max_queue}")
    ckpt = find_ckpt(args.ckpt, track)
    tokenizer = load_tokenizer_for(ckpt)
    model = track.load_model(ckpt, TrainConfig(device=args.device))
    check_vocab(tokenizer, model, ckpt)
    name = args.model_name or track.name
    engine = GPTEngine(model, tokenizer, track.stream, template=template_for(read_config(ckpt)))
    engine.warmup()
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    print(f"模型 {name}（{ckpt}，上下文 {engine.context_length}，对话模板 {engine.template.name}）", file=sys.stderr)
    print(f"聊天页面：http://{shown}:{args.port}/    API：http://{shown}:{args.port}/v1", file=sys.stderr, flush=True)
    serve({name: engine}, args.host, args.port, args.max_tokens, args.max_queue, args.graceful_timeout)
    return 0


__all__ = ["build_parser", "cmd_serve", "serve"]
