"""Metrics: one writer fanning out to TensorBoard, JSON lines and the console.

`MetricWriter(workdir)` writes every scalar three ways: TensorBoard event files
(tensorboardX's event-file writer, no TensorFlow needed) under
`<workdir>/tensorboard/`, one JSON object per call appended to
`<workdir>/metrics.jsonl`, and a one-line summary through absl logging. In a
multi-host run only process 0 writes; the other processes get a writer whose calls
do nothing, so training code never branches on the process index.

Crash safety: each metrics.jsonl line reaches the OS as it is written, and event
records are written synchronously (no background queue to lose), pushed to disk at
least every `flush_secs` and on every `flush()`; a job flushes whenever it saves a
checkpoint, so after `kill -9` both files hold at least every step up to the newest
checkpoint. A resumed job passes `resume_step=<restored step>`: metrics.jsonl is
rewound to that step (later lines, written after the checkpoint, are dropped) and
the new event file starts with TensorBoard's purge marker (a SessionLog.START at
`resume_step + 1`), so neither TensorBoard nor `read_scalar_events` shows a step twice.

`progress(total)` is the progress bar for long loops (tqdm: count, rate, ETA).
`read_jsonl`, `read_scalar_events` (TensorBoard's own EventAccumulator, tolerant of a
truncated last record) and `final_metrics` read the files back.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def is_primary_process() -> bool:
    """True on process 0 (always true on a single host)."""
    import jax
    return jax.process_index() == 0


def _to_float(name: str, value: Any) -> float:
    """A Python float from a scalar (int, float, numpy or jax scalar)."""
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return float(value)
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"metric {name!r} must be a real scalar, got {arr.dtype} "
                        f"with shape {arr.shape}")
    return float(arr.reshape(()))


def _json_number(x: float) -> float | str:
    # JSON has no NaN/inf; keep them readable instead of writing invalid JSON.
    return x if math.isfinite(x) else repr(x)


def rewind_jsonl(path: str | os.PathLike, step: int) -> int:
    """Drops the records of `metrics.jsonl` past `step` (and a partial last line).

    The file is replaced atomically, and only when something is dropped. Returns the
    number of lines dropped.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, JSONL_NAME)
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
                keep = line.endswith("\n") and int(record.get("step", 0)) <= step
            except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
                keep = False
            if keep:
                kept.append(line)
            elif line.strip():
                dropped += 1
    if dropped:
        tmp = f"{path}.rewind-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


