"""tinytensor.heap：导入后反复分配、释放大数组不再每次缺页；TINYTENSOR_KEEP_HEAP 可关闭，非法取值报错。"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import resource
import numpy as np
import tinytensor
def churn():
    for _ in range(20):
        a = np.empty(8 << 20, dtype=np.float32)  # 32 MiB，默认会走 mmap
        a.fill(1.0)                             # 写满：新页在这里缺页
        del a
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(env_value: str | None, code: str = SCRIPT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TINYTENSOR_KEEP_HEAP"}
    if env_value is not None:
        env["TINYTENSOR_KEEP_HEAP"] = env_value
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="只在 Linux/glibc 上生效")
def test_freed_arrays_are_reused_without_page_faults() -> None:
    on, off = _run(None), _run("0")
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    faults_on, faults_off = int(on.stdout), int(off.stdout)
    # 关闭时每次 32 MiB 都是新页（20 次 × 8192 页，透明大页时少得多但仍远多于开启时）
    assert faults_on < 200, faults_on
    assert faults_off > 5 * max(faults_on, 20), (faults_on, faults_off)


def test_bad_env_value_is_rejected_at_import() -> None:
    r = _run("yes", "import tinytensor")
    assert r.returncode != 0
    assert "TINYTENSOR_KEEP_HEAP" in r.stderr and "'yes'" in r.stderr


def test_keep_freed_memory_is_idempotent() -> None:
    from tinytensor import heap

    first = heap.keep_freed_memory()
    assert heap.keep_freed_memory() == first
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first is True
    elif not sys.platform.startswith("linux"):
        assert first is False
