"""Pieces shared by every config file, in big_vision's style.

A config file defines `get_config(arg)`; `arg` is the text after the colon in
`--config=configs/x.py:variant=tiny,steps=10`. `parse_arg` turns it into a
ConfigDict of typed fields with defaults, so a config reads its knobs by name.
"""

from __future__ import annotations

import ast
from typing import Any

import ml_collections


def _coerce(name: str, raw: str, default: Any, typ: type) -> Any:
    """Converts the text `raw` to the type of `default` (or `typ`)."""
    if typ is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on", ""):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"config arg {name!r}: cannot read {raw!r} as a bool")
    if typ in (tuple, list):
        parts = [p for p in raw.split("+") if p]  # `a+b+c`: commas separate args.
        return typ(parts)
    try:
        return typ(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"config arg {name!r}: cannot read {raw!r} as {typ.__name__} "
            f"(default {default!r})") from e


def parse_arg(arg: str | None, lazy: bool = False, **spec: Any) -> ml_collections.ConfigDict:
    """Parses `key=value,key2,...` into a ConfigDict with defaults from `spec`.

    Each spec entry is either a default value (its type is the field's type) or a
    `(default, type)` pair. A bare `key` sets a bool field to True. Unknown keys raise
    unless `lazy` is set, in which case they are kept as strings (or literals).

    Args:
      arg: the text after the colon in `--config=path.py:ARG`; None or "" for defaults.
      lazy: keep unknown keys instead of raising.
      **spec: field name -> default, or (default, type).

    Returns:
      A ConfigDict holding every spec field, overridden by what `arg` names.
    """
    defaults, types = {}, {}
    for name, value in spec.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], type):
            defaults[name], types[name] = value
        else:
            defaults[name], types[name] = value, type(value)
    result = dict(defaults)
    for item in (arg or "").split(","):
        if not item.strip():
            continue
        key, _, raw = item.partition("=")
        key = key.strip()
        if key in types:
            typ = types[key]
            if typ is type(None):
                result[key] = raw
            else:
                result[key] = _coerce(key, raw, defaults[key], typ)
        elif lazy:
            try:
                result[key] = ast.literal_eval(raw) if raw else True
            except (ValueError, SyntaxError):
                result[key] = raw
        else:
            known = ", ".join(sorted(types)) or "(none)"
            raise ValueError(f"unknown config arg {key!r}; this config takes: {known}")
    return ml_collections.ConfigDict(result)


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks a config so that a misspelt override fails instead of adding a field."""
    config.lock()
    return config
