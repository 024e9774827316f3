"""tinytensor 的融合热点算子：numba 内核 + 同名 NumPy 参考实现 + 后端开关。

本包只依赖 numpy、numba 与标准库（threads.py 另用 threadpoolctl 设置 BLAS 的线程数，没有它时不切分），
不导入 tinytensor 的其他部分，可单独测试。
所有函数的输入输出都是普通 NumPy 数组；每个公开函数在 *调用时* 按当前后端
（``TINYTENSOR_BACKEND`` 环境变量或 ``set_backend``）分派到 numba 内核或 NumPy 参考实现。
参考实现以 ``*_numpy`` 命名，与内核放在同一文件（一层一个文件）。

=========================  ============================================================
文件                        内容
=========================  ============================================================
``backend.py``              后端开关：get_backend / set_backend / use_numba / backend_scope；numba 按需加载
``layer_norm.py``           layer_norm_fwd / layer_norm_bwd
``rms_norm.py``             rms_norm_fwd：RMSNorm 前向（Qwen3 生成用）
``softmax.py``              softmax_fwd / _bwd、log_softmax_fwd / _bwd（沿最后一维）
``cross_entropy.py``        cross_entropy_fwd / _bwd / _fwd_bwd（softmax + 交叉熵融合）
``gelu.py``                 gelu_fwd / gelu_bwd（tanh 近似）
``embedding.py``            embedding_bwd（重复下标安全的散射相加）
``adamw.py``                adamw_step / adam_step（原地，与 torch.optim 逐步一致）
``attention.py``            attention_fwd / attention_bwd（因果分块的 BLAS 矩阵乘 + 融合的因果 softmax）
``decode_attention.py``     decode_attention：生成时一行查询对 KV 缓存的注意力（支持 GQA）
``threads.py``              线程：调优打开时 BLAS 单线程，矩阵乘 / 注意力 / 输出层由我们切给几个线程
``int8_matmul.py``          量化权重的矩阵乘：int8（按组缩放，激活也量化）与 bf16 权重，直接读紧凑权重
``_vmath.py``               可向量化的 exp/tanh 与按行归约（内核内部使用）
=========================  ============================================================
"""

from .adamw import adam_step, adam_step_numpy, adamw_step, adamw_step_numpy
from .attention import attention_bwd, attention_bwd_numpy, attention_fwd, attention_fwd_numpy
from .backend import (
    ALLOWED_BACKENDS,
    backend_scope,
    get_backend,
    numba_available,
    set_backend,
    use_numba,
)
from .cross_entropy import (
    cross_entropy_bwd,
    cross_entropy_bwd_numpy,
    cross_entropy_fwd,
    cross_entropy_fwd_bwd,
    cross_entropy_fwd_bwd_numpy,
    cross_entropy_fwd_numpy,
)
from .decode_attention import decode_attention, decode_attention_numpy, grouped_attention_numpy
from .embedding import embedding_bwd, embedding_bwd_numpy
from .gelu import gelu_bwd, gelu_bwd_numpy, gelu_fwd, gelu_fwd_numpy
from .layer_norm import layer_norm_bwd, layer_norm_bwd_numpy, layer_norm_fwd, layer_norm_fwd_numpy
from .rms_norm import rms_norm_fwd, rms_norm_numpy
from .softmax import (
    log_softmax_bwd,
    log_softmax_bwd_numpy,
    log_softmax_fwd,
    log_softmax_fwd_numpy,
    softmax_bwd,
    softmax_bwd_numpy,
    softmax_fwd,
    softmax_fwd_numpy,
)

__all__ = [
    "ALLOWED_BACKENDS",
    "adam_step",
    "adam_step_numpy",
    "adamw_step",
    "adamw_step_numpy",
    "attention_bwd",
    "attention_bwd_numpy",
    "attention_fwd",
    "attention_fwd_numpy",
    "backend_scope",
    "decode_attention",
    "decode_attention_numpy",
    "grouped_attention_numpy",
    "cross_entropy_bwd",
    "cross_entropy_bwd_numpy",
    "cross_entropy_fwd",
    "cross_entropy_fwd_bwd",
    "cross_entropy_fwd_bwd_numpy",
    "cross_entropy_fwd_numpy",
    "embedding_bwd",
    "embedding_bwd_numpy",
    "gelu_bwd",
    "gelu_bwd_numpy",
    "gelu_fwd",
    "gelu_fwd_numpy",
    "get_backend",
    "layer_norm_bwd",
    "layer_norm_bwd_numpy",
    "layer_norm_fwd",
    "layer_norm_fwd_numpy",
    "rms_norm_fwd",
    "rms_norm_numpy",
    "log_softmax_bwd",
    "log_softmax_bwd_numpy",
    "log_softmax_fwd",
    "log_softmax_fwd_numpy",
    "numba_available",
    "set_backend",
    "softmax_bwd",
    "softmax_bwd_numpy",
    "softmax_fwd",
    "softmax_fwd_numpy",
    "use_numba",
]
