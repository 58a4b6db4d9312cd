r"""sandmle-inspect: what is inside a run's checkpoints and metrics, without the model code.

  sandmle-inspect WORKDIR                 steps, the newest good step's tree, config and
                                          metrics, and the run's metric files
  sandmle-inspect WORKDIR --step 200      the same at step 200
  sandmle-inspect WORKDIR/checkpoints/200 one step directory
  sandmle-inspect --diff A B              largest |a - b| per leaf of two checkpoints

PATH may be a workdir (holding `checkpoints/`), a checkpoint directory (holding step
folders) or one step folder. Shapes, dtypes and shardings come from Orbax's stored
metadata and the config and metrics from the JSON items, so nothing of the model is
imported. Every step's metadata is checked and the shown step's arrays are read
(`--noverify` skips that for big checkpoints): a damaged step is listed as corrupt
with the reason, a save that never finished as partial, and the newest good step is
shown instead. `--diff` reads the arrays onto this host's first device and compares
PRNG keys as keys (equal / different).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import flags

from sandmle import cli, config_lib, metrics

if TYPE_CHECKING:  # imported where used: a bad PATH is refused without loading JAX
    from sandmle import checkpoint
from sandmle.errors import UserError, one_line

TMP_MARK = ".orbax-checkpoint-tmp"  # Orbax's name for a step folder still being written


class InspectError(UserError):
    """A path that holds no checkpoint, or a step that cannot be read."""


@dataclasses.dataclass
class Location:
    """A checkpoint directory and, when PATH named one, a step."""
    directory: str
    step: int | None
    workdir: str | None = None


def locate(path: str) -> Location:
    """Resolves PATH (workdir, checkpoint directory or step folder)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise InspectError(f"{path} does not exist")
    base = os.path.basename(path.rstrip(os.sep))
    if base.isdigit() and os.path.isdir(os.path.join(path, "train_state")):
        return Location(os.path.dirname(path), int(base))
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return Location(os.path.join(path, "checkpoints"), None, workdir=path)
    if os.path.isdir(path) and any(n.split(".")[0].isdigit() for n in os.listdir(path)):
        return Location(path, None)
    raise InspectError(f"{path} holds no checkpoints (expected a workdir with "
                       f"checkpoints/, a checkpoint directory or a step folder)")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def _format_sharding(meta: Any) -> str:
    sharding = getattr(meta, "sharding", None)
    if sharding is None:
        return "-"
    spec = getattr(sharding, "partition_spec", None)
    names = getattr(sharding, "axis_names", None)
    if spec is not None and names is not None:
        sizes = np.asarray(sharding.shape).reshape(-1).tolist()
        mesh = ",".join(f"{a}={s}" for a, s in zip(names, sizes))
        dims = ", ".join("None" if d is None else repr(d) if isinstance(d, str)
                         else "(" + ",".join(map(repr, d)) + ")" for d in spec)
        return f"P({dims}) on {mesh}"
    if "SingleDevice" in type(sharding).__name__:
        return "single device"
    return type(sharding).__name__.replace("Metadata", "")


def _leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    import jax
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(p), leaf) for p, leaf in flat]


def _key_impls(manager: checkpoint.CheckpointManager, step: int) -> dict[str, str]:
    from sandmle import checkpoint
    internal = manager.read_json(step, "metadata").get(checkpoint._INTERNAL) or {}
    return dict(internal.get("key_impls", {}))


def tree_rows(manager: checkpoint.CheckpointManager, step: int) -> list[dict[str, Any]]:
    """One row per array: path, shape, dtype, bytes, sharding."""
    key_impls = _key_impls(manager, step)
    rows = []
    for path, meta in _leaves_with_paths(manager.tree_metadata(step)):
        shape = tuple(int(s) for s in (meta.shape or ()))
        dtype = np.dtype(meta.dtype)
        shown = str(dtype) + (f" (key<{key_impls[path]}> data)" if path in key_impls else "")
        rows.append({"path": path, "shape": shape, "dtype": shown,
                     "bytes": int(np.prod(shape, dtype=np.int64)) * dtype.itemsize,
                     "sharding": _format_sharding(meta)})
    return rows


