"""The run summary: throughput, rejections by reason, the mix against its weights, and the
noise figures of every accepted task (printed and written to summary.json)."""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

from sandmle.envgen import mix

MIX_TOLERANCE = 0.05  # accepted shares within 5 points of the configured weights


def _mix_rows(counts: Mapping[str, int], targets: Mapping[str, float]) -> list[dict]:
    total = sum(counts.values())
    return [{"name": k, "accepted": int(counts.get(k, 0)),
             "share": (counts.get(k, 0) / total if total else 0.0), "weight": float(w)}
            for k, w in sorted(targets.items(), key=lambda kv: -kv[1])]


def noise_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per accepted task: the figures the noise checks use."""
    out = []
    for r in rows:
        if r.get("status") != "accepted":
            continue
        n = r.get("noise") or {}
        out.append({"task_id": r["task_id"], "metric": r.get("metric"),
                    "units": n.get("units"), "unit": n.get("unit"), "sd": n.get("sd"),
                    "span": n.get("span"), "span_over_sd": n.get("span_over_sd"),
                    "signal_over_sd": n.get("signal_over_sd"),
                    "best_shortcut": n.get("best_shortcut"),
                    "best_shortcut_score": n.get("best_shortcut_score"),
                    "bronze": r.get("bronze"),
                    "shortcut_reaches_bronze": n.get("shortcut_reaches_bronze")})
    return out


def summarize(rows: Sequence[Mapping[str, Any]], elapsed_s: float,
              run_cells: Sequence[mix.Cell] = (), span_sd: float = 3.0,
              stopped: str = "") -> dict:
    """Counts by status, reason, modality and task type; the mix against its weights; the
    per-task noise figures; throughput."""
    accepted = [r for r in rows if r["status"] == "accepted"]
    minutes = max(elapsed_s, 1e-9) / 60
    by_mod = collections.Counter(str(r.get("modality")) for r in accepted)
    by_type = collections.Counter(str(r.get("task_type")) for r in accepted)
    noise = noise_rows(rows)
    mod_mix = _mix_rows(by_mod, mix.modality_targets(run_cells)) if run_cells else []
    type_mix = _mix_rows(by_type, mix.task_type_targets(run_cells)) if run_cells else []
    return {
        "candidates": len(rows), "accepted": len(accepted), "rejected": len(rows) - len(accepted),
        "elapsed_s": round(elapsed_s, 1),
        "tasks_per_minute": round(len(accepted) / minutes, 2),
        "candidates_per_minute": round(len(rows) / minutes, 2),
        "rejections_by_reason": dict(sorted(collections.Counter(
            r["reason"] for r in rows if r["status"] != "accepted").items())),
        "accepted_by_modality": dict(sorted(by_mod.items())),
        "accepted_by_task_type": dict(sorted(by_type.items())),
        "modality_mix": mod_mix,
        "modality_mix_within_tolerance": bool(mod_mix) and all(
            abs(m["share"] - m["weight"]) <= MIX_TOLERANCE + 1e-9 for m in mod_mix),
        "task_type_mix": type_mix,
        "noise": noise,
        "noise_ok": all((n["span_over_sd"] or 0) >= span_sd and not n["shortcut_reaches_bronze"]
                        for n in noise),
        "span_sd": span_sd,
        "stopped": stopped,
    }


def _fmt(v: Any, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as printed at the end of a run."""
    lines = [f"envgen: {summary['accepted']} accepted / {summary['candidates']} candidates in "
             f"{summary['elapsed_s']} s  ->  {summary['tasks_per_minute']} tasks/minute "
             f"({summary['candidates_per_minute']} candidates/minute)",
             "  accepted: " + str(summary["accepted"])]
    for reason, count in summary["rejections_by_reason"].items():
        lines.append(f"  rejected ({reason}): {count}")
    lines.append("  by modality: " + ", ".join(f"{k}={v}" for k, v in summary["accepted_by_modality"].items()))
    lines.append("  by task type: " + ", ".join(f"{k}={v}" for k, v in summary["accepted_by_task_type"].items()))
    if summary.get("modality_mix"):
        lines.append("  modality mix, accepted share vs configured weight:")
        for m in summary["modality_mix"]:
            ok = abs(m["share"] - m["weight"]) <= MIX_TOLERANCE + 1e-9
            lines.append(f"    {m['name']:<11s} {m['accepted']:4d}  {100 * m['share']:5.1f}% vs "
                         f"{100 * m['weight']:5.1f}%  {'ok' if ok else 'OFF by more than 5 points'}")
        total = sum(m["accepted"] for m in summary["modality_mix"])
        small = (f" ({total} tasks: one task moves a share by {100 / total:.1f} points)"
                 if total and 100 / total > 100 * MIX_TOLERANCE else "")
        lines.append("  modality mix within 5 points of the weights: "
                     + ("yes" if summary["modality_mix_within_tolerance"] else "NO") + small)
        lines.append("  task-type mix, accepted share vs configured weight: " + ", ".join(
            f"{m['name']} {100 * m['share']:.0f}% vs {100 * m['weight']:.0f}%"
            for m in summary["task_type_mix"]))
    if summary.get("noise"):
        lines.append(f"  noise checks per accepted task (span = |gold - median|, SD = bootstrap "
                     f"SD of a reference score; need span/SD >= {summary['span_sd']:g} and no "
                     "shortcut at bronze):")
        lines.append(f"    {'task':<52s} {'metric':<24s} {'units':>6s} {'SD':>8s} {'span':>8s} "
                     f"{'span/SD':>7s} {'signal/SD':>9s}  best shortcut vs bronze")
        for n in summary["noise"]:
            lines.append(f"    {n['task_id'][:52]:<52s} {str(n['metric'])[:24]:<24s} "
                         f"{_fmt(n['units'], 'd') if n['units'] is not None else '-':>6s} "
                         f"{_fmt(n['sd']):>8s} {_fmt(n['span']):>8s} "
                         f"{_fmt(n['span_over_sd'], '.1f'):>7s} {_fmt(n['signal_over_sd'], '.1f'):>9s}  "
                         f"{n['best_shortcut']} {_fmt(n['best_shortcut_score'], '.4g')} vs "
                         f"{_fmt(n['bronze'], '.4g')} "
                         f"{'REACHES BRONZE' if n['shortcut_reaches_bronze'] else 'below'}")
        lines.append(f"  noise checks: {'all' if summary['noise_ok'] else 'NOT all'} "
                     f"{len(summary['noise'])} accepted tasks have span >= "
                     f"{summary['span_sd']:g} SD and no shortcut at bronze")
    if summary.get("stopped"):
        lines.append(f"  stopped early: {summary['stopped']}")
    return "\n".join(lines)
