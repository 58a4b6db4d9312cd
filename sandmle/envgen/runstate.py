"""An envgen workdir across runs: resume what is there, refuse what does not match, never wipe.

`<workdir>/run.json` records the fingerprint of the settings that decide what each
candidate slot generates (seed, seeds, mix, scale, test sizes, verification, leaderboard,
roles, generator version). A rerun with the same fingerprint resumes: accepted tasks and
their manifest lines stay, finished slots are not run again, and the run continues until its
(possibly raised) targets. A different fingerprint, or envgen output without run.json, is
refused with one line; nothing in the workdir is deleted except envgen's own staging/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_collections

from sandmle.tasks.task import TaskError, dumps_json, load_task


class EnvgenError(SystemExit):
    """A run that cannot start or must stop; str() is the one-line reason, `code` the
    process exit status (2: bad config or workdir, 1: failing LLM endpoint, 130: Ctrl-C).
    It is a SystemExit so that both `sandmle-envgen` and `sandmle --config=...` end with
    that status and no traceback."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fingerprint(config: ml_collections.ConfigDict, generator_version: str) -> dict[str, Any]:
    """The settings that decide what a candidate slot generates."""
    dev = config.developer
    limits = dev.get("limits")
    return json.loads(json.dumps({
        "generator_version": generator_version,
        "seed": int(config.seed), "seed_ids": sorted(config.seed_ids or ()),
        "scale": config.scale, "test_size_scale": float(config.get("test_size_scale", 1.0)),
        "mix": config.mix.to_dict() if hasattr(config.mix, "to_dict") else dict(config.mix),
        "roles": dict(config.roles), "min_scored_solutions": int(config.min_scored_solutions),
        "verify": config.verify.to_dict(),
        "developer": {"max_solutions": int(dev.get("max_solutions", 0) or 0),
                      "solution_timeout_s": float(dev.solution_timeout_s),
                      "limits": limits.to_dict() if hasattr(limits, "to_dict") else limits},
    }, sort_keys=True, default=str))


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def read_manifest(path: Path) -> list[dict]:
    """Manifest rows; a line cut short by a kill is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def open_workdir(work: Path, config: ml_collections.ConfigDict, generator_version: str
                 ) -> list[dict]:
    """Prepares `work` and returns the manifest rows of an earlier run to resume from.

    Raises:
      EnvgenError: the workdir holds envgen output of other settings, or without run.json.
    """
    stamp = fingerprint(config, generator_version)
    run_file, manifest = work / "run.json", work / "manifest.jsonl"
    tasks = work / "tasks"
    if work.exists() and not work.is_dir():
        raise EnvgenError(f"--workdir {work} is a file, not a directory")
    if run_file.is_file():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))["fingerprint"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EnvgenError(f"{run_file} is not an envgen run file; use a new --workdir") from None
        changed = _diff(old, stamp)
        if changed:
            raise EnvgenError(f"--workdir {work} holds a run with other settings "
                              f"({'; '.join(changed[:3])}); rerun with those settings to "
                              "resume, or use a new --workdir")
    elif manifest.exists() or (tasks.is_dir() and any(tasks.iterdir())):
        raise EnvgenError(f"--workdir {work} holds envgen output without run.json (an older "
                          "run?); use a new --workdir")
    tasks.mkdir(parents=True, exist_ok=True)
    if not run_file.is_file():
        tmp = run_file.with_suffix(".tmp")
        tmp.write_text(dumps_json({"fingerprint": stamp}))
        os.replace(tmp, run_file)
    rows = []
    for row in read_manifest(manifest):
        if row.get("status") == "accepted":
            try:  # an accepted task that is gone or damaged is generated again
                load_task(tasks / row["task_id"])
            except TaskError:
                continue
        rows.append(row)
    return rows


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Rewrites the manifest (sorted by slot) atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n"
                           for r in sorted(rows, key=lambda r: r["index"])))
    os.replace(tmp, path)