def _read_step_arrays(manager: checkpoint.CheckpointManager, step: int
                      ) -> dict[str, np.ndarray]:
    import jax
    import orbax.checkpoint as ocp
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
        manager.tree_metadata(step))
    item = os.path.join(manager.step_dir(step), "train_state")
    restored = ocp.StandardCheckpointer().restore(item, abstract)
    return {p: np.asarray(x) for p, x in _leaves_with_paths(restored)}


def check_step(manager: checkpoint.CheckpointManager, step: int,
               read_arrays: bool = False) -> str | None:
    """Why `step` cannot be restored (one line), or None when it reads back.

    Always reads the JSON items and Orbax's array metadata; `read_arrays` also reads
    every array (what catches a truncated data file).
    """
    try:
        manager.read_json(step, "metadata")
        manager.read_json(step, "loop_state")
        tree_rows(manager, step)
        if read_arrays:
            _read_step_arrays(manager, step)
    except Exception as e:  # any reader error means the step is damaged
        return f"{type(e).__name__}: {one_line(e)}"[:300]
    return None


def _manager(location: Location) -> checkpoint.CheckpointManager:
    from sandmle import checkpoint
    try:
        return checkpoint.CheckpointManager(location.directory, read_only=True)
    except FileNotFoundError as e:
        raise InspectError(str(e)) from None


def resolve_step(location: Location, manager: checkpoint.CheckpointManager,
                 step: int | None = None, verify: bool = True) -> tuple[int, list[str]]:
    """The step to show and notes on newer steps that were passed over.

    A step that was asked for (by `step` or by PATH) must read back or this raises;
    otherwise the newest step that reads back is chosen.
    """
    asked = step if step is not None else location.step
    steps = manager.all_steps()
    if asked is not None:
        if asked not in steps:
            raise InspectError(f"no step {asked} in {location.directory}; steps: {steps}")
        why = check_step(manager, asked, read_arrays=verify)
        if why:
            raise InspectError(f"step {asked} in {location.directory} is corrupt: {why}")
        return asked, []
    notes = []
    for candidate in reversed(steps):
        why = check_step(manager, candidate, read_arrays=verify)
        if why is None:
            return candidate, notes
        notes.append(f"step {candidate} is corrupt ({why})")
    raise InspectError(f"no step in {location.directory} reads back: " +
                       ("; ".join(notes) if notes else "no finalized steps"))


def read_arrays(location: Location) -> dict[str, np.ndarray]:
    """Every array of one step as host numpy, keyed by tree path."""
    manager = _manager(location)
    step, _ = resolve_step(location, manager, verify=False)
    return _read_step_arrays(manager, step)


def diff(a: Location, b: Location) -> list[dict[str, Any]]:
    """Largest absolute difference per leaf; PRNG keys compared as keys.

    Each row: path, shape, max_abs_diff (None for keys and mismatches), note.
    """
    sides = []
    for loc in (a, b):
        manager = _manager(loc)
        step, _ = resolve_step(loc, manager, verify=False)
        try:
            sides.append((_read_step_arrays(manager, step), _key_impls(manager, step)))
        except Exception as e:  # damaged arrays: one line, not a traceback
            raise InspectError(f"step {step} in {loc.directory} is corrupt: "
                               f"{type(e).__name__}: {one_line(e)}"[:400]) from None
    (xa, keys_a), (xb, keys_b) = sides
    rows = []
    for path in sorted(set(xa) | set(xb)):
        if path not in xa or path not in xb:
            rows.append({"path": path, "shape": None, "max_abs_diff": None,
                         "note": "only in " + ("A" if path in xa else "B")})
            continue
        va, vb = xa[path], xb[path]
        if va.shape != vb.shape:
            rows.append({"path": path, "shape": va.shape, "max_abs_diff": None,
                         "note": f"shape {va.shape} vs {vb.shape}"})
            continue
        if path in keys_a or path in keys_b:
            # Key data are raw bits: a numeric difference between them means nothing.
            impl_a, impl_b = keys_a.get(path), keys_b.get(path)
            same = impl_a == impl_b and va.tobytes() == vb.tobytes()
            note = f"key<{impl_a or impl_b}>: {'equal' if same else 'different'}"
            if impl_a != impl_b:
                note += f" (implementations {impl_a} vs {impl_b})"
            rows.append({"path": path, "shape": va.shape, "max_abs_diff": None,
                         "note": note, "key": True, "equal": same})
            continue
        kind = np.float64 if va.dtype.kind in "fcV" or "bfloat16" in str(va.dtype) else np.int64
        delta = np.abs(va.astype(kind) - vb.astype(kind))
        rows.append({"path": path, "shape": va.shape,
                     "max_abs_diff": float(delta.max()) if delta.size else 0.0,
                     "note": "" if va.dtype == vb.dtype else f"dtype {va.dtype} vs {vb.dtype}"})
    return rows


