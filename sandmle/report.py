"""One self-contained report.html of a run, an evaluation or a sweep (sandmle-report:
sandmle/report_cli.py).

  sandmle-report /tmp/run      # a train workdir: curves, the start/SFT/RL table, trajectories
  sandmle-report /tmp/ev       # a sandmle-eval workdir: per-task table with SEM, trajectories
  sandmle-report /tmp/sweep    # a sweep: each run's final metrics side by side, curves per run

Curves are PNGs (matplotlib) embedded as data URIs: reward and milestone rates, valid rate
and format, KL, entropy, clip fractions, losses and the time split per step, each drawn
when the run logged it. The trajectory browser shows each trajectory's turns (think, tool
call, observation) and reward parts, from <workdir>/trajectories/*.jsonl. The train and
evaluate jobs write the report when they finish.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
import os
from pathlib import Path
from typing import Any


REPORT = "report.html"
# (title, [(metric, label)], y label); a figure is drawn when any of its metrics exists.
CURVES: tuple[tuple[str, tuple[tuple[str, str], ...], str], ...] = (
    ("Reward and milestones (training rollouts)",
     (("reward_mean", "reward"), ("rate/valid", "valid"), ("rate/above_median", "> median"),
      ("rate/any_medal", "any medal"), ("rate/gold", "gold")), "rate / reward"),
    ("Held-out evaluation", (("eval_start/reward_mean", "reward (start)"),
                             ("eval_sft/reward_mean", "reward (after SFT)"),
                             ("eval/reward_mean", "reward"), ("eval/rate/valid", "valid"),
                             ("eval/rate/any_medal", "any medal")), "rate / reward"),
    ("Valid rate and format", (("rate/valid", "valid submission"),
                               ("rate/executed_ok", "code ran ok"),
                               ("format_mean", "well-formed turns")), "fraction"),
    ("KL to the behaviour policy", (("learner/approx_kl", "approx KL"),
                                    ("learner/kl", "KL")), "nats"),
    ("Entropy", (("learner/entropy", "entropy"),), "nats / token"),
    ("Clip fractions", (("learner/clip_frac_low", "low"), ("learner/clip_frac_high", "high"),
                        ("learner/dual_clip_frac", "dual")), "fraction of tokens"),
    ("Loss", (("learner/loss", "RL loss"), ("sft/loss", "SFT loss")), "loss"),
    ("Time per step", (("time/sampling_s", "sampling"), ("time/farm_s", "farm (tools)"),
                       ("time/update_s", "update"), ("time/step_s", "whole step")), "seconds"),
)
SWEEP_METRICS = ("reward_mean", "rate/valid", "rate/any_medal", "eval/reward_mean",
                 "eval/rate/valid", "eval/rate/any_medal", "learner/approx_kl",
                 "learner/entropy", "time/step_s", "loss", "eval_loss")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def series(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] from metrics.jsonl records (non-numbers skipped)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        step = r.get("step")
        for k, v in r.items():
            x = _number(v)
            if k not in ("step", "time") and x is not None and isinstance(step, int):
                out.setdefault(k, []).append((step, x))
    return out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def curve_figures(runs: dict[str, dict[str, list[tuple[int, float]]]]) -> list[dict[str, str]]:
    """One PNG per CURVES entry that has data; several runs are drawn side by side in it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    figures = []
    for title, keys, ylabel in CURVES:
        lines = [(run, key, label, data[key]) for run, data in runs.items()
                 for key, label in keys if data.get(key)]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        for run, key, label, pts in lines:
            xs, ys = zip(*sorted(pts))
            name = label if len(runs) == 1 else f"{run}: {label}"
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        figures.append({"title": title, "png": _png(fig)})
    return figures


def eval_figure(table: dict[str, Any]) -> dict[str, str]:
    """Per-task mean reward with its SEM over seeds (a sandmle-eval table) as a bar chart."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    tasks = list(table["per_task"])
    mean = [table["per_task"][t]["reward"]["mean"] for t in tasks]
    sem = [np.nan_to_num(table["per_task"][t]["reward"]["sem"]) for t in tasks]
    valid = [table["per_task"][t]["valid"]["mean"] for t in tasks]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.35 * len(tasks)), 3.6))
    x = np.arange(len(tasks))
    ax.bar(x - 0.2, mean, 0.4, yerr=sem, capsize=2, label="reward (± SEM)")
    ax.bar(x + 0.2, valid, 0.4, label="valid rate")
    ax.set_xticks(x, [t[:28] for t in tasks], rotation=70, fontsize=6, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    return {"title": "Per-task reward and valid rate", "png": _png(fig)}


def _fmt(v: Any) -> str:
    x = _number(v)
    return f"{x:.4g}" if x is not None else ("" if v is None else str(v))


def _cell(v: dict[str, float]) -> str:
    if not v.get("n"):
        return "-"
    return f"{v['mean']:.3f}" if math.isnan(v["sem"]) else f"{v['mean']:.3f} ± {v['sem']:.3f}"


def tables(workdir: Path) -> list[dict[str, Any]]:
    """The evaluation tables a workdir holds: sandmle-eval's, the train job's, a sweep's."""
    from sandmle.eval_table import COLUMNS
    out = []
    path = workdir / "eval.json"
    if path.is_file():
        t = json.loads(path.read_text())
        rows = [{"cells": [task] + [_cell(r[k]) for k, _ in COLUMNS]}
                for task, r in t["per_task"].items()]
        rows.append({"cells": ["overall"] + [_cell(t["overall"][k]) for k, _ in COLUMNS],
                     "overall": True})
        out.append({"title": f"Evaluation: {t.get('policy', '')}",
                    "note": f"{t['tasks']} tasks x {len(t['seeds'])} seeds ({t['pairs']} "
                            f"trajectories); mean ± SEM over seeds; position = HumanRank-style "
                            f"position score", "columns": ["task"] + [c for _, c in COLUMNS],
                    "rows": rows})
    path = workdir / "results.json"
    if path.is_file():
        res = json.loads(path.read_text())
        cols = ["valid", "reward", "above_median", "any_medal"]
        out.append({"title": "Held-out validation tasks (train job)",
                    "note": f"phase {res.get('phase')}, step {res.get('step')}",
                    "columns": [""] + cols,
                    "rows": [{"cells": [name] + [_fmt(r.get(c)) for c in cols]}
                             for name, r in (res.get("table") or {}).items()]})
    path = workdir / "sweep.json"
    if path.is_file():
        sweep = json.loads(path.read_text())
        runs = sweep.get("runs", [])
        finals = [r.get("final_metrics") or {} for r in runs]
        names = [m for m in SWEEP_METRICS if any(m in f for f in finals)]
        names += [m for f in finals for m in f if m not in names and m != "step"][:12 - len(names)]
        out.append({"title": "Sweep: final metrics of each run", "note": "",
                    "columns": ["run", "status", "seconds"] + names,
                    "rows": [{"cells": [r.get("name"), r.get("status"), _fmt(r.get("seconds"))]
                              + [_fmt(f.get(n)) for n in names]} for r, f in zip(runs, finals)]})
    return out


