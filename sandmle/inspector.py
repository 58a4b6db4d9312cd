r"""`sandmle-inspect`: what is inside a workdir's checkpoints, without the model code.

  sandmle-inspect WORKDIR                 steps, then the newest step's tree, config, metrics
  sandmle-inspect WORKDIR --step 200      the same at step 200
  sandmle-inspect WORKDIR/checkpoints/200 one step directory
  sandmle-inspect --diff A B              largest |a - b| per leaf of two checkpoints

PATH may be a workdir (holding `checkpoints/`), a checkpoint directory (holding step
folders) or one step folder. Shapes, dtypes and shardings come from Orbax's stored
metadata and the config and metrics from the JSON items, so nothing of the model is
imported; `--diff` reads the arrays onto this host's first device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import numpy as np
from absl import app, flags

from sandmle import checkpoint, config_lib


@dataclasses.dataclass
class Location:
    """A checkpoint directory and, when PATH named one, a step."""
    directory: str
    step: int | None


def locate(path: str) -> Location:
    """Resolves PATH (workdir, checkpoint directory or step folder)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    base = os.path.basename(path.rstrip(os.sep))
    if base.isdigit() and os.path.isdir(os.path.join(path, "train_state")):
        return Location(os.path.dirname(path), int(base))
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return Location(os.path.join(path, "checkpoints"), None)
    if any(name.isdigit() for name in os.listdir(path)):
        return Location(path, None)
    raise FileNotFoundError(f"{path} holds no checkpoints (expected a workdir with "
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


def tree_rows(manager: checkpoint.CheckpointManager, step: int) -> list[dict[str, Any]]:
    """One row per array: path, shape, dtype, bytes, sharding."""
    internal = manager.read_json(step, "metadata").get(checkpoint._INTERNAL) or {}
    key_impls = internal.get("key_impls", {})
    rows = []
    for path, meta in _leaves_with_paths(manager.tree_metadata(step)):
        shape = tuple(int(s) for s in (meta.shape or ()))
        dtype = np.dtype(meta.dtype)
        shown = str(dtype) + (f" (key<{key_impls[path]}> data)" if path in key_impls else "")
        rows.append({"path": path, "shape": shape, "dtype": shown,
                     "bytes": int(np.prod(shape, dtype=np.int64)) * dtype.itemsize,
                     "sharding": _format_sharding(meta)})
    return rows


def read_arrays(location: Location) -> dict[str, np.ndarray]:
    """Every array of one step as host numpy, keyed by tree path."""
    import jax
    import orbax.checkpoint as ocp
    manager = checkpoint.CheckpointManager(location.directory, read_only=True)
    step = location.step if location.step is not None else manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint steps in {location.directory}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
        manager.tree_metadata(step))
    item = os.path.join(manager.step_dir(step), "train_state")
    restored = ocp.StandardCheckpointer().restore(item, abstract)
    return {p: np.asarray(x) for p, x in _leaves_with_paths(restored)}


def diff(a: Location, b: Location) -> list[dict[str, Any]]:
    """Largest absolute difference per leaf (None where a leaf is missing/mismatched)."""
    xa, xb = read_arrays(a), read_arrays(b)
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


def _steps_table(manager: checkpoint.CheckpointManager) -> Any:
    from rich.table import Table
    table = Table(title=f"checkpoints in {manager.directory}")
    for col in ("step", "size", "metrics", "status"):
        table.add_column(col)
    for step in manager.all_steps():
        try:
            meta = manager.read_json(step, "metadata")
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in sorted((meta.get("metrics") or {}).items()))
            status = "ok"
        except Exception as e:  # a damaged step is listed, not fatal
            shown, status = "", f"unreadable: {type(e).__name__}"
        table.add_row(str(step), _fmt_bytes(_dir_bytes(manager.step_dir(step))), shown, status)
    for name in sorted(os.listdir(manager.directory)):
        if ".corrupt-" in name:
            table.add_row(name.split(".")[0], _fmt_bytes(_dir_bytes(
                os.path.join(manager.directory, name))), "", f"set aside as {name}")
    return table


def show(path: str, step: int | None = None) -> None:
    """Prints the steps, and the tree, config and metrics of one step."""
    from rich.table import Table
    loc = locate(path)
    manager = checkpoint.CheckpointManager(loc.directory, read_only=True)
    console = _console()
    console.print(_steps_table(manager))
    step = step if step is not None else loc.step if loc.step is not None \
        else manager.latest_step()
    if step is None:
        console.print("no finalized checkpoint steps")
        return
    if step not in manager.all_steps():
        raise FileNotFoundError(f"no step {step} in {loc.directory}; steps: "
                                f"{manager.all_steps()}")
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


def show_diff(path_a: str, path_b: str) -> list[dict[str, Any]]:
    """Prints (and returns) the largest absolute difference per leaf."""
    from rich.table import Table
    rows = diff(locate(path_a), locate(path_b))
    table = Table(title=f"max |A - B| per leaf\nA = {path_a}\nB = {path_b}")
    for col in ("path", "shape", "max_abs_diff", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        d = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.6g}"
        table.add_row(r["path"], str(r["shape"]), d, r["note"])
    console = _console()
    console.print(table)
    worst = max((r["max_abs_diff"] for r in rows if r["max_abs_diff"] is not None),
                default=0.0)
    console.print(f"largest difference over all leaves: {worst:.6g}")
    return rows


FLAGS = flags.FLAGS
flags.DEFINE_integer("step", None, "Step to show (default: PATH's step or the newest).")
flags.DEFINE_bool("diff", False, "Compare two checkpoints: sandmle-inspect --diff A B.")


def main(argv: list[str]) -> None:
    config_lib.quiet_library_logs(min_level=40)  # read-only notices are expected here
    args = argv[1:]
    try:
        if FLAGS.diff:
            if len(args) != 2:
                raise app.UsageError("--diff needs two checkpoint paths: --diff A B")
            show_diff(*args)
        else:
            if len(args) != 1:
                raise app.UsageError("usage: sandmle-inspect PATH [--step N] | --diff A B")
            show(args[0], FLAGS.step)
    except (FileNotFoundError, checkpoint.CheckpointError) as e:
        print(f"sandmle-inspect: {e}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console script `sandmle-inspect`."""
    app.run(main)


if __name__ == "__main__":
    run()