# -- rendering ------------------------------------------------------------------

def _console() -> Any:
    from rich.console import Console
    # Wide when piped, so paths and shardings are not cut in logs and tests.
    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False)


def _steps_table(manager: checkpoint.CheckpointManager, shown: int | None,
                 statuses: dict[int, str | None], verified: bool) -> Any:
    from rich.table import Table
    table = Table(title=f"checkpoints in {manager.directory}")
    for col in ("step", "size", "metrics", "status"):
        table.add_column(col, overflow="fold")
    for step in manager.all_steps():
        why = statuses.get(step)
        shown_metrics = ""
        if why is None:
            meta = manager.read_json(step, "metadata")
            shown_metrics = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted((meta.get("metrics") or {}).items()))
            checked = "arrays read" if step == shown and verified else "metadata read"
            status = f"ok ({checked})"
        else:
            status = f"corrupt: {why}"
        table.add_row(str(step), _fmt_bytes(_dir_bytes(manager.step_dir(step))),
                      shown_metrics, status)
    for name in sorted(os.listdir(manager.directory)):
        path = os.path.join(manager.directory, name)
        if TMP_MARK in name:
            table.add_row(name.split(".")[0], _fmt_bytes(_dir_bytes(path)), "",
                          f"partial: the save never finished ({name})")
        elif ".corrupt-" in name:
            table.add_row(name.split(".")[0], _fmt_bytes(_dir_bytes(path)), "",
                          f"set aside as {name}")
    return table


def metric_files_summary(workdir: str) -> list[str]:
    """Lines on the run's metrics.jsonl and TensorBoard files (what survived a crash)."""
    lines = []
    jsonl = os.path.join(workdir, metrics.JSONL_NAME)
    if os.path.exists(jsonl):
        records = metrics.read_jsonl(jsonl)
        steps = [r.get("step") for r in records if isinstance(r.get("step"), int)]
        span = f", steps {min(steps)}..{max(steps)}" if steps else ""
        lines.append(f"metrics.jsonl: {len(records)} records{span}")
    try:
        events = metrics.read_scalar_events(workdir)
    except FileNotFoundError:
        events = None
    except ImportError as e:
        lines.append(f"tensorboard: not read ({e})")
        events = None
    if events:
        last = max(step for values in events.values() for step, _ in values)
        count = max(len(values) for values in events.values())
        lines.append(f"tensorboard: {len(events)} tags, up to {count} points each, "
                     f"last step {last}")
    return lines


