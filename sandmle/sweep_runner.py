"""Running a sweep's runs: local processes side by side, or tasks on a Ray cluster.

`run_sweep(runs, base, parallel=N)` starts each run as `python -m sandmle.main ...`,
at most N at a time, as local processes (`backend="local"`) or as Ray tasks
(`backend="ray"`, the farm's extra: `pip install 'sandmle[ray]'`). Each run's output is
appended to `<run workdir>/run.log` under a header naming the attempt, so a rerun
never hides an earlier one. `BASE/sweep.json` is rewritten (atomically) whenever a run
ends, with each run's status, seconds and final metrics (the last value of every
metric in its metrics.jsonl). SIGTERM or Ctrl-C stop launching runs and pass SIGTERM
on to the running ones, which save and stop at their next step; rerunning the sweep
resumes them. `summary_table` prints the runs side by side; `write_summary` writes
them to BASE/summary.md.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from sandmle import metrics, preemption

MANIFEST = "sweep.json"
SUMMARY = "summary.md"
RUN_LOG = "run.log"


@dataclasses.dataclass
class Run:
    """One concrete run of a sweep."""
    name: str
    workdir: str
    overrides: dict[str, Any]
    argv: list[str]

    def command(self) -> str:
        """The run as a shell command line."""
        import shlex
        return shlex.join(["python", "-m", "sandmle.main", *self.argv])


def _log_header(run: Run) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"\n===== {stamp} sandmle-sweep starts {run.name}: {run.command()}\n"


def _last_line(path: str) -> str:
    """The last non-empty line of a run's log (its one-line error, if it failed)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("=====")]
    return lines[-1][:300] if lines else ""


def run_local(run: Run, python: str, procs: dict[str, subprocess.Popen],
              lock: threading.Lock) -> dict[str, Any]:
    """Runs one run as a local process; its output is appended to its run.log."""
    os.makedirs(run.workdir, exist_ok=True)
    log_path = os.path.join(run.workdir, RUN_LOG)
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(_log_header(run))
        log.flush()
        proc = subprocess.Popen([python, "-m", "sandmle.main", *run.argv], stdout=log,
                                stderr=subprocess.STDOUT)
        with lock:
            procs[run.name] = proc
        returncode = proc.wait()
        with lock:
            procs.pop(run.name, None)
    return {"returncode": returncode, "seconds": round(time.time() - start, 2),
            "host": os.uname().nodename}


def _ray_task(argv: list[str], workdir: str, header: str, cwd: str,
              pythonpath: str) -> dict[str, Any]:
    """Body of the Ray task: the same as run_local, on whichever node Ray chose."""
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    start = time.time()
    with open(os.path.join(workdir, RUN_LOG), "a", encoding="utf-8") as log:
        log.write(header)
        log.flush()
        proc = subprocess.Popen([sys.executable, "-m", "sandmle.main", *argv], stdout=log,
                                stderr=subprocess.STDOUT, env=env,
                                cwd=cwd if os.path.isdir(cwd) else None)
        try:
            returncode = proc.wait()
        except KeyboardInterrupt:  # ray.cancel: let the run save and stop
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait()
    return {"returncode": returncode, "seconds": round(time.time() - start, 2),
            "host": os.uname().nodename}


def _outcome(run: Run) -> dict[str, Any]:
    return {"name": run.name, "workdir": run.workdir, "overrides": run.overrides,
            "command": run.command(), "status": "pending"}


def _finish(outcome: dict[str, Any], result: dict[str, Any], stopped: bool) -> None:
    rc = result["returncode"]
    status = "ok" if rc == 0 else "failed"
    if stopped and (rc == 0 or result.get("ray_error") == "TaskCancelledError"):
        status = "stopped"  # saved at a step boundary; rerun the sweep to resume
    elif stopped and rc < 0:
        status = "killed"
    outcome.update(status=status, **result)
    outcome["final_metrics"] = metrics.final_metrics(outcome["workdir"])
    if rc != 0:
        outcome["error"] = _last_line(os.path.join(outcome["workdir"], RUN_LOG))


def write_manifest(base: str, sweep: dict[str, Any]) -> str:
    """Writes BASE/sweep.json atomically; returns its path."""
    path = os.path.join(base, MANIFEST)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(sweep, f, indent=2, default=str)
    os.replace(tmp, path)
    return path


def _print_progress(i: int, n: int, outcome: dict[str, Any]) -> None:
    tail = "" if outcome["status"] == "ok" else f": {outcome.get('error', '')}"
    print(f"[{i}/{n}] {outcome['name']}: {outcome['status']} ({outcome['seconds']} s)"
          f"{tail}", flush=True)


