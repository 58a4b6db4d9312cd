"""The `checkpoint` config block, in a module light enough for config files to import.

`sandmle.checkpoint` (Orbax, JAX) re-exports it as `checkpoint.default_config`; a config
file imports this module instead so that loading a config, and refusing a bad one,
costs no JAX import.
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Checkpoint knobs (`config.checkpoint`)."""
    return ml_collections.ConfigDict({
        # "" = <workdir>/checkpoints; multi-host runs need storage every host sees
        # (e.g. gs://bucket/run/checkpoints; Orbax writes gs:// natively).
        "directory": "",
        "every_steps": 100,     # save every N steps (and always at the end)
        "max_to_keep": 3,       # keep the last N steps ...
        "keep_every": 0,        # ... plus every step divisible by K (0: none)
        "async_save": True,     # write in a background thread while training goes on
    })
