"""给 README 拍聊天页面的截图：用一个检查点启动服务器（本进程的线程里），在 chromium 里问两个问题。

    python bench/serve_screenshot.py --ckpt=runs/gpt_numpy --out=docs/images/chat.png

需要 chromium（Debian：apt-get install chromium fonts-noto-cjk）与 playwright。
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default=str(ROOT / "docs/images/chat.png"))
    ap.add_argument("--track", default="gpt_numpy", choices=("gpt_numpy", "gpt_torch"))
    args = ap.parse_args()

    import importlib

    import uvicorn
    from playwright.sync_api import sync_playwright

    from llmcore.cli import find_ckpt, load_tokenizer_for
    from llmcore.config import TrainConfig
    from llmcore.server import GPTEngine, create_app

    track = importlib.import_module(f"{args.track}.__main__").TRACK
    ckpt = find_ckpt(args.ckpt, track)
    engine = GPTEngine(track.load_model(ckpt, TrainConfig()), load_tokenizer_for(ckpt), track.stream)
    engine.warmup()  # 与 serve 命令相同
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app({args.track: engine}), log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1100, "height": 640}, device_scale_factor=1)
        pg.goto(base)
        pg.wait_for_function("document.querySelectorAll('#model option').length > 0")
        pg.fill("#seed", "7")
        for q, n in (("新华社北京电", "60"), ("请继续写一段关于经济建设的新闻", "80")):
            pg.fill("#max_tokens", n)
            pg.fill("#input", q)
            pg.press("#input", "Enter")
            pg.wait_for_function("!document.querySelector('.msg.assistant[data-state=\"streaming\"]')", timeout=60000)
        pg.screenshot(path=args.out)
        browser.close()
    server.should_exit = True
    print(f"截图已保存：{args.out}")


if __name__ == "__main__":
    main()
