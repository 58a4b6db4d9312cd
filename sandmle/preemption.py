"""Preemption: SIGTERM and Ctrl-C end a training loop at a step boundary, saved.

A job's loop runs inside a `PreemptionGuard` and asks it once per step, on every
process, whether to stop:

    with preemption.PreemptionGuard() as guard:
        for step in range(start + 1, total + 1):
            state = train_step(state, batch)
            if guard.should_stop(step):
                ckpt.save(step, state, ...)
                guard.announce(step)
                break

The process then returns normally and exits 0; rerunning the same command resumes
from that step. A second Ctrl-C while the loop is still working towards the boundary
raises KeyboardInterrupt (the user really wants out).

One host: the guard installs SIGTERM/SIGINT handlers that only set a flag, and puts
the previous handlers back on exit. Several hosts (`jax.distributed` initialised):
every process must stop at the same step, or the collectives of the save hang.
JAX's coordination service already listens for SIGTERM (a preemption notice) and
agrees on a step with all processes; `should_stop` is its sync point
(`jax.experimental.multihost_utils.reached_preemption_sync_point`, the same one
Orbax's `CheckpointManager.reached_preemption` uses), and Ctrl-C is turned into a
SIGTERM to this process so it takes the same path. Where the preemption service is
off, a signal sets a local flag that all processes OR together every step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from absl import logging

DEFAULT_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


def _jax_sync_available() -> bool:
    """True when jax.distributed runs with its preemption sync manager."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import distributed  # the only place the manager is exposed
    except ImportError:
        return False
    state = distributed.global_state
    return (getattr(state, "client", None) is not None
            and getattr(state, "preemption_sync_manager", None) is not None)


def _process_count() -> int:
    if "jax" not in sys.modules:
        return 1
    import jax
    return jax.process_count()


class PreemptionGuard:
    """Turns SIGTERM / Ctrl-C into "stop at the next step boundary".

    Args:
      signals: the signals that request a stop (default SIGTERM and SIGINT).
      multihost: force the multi-process protocol on or off (default: on when
        `jax.process_count() > 1`).
    """

    def __init__(self, signals: Sequence[int] = DEFAULT_SIGNALS, *,
                 multihost: bool | None = None) -> None:
        self.signals = tuple(signals)
        self._multihost = multihost
        self._previous: dict[int, Any] = {}
        self._received: str | None = None
        self._interrupts = 0
        self._use_jax_sync = False

    # -- context ---------------------------------------------------------------
    def __enter__(self) -> "PreemptionGuard":
        multihost = _process_count() > 1 if self._multihost is None else self._multihost
        self._use_jax_sync = multihost and _jax_sync_available()
        self._is_multihost = multihost
        if threading.current_thread() is not threading.main_thread():
            # Signal handlers live in the main thread only; a loop run from another
            # thread (tests, notebooks) still stops on the multi-host sync point.
            logging.info("PreemptionGuard outside the main thread: no signal handlers")
            return self
        for sig in self.signals:
            if self._use_jax_sync and sig == signal.SIGTERM:
                continue  # JAX's coordination service owns SIGTERM
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt  # a second Ctrl-C: leave now
        if self._received is None:
            self._received = name
            hint = " (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""
            print(f"{name} received: saving at the next step boundary{hint}",
                  file=sys.stderr, flush=True)
        if self._use_jax_sync and signum != signal.SIGTERM:
            # Route through JAX's preemption notice so every process agrees on a step.
            os.kill(os.getpid(), signal.SIGTERM)

    # -- the loop's questions --------------------------------------------------------
    @property
    def requested(self) -> bool:
        """A stop signal reached this process (it may not have reached a boundary yet)."""
        return self._received is not None

    @property
    def received(self) -> str | None:
        """The name of the signal that requested the stop, if any."""
        return self._received

    def request(self, reason: str = "request") -> None:
        """Asks for a stop at the next boundary as a signal would (tests, callbacks)."""
        if self._received is None:
            self._received = reason
        if self._use_jax_sync:
            os.kill(os.getpid(), signal.SIGTERM)

    def should_stop(self, step: int) -> bool:
        """True when the loop should save `step` and stop.

        Call it once per step on every process: on several hosts it is a sync point
        and all processes answer True at the same step.
        """
        if self._use_jax_sync:
            from jax.experimental import multihost_utils
            stop = bool(multihost_utils.reached_preemption_sync_point(int(step)))
            if stop and self._received is None:
                self._received = "preemption notice"
            return stop
        if self._is_multihost:
            import numpy as np
            from jax.experimental import multihost_utils
            flags = multihost_utils.process_allgather(np.int32(self._received is not None))
            stop = bool(np.any(flags))
            if stop and self._received is None:
                self._received = "a signal to another process"
            return stop
        return self._received is not None

    def stop_line(self, step: int) -> str:
        """The one line a stopped job prints."""
        why = self._received or "a stop request"
        return (f"stopped by {why} at step {step}: checkpoint saved; run the same command "
                f"again to resume")

    def announce(self, step: int) -> str:
        """Prints `stop_line(step)` on stderr (process 0 only) and returns it."""
        line = self.stop_line(step)
        if "jax" not in sys.modules or sys.modules["jax"].process_index() == 0:
            print(line, file=sys.stderr, flush=True)
        return line
