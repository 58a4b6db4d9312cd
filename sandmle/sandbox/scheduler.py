"""The farm's job queue: first come, first served, one job per workdir at a time.

A workdir is a trajectory's state; two of its jobs at once would race on its
files (and on its uid, which leftovers are killed by). Jobs of other workdirs
overtake a waiting one, so a busy trajectory never idles a worker.
"""

from __future__ import annotations

import collections
import threading
from typing import Any


class WorkdirQueue:
    """Items are (workdir, payload); take() hands out one whose workdir is idle."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: collections.deque[tuple[str, Any]] = collections.deque()
        self._busy: collections.Counter = collections.Counter()
        self._closing = False

    def put(self, workdir: str, payload: Any) -> None:
        with self._cond:
            self._pending.append((workdir, payload))
            self._cond.notify()

    def take(self) -> tuple[str, Any] | None:
        """Blocks for the next runnable item (its workdir marked busy); None once closed and empty."""
        with self._cond:
            while True:
                for i, (workdir, payload) in enumerate(self._pending):
                    if not self._busy[workdir]:
                        del self._pending[i]
                        self._busy[workdir] += 1
                        return workdir, payload
                if self._closing and not self._pending:
                    return None
                self._cond.wait()

    def done(self, workdir: str) -> None:
        with self._cond:
            self._busy[workdir] -= 1
            if self._busy[workdir] <= 0:
                del self._busy[workdir]
            self._cond.notify_all()

    def hold(self, workdir: str) -> None:
        """Waits until nothing of `workdir` is queued or running, then marks it busy."""
        with self._cond:
            while self._busy[workdir] or any(w == workdir for w, _ in self._pending):
                self._cond.wait()
            self._busy[workdir] += 1

    def close(self) -> None:
        """take() returns None once the queue is empty (queued work still runs)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
