"""Metrics: one writer fanning out to TensorBoard, JSON lines and the console.

`MetricWriter(workdir)` writes every scalar three ways: TensorBoard event files
(tensorboardX, no TensorFlow needed) under `<workdir>/tensorboard/`, one JSON object
per call appended to `<workdir>/metrics.jsonl`, and a one-line summary through absl
logging. In a multi-host run only process 0 writes; the other processes get a writer
whose calls do nothing, so training code never branches on the process index.

`progress(total)` is the progress bar for long loops (tqdm: count, rate, ETA).
`read_jsonl` and `read_scalar_events` read the two files back (tests, plots).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import struct
import time
import uuid
from collections.abc import Iterator, Mapping
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


class MetricWriter:
    """Writes scalars to TensorBoard, `metrics.jsonl` and the console.

    Args:
      workdir: run directory; created if missing.
      tensorboard: write TensorBoard event files under `<workdir>/tensorboard/`.
      jsonl: append to `<workdir>/metrics.jsonl`.
      console: log a one-line summary per `write_scalars` call.
      enabled: write at all; default: only on process 0 of a multi-host run.
    """

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True,
                 jsonl: bool = True, console: bool = True,
                 enabled: bool | None = None) -> None:
        self.workdir = os.fspath(workdir)
        self.enabled = is_primary_process() if enabled is None else bool(enabled)
        self._console = console
        self._tb = None
        self._jsonl = None
        if not self.enabled:
            return
        os.makedirs(self.workdir, exist_ok=True)
        if tensorboard:
            from tensorboardX import SummaryWriter
            # tensorboardX names files by the second: a run restarted within the
            # same second would overwrite the earlier file without a unique suffix.
            self._tb = SummaryWriter(os.path.join(self.workdir, TENSORBOARD_DIR),
                                     flush_secs=10,
                                     filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")
        if jsonl:
            # Line-buffered append: a resumed run continues the same file, and a
            # killed run loses at most the line being written.
            self._jsonl = open(os.path.join(self.workdir, JSONL_NAME), "a",
                               buffering=1, encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes `scalars` (name -> real scalar) at `step`."""
        if not self.enabled or not scalars:
            return
        values = {name: _to_float(name, v) for name, v in scalars.items()}
        if self._tb is not None:
            for name, v in values.items():
                self._tb.add_scalar(name, v, global_step=int(step))
        if self._jsonl is not None:
            record = {"step": int(step), "time": time.time()}
            record.update({k: _json_number(v) for k, v in values.items()})
            self._jsonl.write(json.dumps(record) + "\n")
        if self._console:
            body = "  ".join(f"{k}={v:.6g}" for k, v in values.items())
            logging.info("[step %d] %s", int(step), body)

    def write_text(self, step: int, tag: str, text: str) -> None:
        """Writes a text summary (TensorBoard text tab and the console)."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_text(tag, text, global_step=int(step))
        if self._console:
            logging.info("[step %d] %s: %s", int(step), tag, text)

    def flush(self) -> None:
        """Pushes buffered events to disk."""
        if self._tb is not None:
            self._tb.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

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


def _iter_records(path: str) -> Iterator[bytes]:
    """Yields the payloads of a TFRecord file, checking each CRC."""
    from tensorboardX.crc32c import crc32c

    def masked(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    with open(path, "rb") as f:
        while True:
            header = f.read(8)
            if len(header) < 8:
                return
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", f.read(4))
            if header_crc != masked(header):
                raise ValueError(f"{path}: corrupt record header")
            data = f.read(length)
            (data_crc,) = struct.unpack("<I", f.read(4))
            if len(data) < length or data_crc != masked(data):
                raise ValueError(f"{path}: truncated or corrupt record")
            yield data


def read_scalar_events(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Reads every scalar from the TensorBoard event files under `logdir`.

    Works without TensorFlow or TensorBoard (tensorboardX's protobufs). A workdir
    is accepted too (its `tensorboard/` folder is read).

    Returns:
      tag -> list of (step, value), in the order they were written.
    """
    from tensorboardX.proto import event_pb2
    logdir = os.fspath(logdir)
    if os.path.isdir(os.path.join(logdir, TENSORBOARD_DIR)):
        logdir = os.path.join(logdir, TENSORBOARD_DIR)
    found: dict[str, list[tuple[float, int, int, float]]] = {}
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(logdir)
                   for name in names if "tfevents" in name)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {logdir}")
    order = 0
    for path in files:
        for payload in _iter_records(path):
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    order += 1
                    found.setdefault(value.tag, []).append(
                        (event.wall_time, order, event.step, value.simple_value))
    # Files of a resumed run may share a timestamp in their names: order by wall time.
    return {tag: [(step, v) for _, _, step, v in sorted(items)]
            for tag, items in found.items()}
