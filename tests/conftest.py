"""pytest 公共配置。"""

from __future__ import annotations

import os

import pytest

# 章节笔记本与较长的测试使用快速模式。
os.environ.setdefault("LLMZH_QUICK", "1")


@pytest.fixture(autouse=True)
def _tinytensor_global_state():
    """每个测试结束后，梯度开关与默认浮点类型必须回到初始状态（泄漏会污染后面的测试）。"""
    import tinytensor as tt

    yield
    if tt.tuning.is_enabled():  # 在进程内跑 gpt_numpy 命令行的测试会打开 CPU 调优（本来就该打开），结束后撤销
        tt.tuning.disable()
    leaked = []
    if not tt.is_grad_enabled():
        tt.set_grad_enabled(True)
        leaked.append("梯度记录被关闭")
    if tt.get_default_dtype() != tt.float32:
        tt.set_default_dtype(tt.float32)
        leaked.append("默认浮点类型被改")
    assert not leaked, "测试泄漏了全局状态：" + "、".join(leaked)
