"""章节测试共用的小工具：取出章节源文件里标着 `# 章内实现` 的单元执行，以及在 float64 下比较两个模块。"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tinytensor as tt

ROOT = Path(__file__).resolve().parent.parent
MARK = "# 章内实现"


def inline_cells(chapter: str) -> list[str]:
    """chapters/src/<chapter>.py 中所有以 `# 章内实现` 开头的代码单元的源码。"""
    sys.path.insert(0, str(ROOT / "chapters"))
    try:
        from build import parse_source
    finally:
        sys.path.pop(0)
    cells = parse_source((ROOT / "chapters" / "src" / f"{chapter}.py").read_text(encoding="utf-8"))
    return [body for kind, body in cells if kind == "code" and body.lstrip().startswith(MARK)]


def inline_namespace(chapter: str, min_cells: int = 5) -> dict[str, Any]:
    """执行 chapters/src/<chapter>.py 中所有以 `# 章内实现` 开头的代码单元，返回它们定义的名字。"""
    ns: dict[str, Any] = {"__name__": f"inline_{chapter}"}
    cells = inline_cells(chapter)
    for n, body in enumerate(cells):
        exec(compile(body, f"<{chapter} 章内实现 #{n}>", "exec"), ns)
    assert len(cells) >= min_cells, f"{chapter} 里只找到 {len(cells)} 个“章内实现”单元"
    return ns


def fwd_bwd(module: Any, xb: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """前向 + 以 g 为上游梯度反向；xb 为整数数组（词元 id）时没有输入梯度。"""
    lib = torch if isinstance(module, torch.nn.Module) else tt
    is_ids = np.issubdtype(xb.dtype, np.integer)
    x = lib.tensor(xb) if is_ids else lib.tensor(xb, requires_grad=True)
    y = module(x)
    (y * lib.tensor(g)).sum().backward()
    params = module.named_parameters() if hasattr(module, "named_parameters") else []
    grads = {n: p.grad.detach().numpy() for n, p in params}
    return y.detach().numpy(), None if is_ids else x.grad.detach().numpy(), grads


def assert_modules_equal(ours: Any, lib: Any, seed: int = 0, xb: np.ndarray | None = None) -> None:
    """把 ours 的权重复制给 lib（float64、eval），比较输出、输入梯度和每个参数的梯度。

    xb 缺省为 (2, 5, 6) 的随机 float64 输入。"""
    ours, lib = copy.deepcopy(ours).double().eval(), lib.double().eval()
    state = {k: np.array(v.detach().numpy(), dtype=np.float64) for k, v in ours.state_dict().items()}
    if isinstance(lib, torch.nn.Module):
        lib.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    else:
        lib.load_state_dict(state)
    rng = np.random.default_rng(seed)
    if xb is None:
        xb = rng.standard_normal((2, 5, 6))
    y_shape = fwd_bwd(copy.deepcopy(ours), xb, np.zeros(1))[0].shape
    g = rng.standard_normal(y_shape)
    y1, gx1, gp1 = fwd_bwd(ours, xb, g)
    y2, gx2, gp2 = fwd_bwd(lib, xb, g)
    assert sorted(gp1) == sorted(gp2)
    np.testing.assert_allclose(y1, y2, rtol=1e-10, atol=1e-12)
    if gx1 is not None:
        np.testing.assert_allclose(gx1, gx2, rtol=1e-10, atol=1e-12)
    for n in gp1:
        np.testing.assert_allclose(gp1[n], gp2[n], rtol=1e-10, atol=1e-12, err_msg=n)
