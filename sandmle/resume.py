"""Checks a run makes before it writes anything: the workdir, and what a resume may change.

`check_workdir` refuses a workdir that is a file or cannot be written, creating
nothing. `check_resume` compares a new config with the `config.json` an earlier run
left in the same workdir: the fields a config names in `resume_safe_fields` (default
`DEFAULT_RESUME_SAFE_FIELDS`) may change, e.g. the number of steps or the eval
cadence; any other change (model or data shape, tokenizer, task set, ...) is refused
with a one-line diff, so a resumed run never mixes two runs. `sandmle.jobs.run` calls
both for every job before the resolved config is written.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

import ml_collections
from absl import logging

from sandmle import config_lib
from sandmle.errors import UserError, one_line


class WorkdirError(UserError):
    """The workdir is a file, or it (or the folder it would go in) is not writable."""


class ResumeError(UserError):
    """The workdir holds a run whose config differs in a field that may not change."""


def _writable(folder: str) -> bool:
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        # An unnamed temporary file (O_TMPFILE): proves the folder takes writes even
        # for root, where os.access says yes to everything, and leaves no entry.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def check_workdir(workdir: str | os.PathLike | None, flag: str = "--workdir") -> str:
    """Raises WorkdirError unless `workdir` is (or can be made) a writable folder.

    Creates nothing. Object-store URLs (gs://...) are not checked. Returns the path.
    """
    if workdir is None or not os.fspath(workdir).strip():
        raise WorkdirError(f"{flag}=DIR is required")
    path = os.fspath(workdir)
    if "://" in path:
        return path
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"{flag} {path} is a file, not a directory; pass a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WorkdirError(f"cannot create {flag} {path}: {existing} is a file, not a "
                           f"directory")
    if not _writable(existing):
        what = "is not writable" if existing == os.path.abspath(path) else \
            f"cannot be created: {existing} is not writable"
        raise WorkdirError(f"{flag} {path} {what}; choose a folder you can write")
    return path


# Fields a resumed run may change (dotted names; "a" covers "a.*"; globs allowed).
# A config declares its own with a `resume_safe_fields` tuple, which replaces these.
DEFAULT_RESUME_SAFE_FIELDS: tuple[str, ...] = (
    "steps", "total_steps", "num_steps",      # train longer or shorter
    "log_every", "eval_every",                # logging / eval cadence
    "checkpoint.every_steps", "checkpoint.max_to_keep", "checkpoint.keep_every",
    "checkpoint.async_save",
    "mesh", "axis_rules",                     # checkpoints restore onto any mesh
    "multihost",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") or fnmatch.fnmatchcase(name, p)
               for p in patterns)


def resume_safe_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The fields `config` allows to change on resume (its own list or the default)."""
    declared = config.get("resume_safe_fields", None)
    fields = DEFAULT_RESUME_SAFE_FIELDS if declared is None else tuple(declared)
    return fields + ("resume_safe_fields",)


def config_changes(stored: dict[str, Any], config: ml_collections.ConfigDict
                   ) -> list[tuple[str, Any, Any]]:
    """(field, stored value, new value) for every field that differs."""
    new = _flatten(json.loads(config_lib.config_to_json(config)))
    old = _flatten(stored)
    missing = object()
    changes = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, missing), new.get(name, missing)
        if a != b:
            changes.append((name, "(absent)" if a is missing else a,
                            "(absent)" if b is missing else b))
    return changes


def _has_checkpoints(config: ml_collections.ConfigDict, workdir: str) -> bool:
    ckpt = config.get("checkpoint", None)
    directory = (ckpt.get("directory", "") if ckpt is not None else "") or \
        os.path.join(workdir, "checkpoints")
    if "://" in directory:
        return True  # cannot list cheaply: assume the earlier run saved
    if not os.path.isdir(directory):
        return False
    return any(name.isdigit() for name in os.listdir(directory))


def check_resume(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> list[str]:
    """Refuses to resume a run in `workdir` with a config that changes unsafe fields.

    Compares `config` with the `config.json` an earlier run left in `workdir`, before
    anything is written. Changes to fields matched by `resume_safe_fields(config)`
    are allowed and returned (their names); any other change raises. A workdir
    without a stored config, or whose earlier run saved no checkpoint, accepts any
    config.

    Raises:
      ResumeError: one line naming each refused field with its old and new value.
    """
    workdir = os.fspath(workdir)
    path = os.path.join(workdir, config_lib.CONFIG_JSON)
    if "://" in workdir or not os.path.exists(path):
        return []
    try:
        stored = config_lib.read_config_json(workdir)
    except (OSError, ValueError) as e:
        raise ResumeError(f"cannot read the stored config {path} ({one_line(e)}); "
                          f"restore or remove it, or use a new --workdir") from None
    changes = config_changes(stored, config)
    if not changes or not _has_checkpoints(config, workdir):
        return [name for name, _, _ in changes]
    safe = resume_safe_fields(config)
    refused = [(n, a, b) for n, a, b in changes if not _matches(n, safe)]
    if refused:
        diff = ", ".join(f"{n}: {a!r} -> {b!r}" for n, a, b in refused)
        raise ResumeError(
            f"{workdir} holds a run with a different config ({diff}); these fields "
            f"cannot change on resume (allowed: {', '.join(safe)}); use a new --workdir "
            f"or the stored --config={os.path.join(workdir, config_lib.CONFIG_PY)}")
    allowed = [name for name, _, _ in changes]
    logging.info("resuming %s with changed fields: %s", workdir, ", ".join(allowed))
    return allowed
