"""tinytensor.viz：文本树、梯度范数与 graphviz 输出。"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import tinytensor as tt
from tinytensor import viz


def _small_graph() -> tuple[tt.Tensor, dict[str, tt.Tensor]]:
    a = tt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = tt.tensor([0.5, -1.0], requires_grad=True)
    return (a * b).sum(), {"a": a, "b": b}


def test_text_tree_of_known_graph() -> None:
    y, names = _small_graph()
    want = "\n".join(
        [
            "Sum  ()  float32",
            "└─ Mul  (2, 2)  float32",
            "   ├─ a (参数)  (2, 2)  float32",
            "   └─ b (参数)  (2,)  float32",
        ]
    )
    assert viz.graph_text(y, names=names) == want


def test_unnamed_leaves_and_constants() -> None:
    x = tt.ones(3)  # 不需要梯度：常量
    w = tt.ones(3, requires_grad=True)  # 需要梯度但没有名字：叶子
    text = viz.graph_text((x * w).sum())
    assert "├─ 常量  (3,)  float32" in text
    assert "└─ 叶子  (3,)  float32" in text


def test_shared_nodes_shown_once_then_referenced() -> None:
    a = tt.ones(3, requires_grad=True)
    b = a + a
    c = (b + b).sum()
    text = viz.graph_text(c, names={"a": a})
    lines = text.splitlines()
    assert len(lines) == 6
    assert lines[2].endswith("[#1]") and lines[2].strip("│├└─ ").startswith("Add")
    assert lines[3].endswith("[#2]") and "a (参数)" in lines[3]
    assert lines[4].endswith("→ #2 a (参数)")
    assert lines[5].endswith("→ #1 Add")
    assert text.count("a (参数)  (3,)") == 1  # 共享的叶子只完整出现一次


def test_trace_grads_norms_match_diamond() -> None:
    a = tt.ones(3, requires_grad=True)
    b = a + a
    c = b + b
    loss = c.sum()
    with viz.trace_grads(loss, names={"a": a}) as tr:
        loss.backward()
    norms = {label: n for label, _, n in tr.grad_norms()}
    s3 = np.sqrt(3.0)
    assert norms["Sum"] == pytest.approx(1.0)
    assert norms["a (参数)"] == pytest.approx(4 * s3)  # dc/da = 4
    got = sorted(n for label, _, n in tr.grad_norms() if label == "Add")
    assert got == pytest.approx([s3, 2 * s3])
    text = tr.text()
    assert f"‖grad‖={4 * s3:.4g}" in text and f"‖grad‖={2 * s3:.4g}" in text
    # 退出上下文后撤销 retain_grad 标记，但已得到的梯度保留
    assert not b._retains_grad and not c._retains_grad
    assert b.grad is not None and np.allclose(b.grad.data, 2.0)


def test_trace_grads_norms_match_manual_mlp() -> None:
    rng = np.random.default_rng(0)
    xn, wn, bn = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    x = tt.tensor(xn, dtype=tt.float64)
    w = tt.tensor(wn, dtype=tt.float64, requires_grad=True)
    b = tt.tensor(bn, dtype=tt.float64, requires_grad=True)
    h = x @ w
    z = h + b
    a = z.tanh()
    loss = (a * a).mean()
    tr = viz.trace_grads(loss, names={"w": w, "b": b})
    loss.backward()
    # 手算：loss = mean(a²)，a = tanh(z)，z = xw + b
    an = np.tanh(xn @ wn + bn)
    ga = 2 * an / an.size
    gz = ga * (1 - an**2)
    gw = xn.T @ gz
    gb = gz.sum(0)
    norms = {label: n for label, _, n in tr.grad_norms()}
    assert norms["w (参数)"] == pytest.approx(np.linalg.norm(gw), rel=1e-12)
    assert norms["b (参数)"] == pytest.approx(np.linalg.norm(gb), rel=1e-12)
    assert norms["Tanh"] == pytest.approx(np.linalg.norm(ga), rel=1e-12)
    assert norms["Add"] == pytest.approx(np.linalg.norm(gz), rel=1e-12)
    assert norms["MatMul"] == pytest.approx(np.linalg.norm(gz), rel=1e-12)
    assert norms["常量"] is None  # x 不需要梯度
    # 中间节点的梯度确实被保留下来了
    np.testing.assert_allclose(z.grad.data, gz, rtol=1e-12)
    tr.release()
    assert not z._retains_grad


def test_graph_after_backward_without_trace_is_marked_freed() -> None:
    y, names = _small_graph()
    y.backward()
    text = viz.graph_text(y, names=names)
    assert "已释放" in text
    assert len(text.splitlines()) == 1


def test_graph_with_retain_graph_shows_grads_of_leaves() -> None:
    y, names = _small_graph()
    y.backward(retain_graph=True)
    text = viz.graph_text(y, names=names)
    # d(sum(a*b))/da = b 按行广播：‖·‖ = sqrt(2·(0.25+1))；d/db = a 的列和 (4, 6)
    assert f"a (参数)  (2, 2)  float32  ‖grad‖={np.sqrt(2.5):.4g}" in text
    assert f"b (参数)  (2,)  float32  ‖grad‖={np.sqrt(52.0):.4g}" in text
    assert "Mul  (2, 2)  float32\n" in text + "\n"  # 中间节点没有 retain_grad，不显示梯度
    assert "‖grad‖" not in viz.graph_text(y, names=names, grads=False)


def test_deep_chain_is_iterative_and_truncated() -> None:
    x = tt.ones(2, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y.tanh()
    text = viz.graph_text(y.sum(), max_lines=20)
    lines = text.splitlines()
    assert len(lines) == 21
    assert "还有 9982 个节点未显示" in lines[-1]
    tr = viz.trace_grads(y.sum())
    assert len(tr.tensors) == 10_002


def test_names_first_name_wins_for_tied_tensors() -> None:
    w = tt.ones(2, requires_grad=True)
    text = viz.graph_text((w * w).sum(), names=[("emb.weight", w), ("head.weight", w)])
    assert "emb.weight" in text and "head.weight" not in text


def test_non_tensor_rejected() -> None:
    with pytest.raises(TypeError, match="Tensor"):
        viz.graph_text(np.ones(3))  # type: ignore[arg-type]


def _parse_dot(src: str) -> tuple[set[str], list[tuple[str, str]]]:
    nodes = set(re.findall(r"^\s+(n\d+) \[label=", src, flags=re.M))
    edges = re.findall(r"^\s+(n\d+) -> (n\d+);$", src, flags=re.M)
    return nodes, edges


def test_dot_source_contains_every_node_and_edge() -> None:
    y, names = _small_graph()
    with viz.trace_grads(y, names=names) as tr:
        y.backward()
    src = tr.to_dot()
    assert src.startswith("digraph tinytensor {") and src.rstrip().endswith("}")
    assert src.count("{") == src.count("}")
    nodes, edges = _parse_dot(src)
    assert nodes == {"n0", "n1", "n2", "n3"}
    assert sorted(edges) == sorted([("n1", "n0"), ("n2", "n1"), ("n3", "n1")])
    for label in ("Sum", "Mul", "a (参数)", "b (参数)", "(2, 2) float32", "‖grad‖="):
        assert label in src
    assert "fillcolor=lightblue" in src  # 参数着色


def test_dot_live_graph_and_duplicate_edges() -> None:
    a = tt.ones(3, requires_grad=True)
    src = viz.to_dot((a + a).sum())
    nodes, edges = _parse_dot(src)
    assert len(nodes) == 3
    assert edges.count(("n2", "n1")) == 2  # a + a：两条边


def test_dot_label_escaping() -> None:
    w = tt.ones(1, requires_grad=True)
    src = viz.to_dot(w.sum(), names={'we"ird\\name': w})
    assert 'we\\"ird\\\\name' in src


def test_to_dot_writes_file_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    y, names = _small_graph()
    src = viz.to_dot(y, tmp_path / "g", names=names)
    dot = tmp_path / "g.dot"
    assert dot.read_text(encoding="utf-8") == src
    assert not (tmp_path / "g.svg").exists()
    assert "未找到 graphviz" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("dot") is None, reason="未安装 graphviz 的 dot 程序")
def test_to_dot_writes_svg_with_graphviz(tmp_path: Path) -> None:
    y, names = _small_graph()
    viz.to_dot(y, tmp_path / "g.dot", names=names)
    svg = (tmp_path / "g.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "Mul" in svg


def test_print_functions_write_the_same_text(capsys) -> None:
    y, names = _small_graph()
    viz.print_graph(y, names=names)
    assert capsys.readouterr().out == viz.graph_text(y, names=names) + "\n"
    tr = viz.trace_grads(y, names)
    y.backward()
    tr.print()
    out = capsys.readouterr().out
    assert out == tr.text() + "\n" and "‖grad‖=1" in out and str(tr) == tr.text()
