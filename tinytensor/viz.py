"""看见反向传播：把张量背后的计算图画成文本树或 graphviz 图，并在反向后标出每个节点的梯度范数。

    import tinytensor as tt
    from tinytensor import viz

    names = dict(model.named_parameters())
    loss = model(x).mean()
    viz.print_graph(loss, names=names)      # 前向后：算子、形状、dtype

    with viz.trace_grads(loss, names=names) as tr:   # 反向前给每个中间节点打上 retain_grad()
        loss.backward()
    tr.print()                              # 反向后：每个节点的 ‖grad‖
    tr.to_dot("mlp.dot")                    # graphviz 源文件；装了 dot 时另存 mlp.svg

约定：
- 节点是张量；非叶子张量标出产生它的算子名（Function 子类名，如 MatMul、Add），叶子张量
  在 ``names`` 里有名字时标名字（如 ``fc1.weight``），否则标“叶子”（需要梯度）或“常量”。
- 被多处使用的节点（共享节点）第一次出现时完整展开并编号 ``[#k]``，之后只写引用 ``→ #k``。
- 遍历全部是迭代的（显式栈），一万层深的链也不会触发递归上限。
- 反向传播默认会释放计算图（``ctx.parents`` 随之清空），所以反向后想看图，要么在反向前用
  ``trace_grads`` 记下图的结构（它同时让中间节点保留 .grad），要么 ``backward(retain_graph=True)``。
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .tensor import Tensor

__all__ = ["GraphTrace", "graph_text", "print_graph", "to_dot", "trace_grads"]

_DEFAULT_MAX_LINES = 400


@dataclass
class _Node:
    """计算图快照里的一个节点：张量本身（用来在渲染时读取 .grad）与它的结构信息。"""

    tensor: Tensor
    op: str | None  # 产生它的算子名；叶子为 None
    parents: tuple[int, ...]  # 输入节点在快照中的下标，顺序与 ctx.parents 相同（可重复）
    freed: bool = False  # 该节点的计算图已被 backward 释放，输入不可见
    uses: int = 0  # 被多少条边引用（>1 即共享节点）


@dataclass
class _Graph:
    nodes: list[_Node] = field(default_factory=list)
    root: int = 0


def _snapshot(root: Tensor) -> _Graph:
    """迭代地（先序、显式栈）记下 root 背后的整张图：每个张量只记一次。"""
    if not isinstance(root, Tensor):
        raise TypeError(f"需要一个 tinytensor.Tensor，收到 {type(root).__name__}")
    g = _Graph()
    index: dict[int, int] = {}
    pending: list[Tensor] = [root]
    order: list[Tensor] = []
    while pending:
        t = pending.pop()
        if id(t) in index:
            continue
        index[id(t)] = len(order)
        order.append(t)
        ctx = t._ctx
        if ctx is not None:
            pending.extend(reversed(ctx.parents))
    for t in order:
        ctx = t._ctx
        if ctx is None:
            g.nodes.append(_Node(t, None, ()))
        else:
            parents = tuple(index[id(p)] for p in ctx.parents)
            g.nodes.append(_Node(t, ctx.name, parents, freed=bool(ctx.freed)))
    for n in g.nodes:
        for p in n.parents:
            g.nodes[p].uses += 1
    return g


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _grad_norm(t: Tensor) -> float | None:
    if t.grad is None:
        return None
    return float(np.linalg.norm(np.asarray(t.grad.data, dtype=np.float64).ravel()))


def _name_map(names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None) -> dict[int, str]:
    if names is None:
        return {}
    items = names.items() if isinstance(names, Mapping) else names
    out: dict[int, str] = {}
    for name, t in items:
        out.setdefault(id(t), name)  # 同一个张量有多个名字（权重共享）时保留第一个
    return out


def _label(n: _Node, names: dict[int, str]) -> str:
    t = n.tensor
    name = names.get(id(t))
    if n.op is None:
        kind = "参数" if name is not None else ("叶子" if t.requires_grad else "常量")
        return f"{name} ({kind})" if name is not None else kind
    return n.op if name is None else f"{n.op} {name}"


def _describe(n: _Node, names: dict[int, str], grads: bool) -> str:
    t = n.tensor
    parts = [_label(n, names), _fmt_shape(t.shape), str(t.dtype)]
    if grads:
        norm = _grad_norm(t)
        if norm is not None:
            parts.append(f"‖grad‖={norm:.4g}")
    if n.freed:
        parts.append("（计算图已释放，输入不可见）")
    return "  ".join(parts)


def _render_text(g: _Graph, names: dict[int, str], grads: bool, max_lines: int | None) -> str:
    """把快照画成文本树；共享节点第一次出现时编号展开，之后只写引用。"""
    tags: dict[int, int] = {}  # 共享节点 -> 编号
    shown: set[int] = set()
    lines: list[str] = []
    # 栈元素：(节点下标, 本行前缀, 子节点前缀)
    stack: list[tuple[int, str, str]] = [(g.root, "", "")]
    truncated = False
    while stack:
        if max_lines is not None and len(lines) >= max_lines:
            truncated = True
            break
        i, head, tail = stack.pop()
        n = g.nodes[i]
        if i in shown:
            lines.append(f"{head}→ #{tags[i]} {_label(n, names)}")
            continue
        shown.add(i)
        text = _describe(n, names, grads)
        if n.uses > 1:
            tags[i] = len(tags) + 1
            text += f"  [#{tags[i]}]"
        lines.append(head + text)
        kids = n.parents
        for k in range(len(kids) - 1, -1, -1):
            last = k == len(kids) - 1
            stack.append((kids[k], tail + ("└─ " if last else "├─ "), tail + ("   " if last else "│  ")))
    if truncated:
        lines.append(f"…（已达 max_lines={max_lines}，还有 {len(g.nodes) - len(shown)} 个节点未显示）")
    return "\n".join(lines)


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _render_dot(g: _Graph, names: dict[int, str], grads: bool) -> str:
    """graphviz 源：数据从输入流向输出（上 → 下），参数蓝色、常量灰色、根节点加粗。"""
    out = [
        "digraph tinytensor {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="monospace", fontsize=10];',
    ]
    for i, n in enumerate(g.nodes):
        t = n.tensor
        rows = [_label(n, names), f"{_fmt_shape(t.shape)} {t.dtype}"]
        norm = _grad_norm(t) if grads else None
        if norm is not None:
            rows.append(f"‖grad‖={norm:.4g}")
        if n.freed:
            rows.append("(已释放)")
        label = "\\n".join(_dot_escape(r) for r in rows)
        if n.op is None:
            color = "lightblue" if id(t) in names else ("lightyellow" if t.requires_grad else "lightgrey")
        else:
            color = "white"
        extra = ", penwidth=2" if i == g.root else ""
        out.append(f'  n{i} [label="{label}", fillcolor={color}{extra}];')
    for i, n in enumerate(g.nodes):
        for p in n.parents:
            out.append(f"  n{p} -> n{i};")
    out.append("}")
    return "\n".join(out) + "\n"


def _write_dot(source: str, path: str | Path) -> Path | None:
    """写出 .dot；若装了 graphviz 的 dot 程序，再在旁边生成同名 .svg 并返回其路径。"""
    p = Path(path)
    if p.suffix != ".dot":
        p = p.with_name(p.name + ".dot")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(source, encoding="utf-8")
    exe = shutil.which("dot")
    if exe is None:
        print(f"已写出 {p}；未找到 graphviz 的 dot 程序，没有生成 SVG（安装 graphviz 后运行：dot -Tsvg {p} -o "
              f"{p.with_suffix('.svg')}）")
        return None
    svg = p.with_suffix(".svg")
    subprocess.run([exe, "-Tsvg", str(p), "-o", str(svg)], check=True, capture_output=True)
    print(f"已写出 {p} 与 {svg}")
    return svg


def graph_text(
    t: Tensor,
    names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None,
    grads: bool = True,
    max_lines: int | None = _DEFAULT_MAX_LINES,
) -> str:
    """返回张量 t 背后计算图的文本树（根在上，输入在下）。

    names：名字 → 张量的映射，如 ``dict(model.named_parameters())``，用来给叶子标名字。
    grads：张量已有 .grad 时是否显示其范数。max_lines：最多输出的行数（None 不限）。
    """
    return _render_text(_snapshot(t), _name_map(names), grads, max_lines)


def print_graph(
    t: Tensor,
    names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None,
    grads: bool = True,
    max_lines: int | None = _DEFAULT_MAX_LINES,
) -> None:
    """打印 ``graph_text(t, ...)``。"""
    print(graph_text(t, names, grads, max_lines))


def to_dot(
    t: Tensor,
    path: str | Path | None = None,
    names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None,
    grads: bool = True,
) -> str:
    """返回计算图的 graphviz 源文本；给了 path 时写出 .dot，装了 dot 程序时再生成 .svg。"""
    src = _render_dot(_snapshot(t), _name_map(names), grads)
    if path is not None:
        _write_dot(src, path)
    return src


class GraphTrace:
    """一次反向传播的“录像”：记下图的结构，并让每个中间节点在反向后保留 .grad。

    通常通过 ``trace_grads(root)`` 创建；既可直接使用，也可作为上下文管理器
    （退出时撤销 retain_grad 标记，已经得到的 .grad 保留）。
    """

    def __init__(
        self, root: Tensor, names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None
    ) -> None:
        self.graph = _snapshot(root)
        self.names = _name_map(names)
        self._marked: list[Tensor] = []
        for n in self.graph.nodes:
            t = n.tensor
            if n.op is not None and t.requires_grad and not t._retains_grad:
                t.retain_grad()
                self._marked.append(t)

    @property
    def tensors(self) -> list[Tensor]:
        """图中全部张量（先序：根在前）。"""
        return [n.tensor for n in self.graph.nodes]

    def grad_norms(self) -> list[tuple[str, tuple[int, ...], float | None]]:
        """每个节点的 (标签, 形状, ‖grad‖)，顺序同 ``tensors``；没有梯度的为 None。"""
        return [(_label(n, self.names), n.tensor.shape, _grad_norm(n.tensor)) for n in self.graph.nodes]

    def text(self, grads: bool = True, max_lines: int | None = _DEFAULT_MAX_LINES) -> str:
        """文本树（用的是记录下来的结构，所以反向释放了计算图之后也能画）。"""
        return _render_text(self.graph, self.names, grads, max_lines)

    def print(self, grads: bool = True, max_lines: int | None = _DEFAULT_MAX_LINES) -> None:
        print(self.text(grads, max_lines))

    def to_dot(self, path: str | Path | None = None, grads: bool = True) -> str:
        """同 ``viz.to_dot``，但用记录下来的结构。"""
        src = _render_dot(self.graph, self.names, grads)
        if path is not None:
            _write_dot(src, path)
        return src

    def release(self) -> None:
        """撤销本对象加上的 retain_grad 标记（已有的 .grad 不动）。"""
        for t in self._marked:
            t._retains_grad = False
        self._marked = []

    def __enter__(self) -> GraphTrace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __str__(self) -> str:
        return self.text()


def trace_grads(
    root: Tensor, names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None
) -> GraphTrace:
    """在 ``root.backward()`` 之前调用：记下计算图，并给每个中间节点打上 retain_grad()。

    反向之后用返回对象的 ``.print()`` / ``.text()`` / ``.to_dot()`` 查看每个节点的梯度范数。
    """
    return GraphTrace(root, names)
