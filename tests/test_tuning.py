"""``import tinytensor`` 不改变进程里的任何东西；CPU 调优只由 ``tt.tuning.enable()`` 打开、``disable()`` 撤销。

每项都在子进程里检查（进程级设置不能在 pytest 进程里试）：BLAS 线程数（threadpoolctl）、glibc 的堆阈值
（是否调用 mallopt）、numba 的线程层、包目录里的文件；NumPy 后端从不导入 numba；内核缓存按源码哈希作键。
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_py(code: str, env_extra: dict[str, str] | None = None, root: Path = ROOT) -> dict:
    """在子进程里运行 code（它最后一行打印一个 JSON），返回解析后的字典。"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINYTENSOR_", "NUMBA_THREADING_LAYER"))}
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(root) + os.pathsep + str(ROOT)
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=root, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# 先记下导入 tinytensor 之前的状态；mallopt 的调用经 ctypes 截获
PRELUDE = """
import ctypes, json, os, sys
calls = []
_CDLL = ctypes.CDLL
class SpyCDLL(_CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            calls.append(name)
        return super().__getattr__(name)
ctypes.CDLL = SpyCDLL
import numpy as np
import numba
from threadpoolctl import threadpool_info
def blas():  # numpy 已加载的 BLAS -> 线程数（之后别的包可能再加载自己的 BLAS，只比较这些）
    return {d["filepath"]: d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}
blas0, layer0 = blas(), numba.config.THREADING_LAYER
def blas_same():
    now = blas()
    return all(now[p] == n for p, n in blas0.items())
"""

MLP_AND_ATTENTION = """
import tinytensor as tt
from tinytensor.nn import functional as F
tt.manual_seed(0)
a = np.random.rand(512, 512).astype(np.float32)
_ = tt.tensor(a) @ tt.tensor(a)                     # 大矩阵乘：旧版在这里把 BLAS 设成单线程
x = tt.randn(2, 16, 32)
lin = tt.nn.Linear(32, 64)
h = F.gelu(lin(x))
q = k = v = h.reshape(2, 16, 4, 16).transpose(1, 2)
y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
loss = F.cross_entropy(F.layer_norm(y.transpose(1, 2).reshape(2, 16, 64), (64,)).reshape(32, 64),
                       np.arange(32) % 64)
loss.backward()
assert lin.weight.grad is not None
"""


def test_import_and_training_step_change_nothing_process_wide() -> None:
    code = PRELUDE + MLP_AND_ATTENTION + """
print(json.dumps({"blas_same": blas_same(), "blas": blas(), "mallopt_calls": len(calls),
                  "layer_same": numba.config.THREADING_LAYER == layer0,
                  "env": sorted(k for k in os.environ if k.startswith(("NUMBA_", "OMP_", "OPENBLAS_")))}))
"""
    out = run_py(code)
    assert out["blas_same"], out["blas"]
    assert out["mallopt_calls"] == 0
    assert out["layer_same"]
    assert out["env"] == sorted(k for k in os.environ if k.startswith(("NUMBA_", "OMP_", "OPENBLAS_")))


def test_enable_then_disable_restores_blas_threads_and_threading_layer() -> None:
    code = PRELUDE + """
import tinytensor as tt
from tinytensor.kernels import threads
assert not tt.tuning.is_enabled() and not threads.splitting()
done = tt.tuning.enable()
on = [blas()[p] for p in blas0]
split_on = threads.splitting()
layer_on = numba.config.THREADING_LAYER
tt.tuning.disable()
print(json.dumps({"done": done, "on": on, "off_same": blas_same(), "blas0": blas0, "split_on": split_on,
                  "split_off": threads.splitting(), "layer_on": layer_on,
                  "layer_off_same": numba.config.THREADING_LAYER == layer0, "enabled": tt.tuning.is_enabled()}))
"""
    out = run_py(code)
    if not out["done"]["blas"]:
        pytest.skip("threadpoolctl 找不到可设置的 BLAS")
    assert out["on"] == [1] * len(out["on"]) and out["split_on"]
    assert out["off_same"] and not out["split_off"] and not out["enabled"]
    assert out["done"]["threading_layer"] and out["layer_on"] == "workqueue" and out["layer_off_same"]