class MetricWriter:
    """Writes scalars to TensorBoard, `metrics.jsonl` and the console.

    Args:
      workdir: run directory; created if missing.
      resume_step: the step a resumed run restored (0 for a fresh start in a used
        workdir); metrics past it are dropped from metrics.jsonl and hidden from
        TensorBoard (purge marker). None: append without rewinding.
      tensorboard: write TensorBoard event files under `<workdir>/tensorboard/`.
      jsonl: append to `<workdir>/metrics.jsonl`.
      console: log a one-line summary per `write_scalars` call.
      enabled: write at all; default: only on process 0 of a multi-host run.
      flush_secs: push buffered events to disk when a write comes this long after
        the last flush (0: after every write).
    """

    def __init__(self, workdir: str | os.PathLike, *, resume_step: int | None = None,
                 tensorboard: bool = True, jsonl: bool = True, console: bool = True,
                 enabled: bool | None = None, flush_secs: float = 5.0) -> None:
        self.workdir = os.fspath(workdir)
        self.enabled = is_primary_process() if enabled is None else bool(enabled)
        self.flush_secs = float(flush_secs)
        self._console = console
        self._tb = None
        self._jsonl = None
        self._last_flush = time.monotonic()
        if not self.enabled:
            return
        os.makedirs(self.workdir, exist_ok=True)
        if resume_step is not None:
            dropped = rewind_jsonl(self.workdir, int(resume_step)) if jsonl else 0
            if dropped:
                logging.info("metrics.jsonl rewound to step %d: dropped %d records written "
                             "after that checkpoint", resume_step, dropped)
        if tensorboard:
            from tensorboardX.event_file_writer import EventsWriter
            logdir = os.path.join(self.workdir, TENSORBOARD_DIR)
            os.makedirs(logdir, exist_ok=True)
            # File names sort in creation order (seconds, then nanoseconds), which is
            # the order readers replay them, so a resume's purge marker comes after
            # the run it trims.
            self._tb = EventsWriter(os.path.join(logdir, "events"),
                                    filename_suffix=f".{time.time_ns()}.{os.getpid()}")
            if resume_step is not None:
                from tensorboardX.proto.event_pb2 import Event, SessionLog
                self._tb.write_event(Event(
                    wall_time=time.time(), step=int(resume_step) + 1,
                    session_log=SessionLog(status=SessionLog.START)))
        if jsonl:
            # Line-buffered append: each record reaches the OS as it is written.
            self._jsonl = open(os.path.join(self.workdir, JSONL_NAME), "a",
                               buffering=1, encoding="utf-8")

    def _event(self, step: int, summary: Any) -> None:
        from tensorboardX.proto.event_pb2 import Event
        self._tb.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes `scalars` (name -> real scalar) at `step`."""
        if not self.enabled or not scalars:
            return
        values = {name: _to_float(name, v) for name, v in scalars.items()}
        if self._tb is not None:
            from tensorboardX.proto.summary_pb2 import Summary
            self._event(step, Summary(value=[Summary.Value(tag=name, simple_value=v)
                                             for name, v in values.items()]))
        if self._jsonl is not None:
            record = {"step": int(step), "time": time.time()}
            record.update({k: _json_number(v) for k, v in values.items()})
            self._jsonl.write(json.dumps(record) + "\n")
        if self._console:
            body = "  ".join(f"{k}={v:.6g}" for k, v in values.items())
            logging.info("[step %d] %s", int(step), body)
        self._maybe_flush()

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Writes a text summary (TensorBoard text tab and the console)."""
        if not self.enabled:
            return
        if self._tb is not None:
            from tensorboardX.summary import text as text_summary
            self._event(step, text_summary(tag, text))
        if self._console:
            logging.info("[step %d] %s: %s", int(step), tag, text)
        self._maybe_flush()

    def flush(self) -> None:
        """Pushes everything written so far to disk (call it with every checkpoint)."""
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flushes and closes every sink; later writes are dropped."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        self.enabled = False

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: int | None, *, desc: str = "", initial: int = 0,
             enabled: bool | None = None, unit: str = "step", **tqdm_kwargs: Any) -> Any:
    """A tqdm progress bar with count, rate and ETA; silent off process 0.

    Use as `with progress(n) as bar: ... bar.update(1); bar.set_postfix(loss=...)`.
    """
    from tqdm.auto import tqdm
    if enabled is None:
        enabled = is_primary_process()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                           "[{elapsed}<{remaining}, {rate_fmt}{postfix}]",
                **tqdm_kwargs)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads `metrics.jsonl` (a workdir or the file) into a list of records."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, JSONL_NAME)
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                # A run killed mid-write leaves a partial last line; say where.
                logging.warning("%s:%d: skipping unreadable line (%s)", path, lineno, e)
    return records


def read_scalar_events(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Reads every scalar from the TensorBoard event files under `logdir`.

    Uses TensorBoard's EventAccumulator (no TensorFlow needed), which reads a
    truncated last record of a killed run as the end of the file and drops the steps
    a resumed run's purge marker hides, as TensorBoard does. A workdir is accepted too
    (its `tensorboard/` folder is read).

    Returns:
      tag -> list of (step, value), in the order they were written.

    Raises:
      FileNotFoundError: no event files under `logdir`.
      ImportError: TensorBoard is not installed (`pip install 'sandmle[tensorboard]'`).
    """
    logdir = os.fspath(logdir)
    if os.path.isdir(os.path.join(logdir, TENSORBOARD_DIR)):
        logdir = os.path.join(logdir, TENSORBOARD_DIR)
    if not os.path.isdir(logdir) or not any(
            "tfevents" in name for _, _, names in os.walk(logdir) for name in names):
        raise FileNotFoundError(f"no TensorBoard event files under {logdir}")
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:
        raise ImportError("reading event files needs TensorBoard: "
                          "pip install 'sandmle[tensorboard]'") from e
    import logging as std_logging
    # The accumulator warns for every purge marker; here a purge is the expected
    # trace of a resumed run.
    std_logging.getLogger("tensorboard").setLevel(std_logging.ERROR)
    out: dict[str, list[tuple[int, float]]] = {}
    runs = sorted({root for root, _, names in os.walk(logdir)
                   if any("tfevents" in n for n in names)})
    for run_dir in runs:
        acc = event_accumulator.EventAccumulator(
            run_dir, size_guidance={event_accumulator.SCALARS: 0},
            purge_orphaned_data=True)
        acc.Reload()
        for tag in acc.Tags()[event_accumulator.SCALARS]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def final_metrics(workdir: str | os.PathLike) -> dict[str, Any]:
    """The last value of every metric in a run's metrics.jsonl, and its step.

    Returns {} when the run wrote no metrics.
    """
    path = os.path.join(os.fspath(workdir), JSONL_NAME)
    if not os.path.exists(path):
        return {}
    final: dict[str, Any] = {}
    for record in read_jsonl(path):
        final.update({k: v for k, v in record.items() if k != "time"})
    return final
