"""tinytensor：一个用 NumPy 写成、API 与 PyTorch 同名的自动求导引擎。

    import tinytensor as tt
    x = tt.randn(3, 4, requires_grad=True)
    loss = (x @ x.T).relu().mean()
    loss.backward()
    x.grad            # dloss/dx

结构：tensor.py（张量）→ autograd.py（计算图与反向传播）→ ops/（每个算子的前向与反向）
→ kernels/（融合算子的 numba 内核及其 NumPy 参考）→ nn/、optim/（层与优化器）。

导入本包不改变进程里的任何东西（不导入 numba、不动 glibc 与 BLAS 的设置、不删文件）。
CPU 上的速度调优是一次显式调用：``tt.tuning.enable()``（撤销：``tt.tuning.disable()``），见 tuning.py。
"""

from . import autograd, kernels, nn, optim, tuning, viz
from . import creation as _creation
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .creation import *  # noqa: F403  张量工厂函数与 tt.exp、tt.cat 等模块级函数
from .dtypes import (
    bool_,
    double,
    float16,
    float32,
    float64,
    get_default_dtype,
    int32,
    int64,
    long,
    set_default_dtype,
    uint8,
)
from .gradcheck import gradcheck
from .random import get_rng_state, manual_seed, seed, set_rng_state
from .sampling import multinomial
from .tensor import Tensor

__version__ = "0.1.0"

__all__ = [
    "Tensor", "autograd", "bool_", "double", "enable_grad", "float16", "float32", "float64", "get_default_dtype",
    "get_rng_state", "gradcheck", "int32", "int64", "is_grad_enabled", "kernels", "long", "manual_seed",
    "multinomial", "nn", "no_grad", "optim", "seed", "set_default_dtype", "set_grad_enabled", "set_rng_state",
    "tuning", "uint8", "viz", *_creation.__all__,
]