def run_sweep(runs: Sequence[Run], base: str, *, parallel: int = 1, backend: str = "local",
              ray_address: str = "", cpus_per_run: float = 1.0,
              python: str = sys.executable, spec: str = "") -> dict[str, Any]:
    """Runs every run, at most `parallel` at a time; returns the sweep record.

    The record (also BASE/sweep.json) holds the runs' outcomes, the wall time and
    the sum of the runs' own times.
    """
    os.makedirs(base, exist_ok=True)
    outcomes = [_outcome(r) for r in runs]
    sweep: dict[str, Any] = {"config": spec, "backend": backend, "parallel": parallel,
                             "started": time.time(), "runs": outcomes}
    write_manifest(base, sweep)
    start = time.perf_counter()
    done = 0
    with preemption.PreemptionGuard() as guard:
        if backend == "ray":
            iterator = _iter_ray(runs, parallel, ray_address, cpus_per_run, guard)
        else:
            iterator = _iter_local(runs, parallel, python, guard)
        for index, result in iterator:
            done += 1
            _finish(outcomes[index], result, guard.requested)
            _print_progress(done, len(runs), outcomes[index])
            write_manifest(base, sweep)
    for outcome in outcomes:
        if outcome["status"] == "pending":
            outcome["status"] = "not started"
    sweep["wall_seconds"] = round(time.perf_counter() - start, 2)
    sweep["run_seconds"] = round(sum(o.get("seconds", 0.0) for o in outcomes), 2)
    if guard.requested:
        sweep["stopped_by"] = guard.received
    write_manifest(base, sweep)
    return sweep


def _iter_local(runs: Sequence[Run], parallel: int, python: str,
                guard: preemption.PreemptionGuard):
    procs: dict[str, subprocess.Popen] = {}
    lock = threading.Lock()
    forwarded = False
    with cf.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(run_local, run, python, procs, lock): i
                   for i, run in enumerate(runs)}
        pending = set(futures)
        while pending:
            finished, pending = cf.wait(pending, timeout=0.2,
                                        return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                if not fut.cancelled():
                    yield futures[fut], fut.result()
            if guard.requested and not forwarded:
                forwarded = True
                for fut in pending:
                    fut.cancel()  # not started yet: stays "not started"
                with lock:
                    for proc in procs.values():
                        proc.send_signal(signal.SIGTERM)
                pending = {f for f in pending if not f.cancelled()}


def _iter_ray(runs: Sequence[Run], parallel: int, address: str, cpus_per_run: float,
              guard: preemption.PreemptionGuard):
    try:
        import ray
    except ImportError:
        from sandmle.errors import UserError
        raise UserError("--backend=ray needs Ray: pip install 'sandmle[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level="warning", configure_logging=True)
    task = ray.remote(num_cpus=cpus_per_run, max_retries=0)(_ray_task)
    cwd = os.getcwd()
    pythonpath = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH", "")) if p)
    queue = list(enumerate(runs))
    in_flight: dict[Any, int] = {}
    cancelled = False
    while queue or in_flight:
        while queue and len(in_flight) < max(1, parallel) and not guard.requested:
            i, run = queue.pop(0)
            ref = task.remote(run.argv, run.workdir, _log_header(run), cwd, pythonpath)
            in_flight[ref] = i
        if guard.requested and not cancelled:
            cancelled = True
            queue.clear()
            for ref in in_flight:
                ray.cancel(ref, force=False)  # the task sends SIGTERM to its run
        if not in_flight:
            break
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
        for ref in ready:
            i = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # a cancelled or lost task still gets an outcome
                result = {"returncode": -1, "seconds": 0.0, "host": "",
                          "ray_error": type(e).__name__}
            yield i, result


# -- the side-by-side summary -----------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_rows(sweep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per run, its overrides, status, seconds, final metrics."""
    runs = sweep["runs"]
    fields: list[str] = []
    for r in runs:
        fields += [k for k in r["overrides"] if k not in fields]
    names: list[str] = []
    for r in runs:
        names += [k for k in (r.get("final_metrics") or {}) if k not in names]
    names = (["step"] if "step" in names else []) + sorted(n for n in names if n != "step")
    rows = []
    for i, r in enumerate(runs):
        final = r.get("final_metrics") or {}
        rows.append([str(i), *(_fmt(r["overrides"].get(f, "")) for f in fields), r["status"],
                     _fmt(r.get("seconds", "")), *(_fmt(final.get(n, "")) for n in names)])
    return ["#", *fields, "status", "s", *names], rows


def summary_table(sweep: dict[str, Any]) -> Any:
    """A rich Table of `summary_rows`, for the terminal."""
    from rich.table import Table
    header, rows = summary_rows(sweep)
    table = Table(title=f"sweep {sweep.get('config', '')}: {len(rows)} runs")
    for col in header:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|")


def write_summary(base: str, sweep: dict[str, Any]) -> str:
    """Writes BASE/summary.md, the runs' final metrics side by side (Markdown); returns
    its path."""
    header, rows = summary_rows(sweep)
    lines = [f"# sweep {sweep.get('config', '')}: {len(rows)} runs", "",
             "| " + " | ".join(map(_md_cell, header)) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    lines += ["", timing_line(sweep), ""]
    path = os.path.join(base, SUMMARY)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)
    return path


def timing_line(sweep: dict[str, Any]) -> str:
    """Wall time against the runs' summed time (what running them in turn would take)."""
    wall, total = sweep.get("wall_seconds", 0.0), sweep.get("run_seconds", 0.0)
    ratio = f"{wall / total:.2f}x" if total else "n/a"
    return (f"sweep wall time {wall:.1f} s for {len(sweep['runs'])} runs with "
            f"--parallel={sweep['parallel']} ({sweep['backend']}); the runs' own times add "
            f"up to {total:.1f} s: wall/sum = {ratio}")
