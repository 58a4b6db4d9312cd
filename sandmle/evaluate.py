"""Job `evaluate` (also `sandmle-eval`, sandmle/eval_cli.py): a policy x a task set x k seeds
-> MLE-bench's table.

  sandmle-eval --policy=expert --tasks=/tmp/eval_tasks --seeds=3 --workdir=/tmp/ev
  sandmle-eval --policy=checkpoint --path=/tmp/run --tasks=/tmp/run/envgen --workdir=/tmp/ev2
  sandmle-eval --policy=hf --path=/tmp/export --tasks=/tmp/eval_tasks --workdir=/tmp/ev3
  sandmle-eval --policy=openai --path=http://127.0.0.1:8000/v1 --tasks=... --workdir=/tmp/ev4
  sandmle --config=configs/eval.py:policy=expert,tasks=/tmp/eval_tasks --workdir=/tmp/ev

Runs one trajectory per (task, seed) through the agent's scaffold and the sandbox farm,
grades it, and writes per task and overall: valid rate, above median, bronze / silver /
gold, any medal, mean reward and the position score (HumanRank-style), each as mean +- SEM
over seeds, to <workdir>/eval.json and eval.md (and prints it), with every trajectory in
<workdir>/trajectories/evaluate.jsonl and report.html. Rerunning the same command resumes:
finished (task, seed) pairs are read back, not run again. `--config=configs/eval.py:...`
and `--config.a.b=value` set anything else (agent limits, sampling, farm).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from sandmle.errors import UserError

RESULTS = "eval_results.jsonl"
STATE = "eval_state.json"
TRAJECTORIES = Path("trajectories") / "evaluate.jsonl"
# Config fields an evaluation's results are bound to (a rerun may not change them).
BOUND = ("policy.kind", "policy.path", "policy.step", "policy.run_settings", "policy.model",
         "policy.expert_bug_rate", "seed", "agent", "sampling", "tokenizer", "model")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Refuses configs that cannot run, before anything is written (one line each)."""
    from sandmle.eval_sources import KINDS, SPLITS
    p = config.policy
    if p.kind not in KINDS:
        raise UserError(f"config.policy.kind must be one of {', '.join(KINDS)}, got {p.kind!r}")
    if p.kind != "expert" and not p.path:
        raise UserError(f"policy {p.kind!r} needs a path (--path / config.policy.path): "
                        + {"checkpoint": "a train workdir or checkpoint step folder",
                           "hf": "a Hugging Face model directory",
                           "openai": "the endpoint's base URL"}[p.kind])
    if config.eval.seeds < 1 or config.eval.chunk_size < 1:
        raise UserError("config.eval.seeds and config.eval.chunk_size must be >= 1")
    if config.tasks.split not in SPLITS:
        raise UserError(f"config.tasks.split must be one of {', '.join(SPLITS)}, got "
                        f"{config.tasks.split!r}")
    if config.tasks.num_tasks < 0:
        raise UserError("config.tasks.num_tasks must be >= 0 (0: every task)")
    if not str(config.tasks.dir).strip():
        raise UserError("no task set: give --tasks=DIR (config.tasks.dir)")
    from sandmle.eval_sources import preflight
    preflight(config)


def _bound(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    out = {}
    for name in BOUND:
        v: Any = d
        for part in name.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        out[name] = json.loads(json.dumps(v))
    return out


def check_workdir_compatible(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                             ) -> None:
    """Refuses to add to a workdir holding an evaluation of another policy or settings."""
    path = Path(workdir) / STATE
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path} is unreadable ({e}); use a new --workdir") from None
    new = _bound(config)
    diff = [f"{k}: {stored.get(k)!r} -> {new[k]!r}" for k in BOUND if stored.get(k) != new[k]]
    if diff:
        raise UserError(f"{workdir} holds an evaluation with other settings "
                        f"({'; '.join(diff)[:600]}); use a new --workdir")


