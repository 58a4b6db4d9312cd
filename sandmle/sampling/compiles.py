"""XLA compiles counted by the thread that ran them, from JAX's monitoring events.

    c0 = compiles.counts()
    ...                                   # run the engine
    n = compiles.counts()["foreground"] - c0["foreground"]

A foreground compile (the main thread) stalls every row the engine is decoding; the
engine's background compiles (engine._compiler) do not. A trace count misses a compile
whose jaxpr was cached but whose executable was not, so benchmarks count these.
"""

from __future__ import annotations

import functools
import threading

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"
_COUNTS = {"foreground": 0, "foreground_s": 0.0, "background": 0, "background_s": 0.0}
_LOCK = threading.Lock()


def _listen(name: str, secs: float, **kwargs) -> None:
    if name != _EVENT:
        return
    where = ("foreground" if threading.current_thread() is threading.main_thread()
             else "background")
    with _LOCK:
        _COUNTS[where] += 1
        _COUNTS[where + "_s"] += secs


@functools.cache
def _register() -> None:
    jax.monitoring.register_event_duration_secs_listener(_listen)


def counts() -> dict:
    """Compiles (and their seconds) since the first call, by thread: 'foreground' (the
    main thread), 'background' (any other)."""
    _register()
    with _LOCK:
        return dict(_COUNTS)
