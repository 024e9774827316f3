"""分类的两个参照（不用神经网络）：多数类，与用 NumPy 写的字符 n-gram 逻辑回归。

字符 n-gram 逻辑回归：把每段文本表示成它含有哪些 1..n 字的片段（出现即为 1，再按行做 L2 归一化），
特征只取训练集里出现至少 min_count 次的片段；模型是 softmax(X W + b)，用 Adam 做全批量梯度下降，
L2 正则的强度在验证集上挑。X 是稀疏矩阵，用 CSR 的三个数组（indptr、indices、values）表示：
    打分   s[i] = Σ_j X[i, j] W[j]            → 按非零元素取 W 的行、乘值、按行求和（np.add.reduceat）
    梯度   ∂L/∂W[j] = Σ_i X[i, j] (p_i - y_i) → 对 Xᵀ（同样存成 CSR）做同样的按行求和
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def majority_class(train_labels: Sequence[int]) -> int:
    """训练集中最多的类（并列时取 id 小的）。"""
    counts = Counter(int(y) for y in train_labels)
    return min(counts, key=lambda k: (-counts[k], k))


def ngrams(text: str, n_max: int) -> set[str]:
    """文本里所有长度 1..n_max 的字符片段（去重）。"""
    return {text[i : i + n] for n in range(1, n_max + 1) for i in range(len(text) - n + 1)}


@dataclass
class CSR:
    """稀疏矩阵 (N, F) 的 CSR 表示；每行至少有一个非零元素时 reduceat 才正确，空行单独处理。"""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_features: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def matmul(self, w: np.ndarray) -> np.ndarray:
        """X @ W，W 形状 (F, K)。"""
        out = np.zeros((self.n_rows, w.shape[1]))
        if len(self.indices) == 0:
            return out
        contrib = w[self.indices] * self.values[:, None]  # (nnz, K)
        nonempty = np.diff(self.indptr) > 0
        out[nonempty] = np.add.reduceat(contrib, self.indptr[:-1][nonempty], axis=0)
        return out

    def transpose(self) -> CSR:
        """Xᵀ 的 CSR（按列号稳定排序非零元素）；梯度 Xᵀ G 用它再做一次 matmul，比 np.add.at 快得多。"""
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        order = np.argsort(self.indices, kind="stable")
        counts = np.bincount(self.indices, minlength=self.n_features)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return CSR(indptr, rows[order], self.values[order], self.n_rows)


class NgramLogReg:
    """字符 n-gram 特征上的多类逻辑回归（softmax），全部用 NumPy 写成。"""

    def __init__(self, n_max: int = 3, min_count: int = 2, max_features: int = 200_000) -> None:
        self.n_max, self.min_count, self.max_features = n_max, min_count, max_features
        self.vocab: dict[str, int] = {}
        self.W = np.zeros((0, 0))
        self.b = np.zeros(0)

    def build_vocab(self, texts: Sequence[str]) -> None:
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(ngrams(t, self.n_max))
        common = [g for g, c in counts.most_common(self.max_features) if c >= self.min_count]
        self.vocab = {g: i for i, g in enumerate(sorted(common))}

    def transform(self, texts: Sequence[str]) -> CSR:
        indptr, indices, values = [0], [], []
        for t in texts:
            cols = sorted(self.vocab[g] for g in ngrams(t, self.n_max) if g in self.vocab)
            indices.extend(cols)
            if cols:
                values.extend([1.0 / np.sqrt(len(cols))] * len(cols))  # 每行 L2 归一化
            indptr.append(len(indices))
        return CSR(np.asarray(indptr), np.asarray(indices, dtype=np.int64), np.asarray(values), len(self.vocab))

    def fit(self, x: CSR, y: np.ndarray, num_classes: int, l2: float = 1e-4, steps: int = 150,
            lr: float = 0.1) -> list[float]:
        """Adam 全批量梯度下降；返回每步的训练损失（含正则项）。"""
        n, k = x.n_rows, num_classes
        self.W, self.b = np.zeros((x.n_features, k)), np.zeros(k)
        onehot = np.eye(k)[y]
        m = [np.zeros_like(self.W), np.zeros_like(self.b)]
        v = [np.zeros_like(self.W), np.zeros_like(self.b)]
        history = []
        xt = x.transpose()
        for t in range(1, steps + 1):
            logits = x.matmul(self.W) + self.b
            z = logits - logits.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            loss = -np.mean(np.log(p[np.arange(n), y] + 1e-300)) + 0.5 * l2 * float((self.W**2).sum())
            history.append(loss)
            g = (p - onehot) / n  # ∂(平均交叉熵)/∂logits
            grads = [xt.matmul(g) + l2 * self.W, g.sum(0)]
            for i, (param, grad) in enumerate(zip((self.W, self.b), grads)):
                m[i] = 0.9 * m[i] + 0.1 * grad
                v[i] = 0.999 * v[i] + 0.001 * grad**2
                param -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
        return history

    def predict(self, x: CSR) -> np.ndarray:
        return (x.matmul(self.W) + self.b).argmax(1)


def fit_ngram_baseline(train: Sequence[tuple[str, int]], val: Sequence[tuple[str, int]], num_classes: int = 2,
                       l2_grid: Sequence[float] = (1e-5, 1e-4, 1e-3), n_max: int = 3, steps: int = 150
                       ) -> tuple[NgramLogReg, dict[str, float]]:
    """在训练集上拟合、按验证集准确率挑 L2 强度；返回 (模型, {"l2", "val_acc", "n_features"})。"""
    best: tuple[float, float, NgramLogReg] | None = None
    model = NgramLogReg(n_max=n_max)
    model.build_vocab([t for t, _ in train])
    xtr, ytr = model.transform([t for t, _ in train]), np.asarray([y for _, y in train])
    xva, yva = model.transform([t for t, _ in val]), np.asarray([y for _, y in val])
    for l2 in l2_grid:
        m = NgramLogReg(n_max=n_max)
        m.vocab = model.vocab
        m.fit(xtr, ytr, num_classes, l2=l2, steps=steps)
        acc = float((m.predict(xva) == yva).mean())
        if best is None or acc > best[0]:
            best = (acc, l2, m)
    assert best is not None
    return best[2], {"l2": best[1], "val_acc": best[0], "n_features": len(model.vocab)}


__all__ = ["CSR", "NgramLogReg", "fit_ngram_baseline", "majority_class", "ngrams"]