def test_tuning_env_opt_out() -> None:
    code = PRELUDE + """
import tinytensor as tt
done = tt.tuning.enable()
print(json.dumps({"done": done, "blas_same": blas_same(), "mallopt_calls": len(calls)}))
"""
    out = run_py(code, {"TINYTENSOR_TUNING": "0"})
    assert out == {"done": {"heap": False, "blas": False, "threading_layer": False}, "blas_same": True,
                   "mallopt_calls": 0}


def test_numpy_backend_never_imports_numba_and_runs_plain_numpy() -> None:
    """TINYTENSOR_BACKEND=numpy：MLP 与注意力的前向、反向都不导入 numba；开了调优也不切分矩阵乘。"""
    code = """
import json, sys
import numpy as np
import tinytensor as tt
from tinytensor.kernels import threads
tt.tuning.enable()
calls = []
orig = threads.run_parts
threads.run_parts = lambda fn, n, nt: (calls.append(nt), orig(fn, n, nt))[1]
""" + MLP_AND_ATTENTION.replace("import tinytensor as tt\n", "") + """
print(json.dumps({"numba": "numba" in sys.modules, "splitting": threads.splitting(),
                  "backend": tt.kernels.get_backend()}))
"""
    out = run_py(code, {"TINYTENSOR_BACKEND": "numpy"})
    assert out == {"numba": False, "splitting": False, "backend": "numpy"}


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "tinytensor", tmp_path / "tinytensor", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_import_deletes_no_files(tmp_path: Path) -> None:
    """新拷贝的包（没有任何缓存记录）里放几个 numba 缓存文件：导入并运行内核后它们都还在。"""
    root = _copy_package(tmp_path)
    cache = root / "tinytensor" / "kernels" / "__pycache__"
    cache.mkdir()
    planted = [cache / "gelu._gelu_fwd_range-1.py311.nbi", cache / "gelu._gelu_fwd_range-1.py311.1.nbc"]
    for f in planted:
        f.write_bytes(b"old")
    before = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    code = """
import json, numpy as np
import tinytensor as tt
from tinytensor.kernels import _vmath
print(json.dumps({"sum": _vmath.row_sum(np.ones(3))}))
"""
    assert run_py(code, root=root) == {"sum": 3.0}
    after = {p.relative_to(root) for p in root.rglob("*") if p.is_file()}
    assert set(before) <= after
    assert all(f.read_bytes() == b"old" for f in planted)


def test_kernel_cache_is_keyed_by_all_kernel_sources(tmp_path: Path) -> None:
    """改了另一个内核文件（不是函数自己所在的文件），缓存也不再命中（numba 自己只看函数所在文件）。"""
    root = _copy_package(tmp_path)
    code = """
import json, numpy as np
from tinytensor.kernels import _vmath
_vmath.row_sum(np.ones(3))
st = _vmath.row_sum.stats
print(json.dumps({"hits": sum(st.cache_hits.values()), "misses": sum(st.cache_misses.values())}))
"""
    assert run_py(code, root=root) == {"hits": 0, "misses": 1}  # 第一次：编译并写缓存
    assert run_py(code, root=root) == {"hits": 1, "misses": 0}  # 源码未变：命中
    gelu = root / "tinytensor" / "kernels" / "gelu.py"
    gelu.write_text(gelu.read_text() + "\n# 改动\n")
    assert run_py(code, root=root) == {"hits": 0, "misses": 1}  # 别的文件变了：旧缓存不再使用
    assert run_py(code, root=root) == {"hits": 1, "misses": 0}


def test_source_digest_covers_every_file(tmp_path: Path) -> None:
    from tinytensor.kernels.backend import source_digest

    (tmp_path / "a.py").write_text("x = 1\n")
    d0 = source_digest(tmp_path)
    assert source_digest(tmp_path) == d0
    (tmp_path / "b.py").write_text("y = 2\n")
    d1 = source_digest(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    assert len({d0, d1, source_digest(tmp_path)}) == 3
