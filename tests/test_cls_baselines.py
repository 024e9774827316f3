"""分类的参照：多数类、CSR 稀疏乘法与稠密结果一致、n-gram 逻辑回归能学会简单规律、梯度与有限差分一致。"""

from __future__ import annotations

import numpy as np

from llmcore.finetune import baselines as bl


def test_majority_class():
    assert bl.majority_class([0, 1, 1, 0, 1]) == 1
    assert bl.majority_class([0, 1]) == 0


def test_csr_matches_dense():
    m = bl.NgramLogReg(n_max=2, min_count=1)
    texts = ["好吃", "不好吃", "", "很好很好"]
    m.build_vocab(texts)
    x = m.transform(texts)
    dense = np.zeros((x.n_rows, x.n_features))
    for i in range(x.n_rows):
        dense[i, x.indices[x.indptr[i] : x.indptr[i + 1]]] = x.values[x.indptr[i] : x.indptr[i + 1]]
    assert np.allclose(np.linalg.norm(dense[[0, 1, 3]], axis=1), 1.0) and not dense[2].any()
    w = np.random.default_rng(0).normal(size=(x.n_features, 3))
    g = np.random.default_rng(1).normal(size=(x.n_rows, 3))
    np.testing.assert_allclose(x.matmul(w), dense @ w)
    np.testing.assert_allclose(x.transpose().matmul(g), dense.T @ g)


def test_logreg_learns_and_gradient_is_right():
    rng = np.random.default_rng(0)
    pos, neg = ["好", "棒", "赞"], ["差", "烂", "糟"]
    fill = list("的了是我这个酒店房间服务")
    def make(words, n):
        return ["".join(rng.choice(fill, 5)) + rng.choice(words) + "".join(rng.choice(fill, 3)) for _ in range(n)]
    train = [(t, 1) for t in make(pos, 60)] + [(t, 0) for t in make(neg, 60)]
    test = [(t, 1) for t in make(pos, 30)] + [(t, 0) for t in make(neg, 30)]
    model, info = bl.fit_ngram_baseline(train, test, steps=100)
    pred = model.predict(model.transform([t for t, _ in test]))
    assert (pred == np.array([y for _, y in test])).mean() >= 0.95
    # 一步的解析梯度与有限差分（通过 fit 的第一步损失）
    m = bl.NgramLogReg(n_max=1, min_count=1)
    m.build_vocab([t for t, _ in train[:10]])
    x = m.transform([t for t, _ in train[:10]])
    y = np.array([y for _, y in train[:10]])
    w = rng.normal(size=(x.n_features, 2))

    def loss(w):
        z = x.matmul(w)
        z = z - z.max(1, keepdims=True)
        return -np.mean(z[np.arange(10), y] - np.log(np.exp(z).sum(1)))

    z = x.matmul(w)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = x.transpose().matmul((p - np.eye(2)[y]) / 10)
    e = np.zeros_like(w)
    e[3, 1] = 1e-6
    assert abs((loss(w + e) - loss(w - e)) / 2e-6 - grad[3, 1]) < 1e-7
