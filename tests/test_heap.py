"""tinytensor.heap：只有 tuning.enable() 才让反复分配、释放的大数组不再每次缺页；disable() 撤销；导入不做任何事。"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHURN = """
import resource
import numpy as np
import tinytensor as tt
def churn():
    for _ in range(20):
        a = np.empty(8 << 20, dtype=np.float32)  # 32 MiB，默认会走 mmap
        a.fill(1.0)                             # 写满：新页在这里缺页
        del a
def faults():
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
"""


def _run(code: str, env_value: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYTENSOR_")}
    if env_value is not None:
        env["TINYTENSOR_KEEP_HEAP"] = env_value
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", CHURN + code], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="只在 Linux/glibc 上生效"
)
def test_only_enable_keeps_freed_memory_and_disable_undoes_it() -> None:
    r = _run("print(faults()); tt.tuning.enable(); print(faults()); tt.tuning.disable(); print(faults())")
    assert r.returncode == 0, r.stderr
    plain, tuned, undone = (int(v) for v in r.stdout.split())
    # 不调优时每次 32 MiB 都是新页（20 次 × 8192 页，透明大页时少得多但仍远多于调优时）
    assert tuned < 200, tuned
    assert plain > 5 * max(tuned, 20), (plain, tuned)
    assert undone > 5 * max(tuned, 20), (undone, tuned)
    off = _run("tt.tuning.enable(); print(faults())", "0")  # TINYTENSOR_KEEP_HEAP=0：跳过堆这一项
    assert off.returncode == 0, off.stderr
    assert int(off.stdout) > 5 * max(tuned, 20)


def test_bad_env_value_is_rejected_by_enable() -> None:
    r = _run("tt.tuning.enable()", "yes")
    assert r.returncode != 0
    assert "TINYTENSOR_KEEP_HEAP" in r.stderr and "'yes'" in r.stderr


def test_keep_freed_memory_is_idempotent_and_restorable() -> None:
    from tinytensor import heap

    assert not heap.is_applied()  # 导入 tinytensor 不会打开
    try:
        first = heap.keep_freed_memory()
        assert heap.keep_freed_memory() == first
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            assert first is True and heap.is_applied()
        elif not sys.platform.startswith("linux"):
            assert first is False
    finally:
        heap.restore_defaults()
    assert not heap.is_applied()