def _check_identity(workdir: Path, config: ml_collections.ConfigDict, identity: dict) -> None:
    path = workdir / STATE
    identity = json.loads(json.dumps(identity))
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("identity") != identity:
            old = stored.get("identity") or {}
            diff = [f"{k}: {old.get(k)!r} -> {identity.get(k)!r}" for k in
                    sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
            raise UserError(f"{workdir} holds an evaluation of another policy "
                            f"({'; '.join(diff)[:600]}); use a new --workdir")
        return
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps({"identity": identity, "config": _bound(config),
                               "created": time.time()}, indent=2))
    os.replace(tmp, path)


def read_results(workdir: str | os.PathLike) -> dict[tuple[str, int], dict]:
    """(task_id, seed) -> result record of the pairs an evaluation workdir has finished."""
    path = Path(workdir) / RESULTS
    out: dict[tuple[str, int], dict] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
            out[(r["task_id"], int(r["seed"]))] = r
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a kill: that pair runs again
    return out


def _append(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())


def _seed(*parts: int) -> int:
    import numpy as np
    return int(np.random.default_rng(parts).integers(2**31 - 1))


def chunks(tasks: list[str], seeds: int, size: int) -> list[tuple[int, int, list[str]]]:
    """(seed, chunk index, task dirs): every seed's tasks in fixed slices of `size`, so a
    rerun batches the pairs it still has to run as the first run would have."""
    return [(s, k, tasks[i:i + size]) for s in range(seeds)
            for k, i in enumerate(range(0, len(tasks), size))]


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Job `evaluate` (see the module docstring); returns the aggregated table."""
    import jax

    from sandmle import build, eval_sources, eval_table, metrics
    from sandmle.agent.rollout import Rollouts, TaskRef
    from sandmle.agent.trajectory import dumps
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    tasks = eval_sources.resolve_tasks(config.tasks.dir, config.tasks.split,
                                       config.tasks.num_tasks, work)
    seeds = int(config.eval.seeds)
    farm = build.farm(config)
    src = None
    try:
        src = eval_sources.build_source(config, work, tasks)
        _check_identity(work, config, src.identity)
        done = read_results(work)
        ids = {t: Path(t).name for t in tasks}
        total = len(tasks) * seeds
        finished = sum((ids[t], s) in done for t in tasks for s in range(seeds))
        logging.info("evaluating %s on %d tasks x %d seeds (%d of %d pairs already done)",
                     src.name, len(tasks), seeds, finished, total)
        rollouts = Rollouts(src.policy, src.tokenizer, farm, src.agent, src.rollout)
        primary = jax.process_index() == 0
        with metrics.progress(total, initial=finished, desc="eval", unit="traj") as bar:
            for s, k, part in chunks(tasks, seeds, int(config.eval.chunk_size)):
                todo = [t for t in part if (ids[t], s) not in done]
                if not todo:
                    continue
                refs = [TaskRef(t, group=tasks.index(t), sample=s) for t in todo]
                out = rollouts.run(refs, work / "eval_runs", seed=_seed(config.seed, 17, s, k),
                                   progress=bar)
                recs = [eval_table.record(t, s) for t in out.trajectories]
                if primary:
                    _append(work / TRAJECTORIES, [dumps(out.trajectories)])
                    _append(work / RESULTS, [json.dumps(r) + "\n" for r in recs])
                done.update({(r["task_id"], s): r for r in recs})
                valid = [r["valid"] for r in done.values()]
                bar.set_postfix(valid=f"{sum(valid) / len(valid):.2f}")
    finally:
        if src is not None:
            src.close()
        farm.close()
    records = [done[(ids[t], s)] for t in tasks for s in range(seeds)]
    table = eval_table.aggregate(records)
    table["policy"] = src.name
    table["identity"] = src.identity
    title = f"{src.name}: {len(tasks)} tasks x {seeds} seeds"
    if jax.process_index() == 0:
        (work / "eval.json").write_text(json.dumps(table, indent=2))
        (work / "eval.md").write_text(eval_table.markdown(table, title))
        print(eval_table.text(table, title), flush=True)
        if config.eval.report:
            from sandmle import report
            report.write_report(work)
    return table
