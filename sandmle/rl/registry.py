"""A tiny name -> function registry, tunix style: configs pick algorithms by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Maps names to functions; `get` names the known choices when a name is wrong."""

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, Callable[..., Any]] = {}

    def register(self, *names: str) -> Callable[[F], F]:
        """Decorator registering a function under one or more names."""
        def wrap(fn: F) -> F:
            for name in names:
                if name in self._fns:
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
                self._fns[name] = fn
            return fn
        return wrap

    def get(self, name: str) -> Callable[..., Any]:
        """Returns the function registered as `name`."""
        try:
            return self._fns[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of {sorted(self._fns)}") from None

    def names(self) -> list[str]:
        return sorted(self._fns)

    def __contains__(self, name: str) -> bool:
        return name in self._fns
