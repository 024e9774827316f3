"""命令行入口：python -m gpt_torch <命令>。"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print("gpt_torch 的训练命令尚未实现（见训练相关 issue）。", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