def _turn_view(turn: dict[str, Any], max_chars: int) -> dict[str, Any]:
    def cut(s: str | None) -> str | None:
        if s is None or len(s) <= max_chars:
            return s
        return s[:max_chars // 2] + f"\n[... {len(s) - max_chars} characters cut ...]\n" + \
            s[-max_chars // 2:]
    args = turn.get("arguments") or {}
    tool = turn.get("tool")
    if tool:
        call = args.get("code") if isinstance(args.get("code"), str) else json.dumps(args)
        label, action = ("code" if "code" in args else "arguments"), f"{tool}()"
    elif turn.get("parse_error"):
        call, label, action = turn.get("text"), "sampled text", "malformed turn"
    else:
        call, label, action = turn.get("text"), "answer", "final answer"
    return {"index": turn.get("index"), "action": action, "status": turn.get("tool_status"),
            "think": cut(turn.get("think")), "error": turn.get("parse_error"),
            "call": cut(call), "call_label": label, "observation": cut(turn.get("observation"))}


def _traj_view(d: dict[str, Any], max_chars: int) -> dict[str, Any]:
    from sandmle.agent.rewards import milestones
    report = d.get("report") or {}
    m = milestones(report)
    medal = next((k for k in ("gold", "silver", "bronze") if m[k]), "")
    info = ""
    if report:
        info = (f"metric {report.get('metric')}: score {_fmt(report.get('score'))}; "
                f"above median {'yes' if m['above_median'] else 'no'}; position score "
                f"{_fmt(report.get('position_score'))}")
        if report.get("reason"):
            info += f"; {report['reason']}"
    return {"task_id": d.get("task_id"), "sample": d.get("sample"),
            "reward": float(d.get("reward") or 0.0), "valid": m["valid"], "medal": medal,
            "termination": d.get("termination"), "parts": d.get("reward_parts") or {},
            "report": info, "turns": [_turn_view(t, max_chars) for t in d.get("turns", [])]}


def trajectory_sets(workdir: Path, max_per_file: int, max_chars: int = 4000
                    ) -> list[dict[str, Any]]:
    """The trajectories of <workdir>/trajectories/*.jsonl (the first `max_per_file` each)."""
    out = []
    folder = workdir / "trajectories"
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        shown, total = [], 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                total += 1
                if len(shown) < max_per_file:
                    try:
                        shown.append(_traj_view(json.loads(line), max_chars))
                    except (ValueError, TypeError, AttributeError):
                        total -= 1  # a line cut by a kill
        out.append({"name": path.stem, "trajectories": shown, "shown": len(shown),
                    "total": total})
    return out


def write_report(workdir: str | os.PathLike, out: str | os.PathLike | None = None,
                 max_trajectories: int = 40) -> Path:
    """Writes the report of a run / evaluation / sweep workdir; returns its path."""
    import jinja2

    from sandmle import metrics
    from sandmle.report_html import TEMPLATE
    work = Path(workdir)
    runs: dict[str, dict] = {}
    if (work / metrics.JSONL_NAME).is_file():
        runs[work.name] = series(metrics.read_jsonl(work))
    note = ""
    if (work / "sweep.json").is_file():
        for r in json.loads((work / "sweep.json").read_text()).get("runs", []):
            path = Path(r.get("workdir", "")) / metrics.JSONL_NAME
            if path.is_file():
                runs[r.get("name", path.parent.name)] = series(metrics.read_jsonl(path))
        note = f"sweep of {len(runs)} runs"
    figures = curve_figures(runs)
    if (work / "eval.json").is_file():
        figures.append(eval_figure(json.loads((work / "eval.json").read_text())))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        title=work.name, workdir=str(work.resolve()), note=note,
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), figures=figures,
        tables=tables(work), trajectory_sets=trajectory_sets(work, max_trajectories))
    path = Path(out) if out else work / REPORT
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