def show(path: str, step: int | None = None, verify: bool = True) -> int:
    """Prints the steps, and the tree, config and metrics of one step; returns it."""
    from rich.table import Table
    loc = locate(path)
    manager = _manager(loc)
    console = _console()
    step, notes = resolve_step(loc, manager, step, verify=verify)
    statuses = {s: check_step(manager, s) for s in manager.all_steps() if s != step}
    statuses[step] = None
    for note in notes:  # newer damaged steps keep the reason found while choosing
        bad = int(note.split()[1])
        statuses[bad] = note.split("(", 1)[1].rstrip(")")
    console.print(_steps_table(manager, step, statuses, verify))
    if notes:
        print(f"sandmle-inspect: newest step is corrupt; showing step {step} (the newest "
              f"that reads back)", file=sys.stderr)
    rows = tree_rows(manager, step)
    table = Table(title=f"train_state at step {step}")
    for col in ("path", "shape", "dtype", "bytes", "sharding"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["path"], str(r["shape"]), r["dtype"], _fmt_bytes(r["bytes"]),
                      r["sharding"])
    console.print(table)
    total = sum(r["bytes"] for r in rows)
    count = sum(int(np.prod(r["shape"], dtype=np.int64)) for r in rows)
    console.print(f"{len(rows)} arrays, {count:,} values, {_fmt_bytes(total)}")
    meta = manager.read_json(step, "metadata")
    console.print(f"[bold]metrics at step {step}[/bold]")
    console.print_json(json.dumps(meta.get("metrics") or {}))
    console.print(f"[bold]loop state at step {step}[/bold]")
    console.print_json(json.dumps(manager.read_json(step, "loop_state")))
    console.print(f"[bold]config at step {step}[/bold]")
    console.print_json(json.dumps(meta.get("config")))
    if loc.workdir:
        console.print("[bold]metric files[/bold]")
        for line in metric_files_summary(loc.workdir) or ["none"]:
            console.print(line, highlight=False)
    return step


def show_diff(path_a: str, path_b: str) -> list[dict[str, Any]]:
    """Prints (and returns) the largest absolute difference per leaf."""
    from rich.table import Table
    loc_a, loc_b = locate(path_a), locate(path_b)
    step_a, _ = resolve_step(loc_a, _manager(loc_a), verify=False)
    step_b, _ = resolve_step(loc_b, _manager(loc_b), verify=False)
    rows = diff(Location(loc_a.directory, step_a), Location(loc_b.directory, step_b))
    table = Table(title=f"max |A - B| per leaf\nA = {path_a} (step {step_a})\n"
                        f"B = {path_b} (step {step_b})")
    for col in ("path", "shape", "max_abs_diff", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        d = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.6g}"
        table.add_row(r["path"], str(r["shape"]), d, r["note"])
    console = _console()
    console.print(table)
    worst = max((r["max_abs_diff"] for r in rows if r["max_abs_diff"] is not None),
                default=0.0)
    keys = [r for r in rows if r.get("key")]
    keys_note = (f"; PRNG keys: {sum(r['equal'] for r in keys)} equal, "
                 f"{sum(not r['equal'] for r in keys)} different") if keys else ""
    console.print(f"A = step {step_a}, B = step {step_b}; largest difference over all "
                  f"numeric leaves: {worst:.6g}{keys_note}", highlight=False)
    return rows


FLAGS = flags.FLAGS
flags.DEFINE_integer("step", None, "Step to show (default: PATH's step or the newest "
                     "that reads back).")
flags.DEFINE_bool("diff", False, "Compare two checkpoints: sandmle-inspect --diff A B.")
flags.DEFINE_bool("verify", True, "Read every array of the shown step (catches truncated "
                  "data files); --noverify checks metadata only (big checkpoints).")


def main(argv: list[str]) -> None:
    config_lib.quiet_library_logs(min_level=40)  # read-only notices are expected here
    # A corrupt array fails its read, and the step's other reads end in futures nobody
    # awaits; asyncio logs those when they are collected, after this command has already
    # said in one line which step is corrupt.
    config_lib.quiet_library_logs(("asyncio",), min_level=50)
    args = argv[1:]
    if FLAGS.diff:
        if len(args) != 2:
            raise UserError("--diff needs two checkpoint paths: --diff A B")
        show_diff(*args)
    else:
        if len(args) != 1:
            raise UserError("give one PATH: sandmle-inspect PATH [--step N] | --diff A B")
        show(args[0], FLAGS.step, verify=FLAGS.verify)


def run() -> None:
    """Console script `sandmle-inspect`."""
    cli.run_app(main, prog="sandmle-inspect", doc=__doc__)


if __name__ == "__main__":
    run()
