"""pytest 公共配置。"""

from __future__ import annotations

import os

# 章节笔记本与较长的测试使用快速模式。
os.environ.setdefault("LLMZH_QUICK", "1")
