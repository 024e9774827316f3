"""tt.optim：SGD、Adam、AdamW 与学习率调度（更新公式与 torch.optim 相同）。"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
