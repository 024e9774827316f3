"""第 7 章的结果表：同一个基座，依次得到“基座 / SFT / SFT+DPO”在中文基准测试题上的 EM / F1。

    python -m llmcore.finetune.instruct_results --ckpt=runs/base-zh --out=docs/results/ch07-bench

一条命令做完五件事，每件事是一个子进程 `python -m gpt_numpy|gpt_torch ...`（本模块不导入任何框架）：

1. eval-instruct：基座在测试划分的前 --limit_test 题上逐题贪心作答，按任务打分；
2. finetune-sft：从基座指令微调 --sft_max_steps 步（学习率 --sft_lr），结束时在同样的测试题上打分；
3. finetune-dpo：从 SFT 检查点出发（它的冻结副本作参照模型），在偏好对（--pairs）上训练 --dpo_max_steps 步，再打分；
4. --tracks 给了两条轨道时：在第二条轨道上重复第 2 步，表里多一行“SFT（另一条轨道）”；
5. 写出 OUT.json（全部数字、设置、各步用时、命令、机器、日期）与 OUT.md（一张按任务的 EM / F1 表）。

各次运行的输出（检查点、metrics.jsonl、answers.jsonl）留在 --work 下。

花费由这些旋钮决定（其余参数对用时影响很小）：
- --sft_max_steps、--batch_size：SFT 的步数与每步的序列数；每步的耗时与本批最长的序列成正比。
- --dpo_max_steps：DPO 每步要算参照模型的两次前向和策略模型的两次前向与反向，约为 SFT 一步的 2–3 倍。
- --limit_test × --max_new_tokens：三次打分每题最多生成的词元；基座通常不会自己停下，几乎每题都生成满。
- --limit_val、--eval_limit、--eval_interval：训练途中与结束时的验证（只有前向）。
- --tracks：第二条轨道多一次 SFT（CPU 上 PyTorch eager 比 tinytensor 慢）。
- --threads：每个子进程的线程数（0 = 不限制）。
--limit_train 只决定批次从哪些训练题里抽，不改变步数；偏好对默认由规则造（--pairs=rule），几乎不花时间，
--pairs=self 则要让 SFT 模型把 --limit_train 道训练题各答一遍，很贵。

默认值是为一次正式运行设想的：small 结构的 base-zh 基座（约 1,690 万参数、上下文 256），基准题的提示约 80–130 个
BPE 词元、回答 1–40 个。实测（2026-12-06，AMD EPYC 2 核，--threads=1，机器上同时还有另外两三个训练进程）：
基座在 300 题上打分 247 秒；SFT 400 步（批 8，学习率 3e-4，不是默认值）训练 2,727 秒、结束时打分 141 秒。
学习率没有调过；DPO 取 1e-5（小模型、步数少，比原书的 5e-6 大一倍）。
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from .instruct_eval import results_header, results_row, row_tasks
from .results import THREAD_VARS, machine, reusable

TRACK_NAMES = {"gpt_numpy": "NumPy", "gpt_torch": "PyTorch"}
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _env(threads: int) -> dict[str, str]:
    """子进程的环境：能找到本项目的包；threads > 0 时固定各种线程数。"""
    env = dict(os.environ)
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + old if old else "")
    if threads > 0:
        env.update({k: str(threads) for k in THREAD_VARS})
    return env


def _run(track: str, command: str, args: list[str], threads: int) -> float:
    """运行 `python -m TRACK COMMAND ARGS...`，返回墙钟秒数；失败时打印一行中文并以子进程的退出码退出。"""
    cmd = [sys.executable, "-m", track, command, *args]
    print("$ python " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=_env(threads)).returncode
    if rc != 0:
        print(f"子进程失败（退出码 {rc}）：python -m {track} {command}；上面是它的输出", file=sys.stderr)
        raise SystemExit(rc)
    return time.perf_counter() - t0


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _curve(out: Path) -> dict[str, list[dict[str, float]]]:
    """OUT/metrics.jsonl 里的训练与验证记录（第 7 章画正式运行的曲线用）；没有这个文件时为空。"""
    curve: dict[str, list[dict[str, float]]] = {"train": [], "eval": []}
    path = out / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            m = json.loads(line)
            if m.get("type") in curve:
                curve[m["type"]].append({k: v for k, v in m.items() if isinstance(v, (int, float))})
    return curve


def _top_answers(path: Path, k: int = 3) -> dict[str, list[list[Any]]]:
    """answers.jsonl 里每种任务最常见的 k 个回答及其次数（看模型是不是总答同一个）；没有这个文件时为空。"""
    counts: dict[str, Counter[str]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            a = json.loads(line)
            counts.setdefault(a.get("task", ""), Counter())[a["answer"]] += 1
    return {t: [[ans, n] for ans, n in c.most_common(k)] for t, c in counts.items()}


def _train_row(key: str, name: str, track: str, res: dict[str, Any], wall: float | None,
               args: list[str], out: Path) -> dict[str, Any]:
    keep = ("steps", "train_time_s", "score_time_s", "trainable_params", "total_params", "train_n", "val_n",
            "final_train_loss", "val_loss", "final_loss", "final_margin", "final_accuracy", "val", "pair_counts",
            "beta", "mode", "epochs")
    return {"key": key, "name": name, "track": track, "scores": res["scores"], "wall_s": wall, "args": args,
            **{k: res[k] for k in keep if k in res}, "curve": _curve(out),
            "top_answers": _top_answers(out / "answers.jsonl")}


class _ZhHelp(argparse.HelpFormatter):
    """--help 的用法行用中文前缀，每个参数后面写出默认值。"""

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, prefix="用法：")

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings != ["-h", "--help"]:
            text += f"（默认 {action.default if action.default != '' else '空'}）"
        return text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m llmcore.finetune.instruct_results", formatter_class=_ZhHelp,
                                 add_help=False,
                                 description="第 7 章的结果表：基座 / SFT / SFT+DPO 在中文基准上的 EM / F1"
                                             "（一次运行）；决定用时的参数见模块开头的说明")
    ap._optionals.title = "参数"
    ap.add_argument("-h", "--help", action="help", help="显示本说明并退出")
    ap.add_argument("--ckpt", default="runs/base-zh", help="基座检查点（或训练输出目录）")
    ap.add_argument("--out", default="docs/results/ch07-bench", help="输出文件前缀（写 .json 与 .md）")
    ap.add_argument("--work", default="runs/ch07-results", help="各次运行的输出目录")
    ap.add_argument("--tracks", default="gpt_numpy",
                    help="逗号分隔；第一条轨道跑全部三行，第二条（如果有）只多跑一行 SFT")
    ap.add_argument("--tasks", default="", help="只用这些基准任务（逗号分隔）；缺省全部五个")
    ap.add_argument("--split_seed", type=int, default=123, help="基准的抽样种子")
    ap.add_argument("--seed", type=int, default=123, help="训练的随机种子（打乱顺序、造错答）")
    ap.add_argument("--limit_train", type=int, default=0, help="只用训练划分的前 N 条（0 = 全部）")
    ap.add_argument("--limit_val", type=int, default=200, help="SFT 结束时的验证损失只用验证划分的前 N 条")
    ap.add_argument("--limit_test", type=int, default=300, help="三次打分都用测试划分的前 N 题（0 = 全部）")
    ap.add_argument("--eval_limit", type=int, default=100, help="训练途中的验证只用验证划分的前 N 条")
    ap.add_argument("--eval_interval", type=int, default=200, help="每这么多步验证一次")
    ap.add_argument("--batch_size", type=int, default=8, help="SFT 与 DPO 的批大小")
    ap.add_argument("--sft_max_steps", type=int, default=800, help="SFT 的步数")
    ap.add_argument("--dpo_max_steps", type=int, default=150, help="DPO 的步数")
    ap.add_argument("--sft_lr", type=float, default=1e-4, help="SFT 的学习率（AdamW，恒定）")
    ap.add_argument("--dpo_lr", type=float, default=1e-5, help="DPO 的学习率")
    ap.add_argument("--beta", type=float, default=0.1, help="DPO 的 beta")
    ap.add_argument("--pairs", default="rule", help="偏好对：rule | self | 偏好对文件（见 finetune-dpo --help）")
    ap.add_argument("--max_new_tokens", type=int, default=64, help="打分时每题最多生成的词元数")
    ap.add_argument("--threads", type=int, default=0, help="每个子进程的线程数（0 = 不限制）")
    ap.add_argument("--reuse", action="store_true",
                    help="--work 下已有某一步的结果且设置相同时直接沿用（中断后接着跑）")
    return ap


def run(args: argparse.Namespace, cmdline: str) -> dict[str, Any]:
    """按顺序跑完各步，返回写进 OUT.json 的内容。"""
    tracks = [t.strip() for t in args.tracks.split(",") if t.strip()]
    bad = [t for t in tracks if t not in TRACK_NAMES]
    if not tracks or bad or len(tracks) > 2:
        raise SystemExit(f"--tracks 应是 gpt_numpy、gpt_torch 中的一条或两条（逗号分隔），收到 {args.tracks!r}")
    for name in ("sft_max_steps", "dpo_max_steps", "batch_size", "max_new_tokens", "eval_interval"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} 必须为正整数，收到 {getattr(args, name)!r}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = [f"--split_seed={args.split_seed}", f"--max_new_tokens={args.max_new_tokens}", "--progress=false"]
    if args.tasks:
        data.append(f"--tasks={args.tasks}")
    train = [*data, f"--seed={args.seed}", f"--batch_size={args.batch_size}", f"--limit_train={args.limit_train}",
             f"--limit_val={args.limit_val}", f"--limit_test={args.limit_test}", f"--eval_limit={args.eval_limit}",
             f"--eval_interval={args.eval_interval}"]
    main_track = tracks[0]
    rows: list[dict[str, Any]] = []

    base_json = work / "base-eval.json"
    base_args = [f"--ckpt={args.ckpt}", "--split=test", f"--limit={args.limit_test}", "--name=基座",
                 f"--out={base_json}", f"--answers={work / 'base-answers.jsonl'}", *data]
    old = _read(base_json) if args.reuse and base_json.is_file() else {}
    # 基座的打分文件只记下检查点与题数：两者都相同才沿用
    recorded = Path(old.get("checkpoint", ""))  # 训练输出目录时记下的是其中的 ckpt_best 之类
    if old and old.get("n") == args.limit_test and Path(args.ckpt) in (recorded, recorded.parent):
        wall, base = None, old
    else:
        wall = _run(main_track, "eval-instruct", base_args, args.threads)
        base = _read(base_json)
    rows.append({"key": "base", "name": "基座", "track": main_track, "scores": base["scores"], "wall_s": wall,
                 "args": base_args, "checkpoint": base["checkpoint"],
                 "top_answers": _top_answers(work / "base-answers.jsonl")})

    for i, track in enumerate(tracks):
        out = work / f"sft-{track}"
        sft_args = [f"--ckpt={args.ckpt}", f"--out_dir={out}", f"--max_steps={args.sft_max_steps}",
                    f"--lr={args.sft_lr}", *train]
        reuse = args.reuse and reusable(out / "result.json", sft_args)
        wall = None if reuse else _run(track, "finetune-sft", sft_args, args.threads)
        name = "SFT" if i == 0 else f"SFT（{TRACK_NAMES[track]} 轨道）"
        rows.append(_train_row("sft" if i == 0 else f"sft-{track}", name, track, _read(out / "result.json"), wall,
                               sft_args, out))
        if i == 0:  # DPO 紧接着主轨道的 SFT
            dpo_out = work / f"dpo-{track}"
            dpo_args = [f"--ckpt={out}", f"--out_dir={dpo_out}", f"--max_steps={args.dpo_max_steps}",
                        f"--lr={args.dpo_lr}", f"--beta={args.beta}", f"--pairs={args.pairs}", *train]
            reuse = args.reuse and reusable(dpo_out / "result.json", dpo_args)
            wall = None if reuse else _run(track, "finetune-dpo", dpo_args, args.threads)
            rows.append(_train_row("dpo", "SFT+DPO", track, _read(dpo_out / "result.json"), wall, dpo_args,
                                   dpo_out))

    settings = dict(vars(args))
    return {"command": cmdline, "machine": machine(), "date": date.today().isoformat(), "threads": args.threads,
            "tracks": tracks, "settings": settings, "rows": rows,
            "total_wall_s": sum(r["wall_s"] for r in rows if r["wall_s"] is not None),
            "reused": [r["key"] for r in rows if r["wall_s"] is None]}


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _took(result: dict[str, Any]) -> str:
    reused = result.get("reused") or []
    if len(reused) == len(result["rows"]):
        return "各步都沿用 --work 下已有的结果（各次训练与打分的用时见表下）"
    return (f"全部用时 {result['total_wall_s'] / 60:.1f} 分钟"
            + ("（不含沿用的：" + "、".join(reused) + "）" if reused else ""))


def to_markdown(result: dict[str, Any]) -> str:
    """OUT.md：表头说明、一张按任务的 EM / F1 表、各次训练的要点。"""
    s = result["settings"]
    rows = result["rows"]
    tasks = row_tasks(rows[0]["scores"])
    threads = f"每个子进程 {s['threads']} 个线程" if s["threads"] > 0 else "线程数不限"
    n_test = rows[0]["scores"]["all"]["n"]
    lines = [
        f"命令：`{result['command']}`  ",
        f"机器：{result['machine']}，{threads}  ",
        f"日期：{result['date']}；{_took(result)}  ",
        f"基座：`{s['ckpt']}`；数据：中文指令基准（种子 {s['split_seed']}），测试划分的前 {n_test} 题，"
        f"每题贪心生成最多 {s['max_new_tokens']} 个词元；前三行在 {TRACK_NAMES[result['tracks'][0]]} 轨道上，各跑一次",
        "",
        "每格是 EM / F1（%）：",
        "",
        results_header(tasks),
        *[results_row(r["name"], r["scores"], tasks) for r in rows],
        "",
    ]
    for r in rows:
        if r["key"] == "base":
            took = "沿用已有的结果" if r["wall_s"] is None else f"打分用时 {r['wall_s']:.0f} 秒（含启动）"
            lines.append(f"- 基座：{took}")
            continue
        head = (f"- {r['name']}（{TRACK_NAMES[r['track']]}）：{r['steps']} 步，批 {s['batch_size']}，"
                f"可训练参数 {r['trainable_params']:,}，训练 {r['train_time_s']:.0f} 秒，"
                f"打分 {r['score_time_s']:.0f} 秒")
        if r["key"] == "dpo":
            val = r.get("val") or {}
            lines.append(
                f"{head}；学习率 {s['dpo_lr']:g}，beta {s['beta']:g}，偏好对 {s['pairs']}"
                f"（用了 {r['pair_counts']['used']:,} 对）；最后至多 20 步的平均：损失 {_fmt(r['final_loss'], '.4f')}、"
                f"奖励差 {_fmt(r['final_margin'], '.4f')}、偏好准确率 {_fmt(r['final_accuracy'], '.3f')}；"
                f"验证偏好对上：损失 {_fmt(val.get('loss'), '.4f')}、"
                f"偏好准确率 {_fmt(val.get('accuracy'), '.3f')}")
        else:
            lines.append(
                f"{head}；学习率 {s['sft_lr']:g}，训练题 {r['train_n']:,} 条（{r['epochs']:.2f} 轮）；"
                f"最后至多 20 步的平均训练损失 {_fmt(r['final_train_loss'], '.4f')}，"
                f"验证损失 {_fmt(r['val_loss'], '.4f')}（验证划分前 {r['val_n']} 条）")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmdline = "python -m llmcore.finetune.instruct_results " + " ".join(argv if argv is not None else sys.argv[1:])
    result = run(args, cmdline.strip())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = to_markdown(result)
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main", "run", "to_markdown"]
