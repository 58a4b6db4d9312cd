"""Shared pytest setup: every test process sees 8 fake CPU devices.

XLA reads `XLA_FLAGS` once, when jax initialises its backends, so the flag must be in
the environment before anything imports jax. pytest imports this conftest before it
collects any test module, and pytest-xdist workers import it too, so setting the flag
here (unless the caller already set a device count) gives every test, in every
worker, `jax.device_count() == 8` on CPU. Tests that need another device count run a
subprocess with their own `XLA_FLAGS`. Subprocesses started by tests inherit this
environment, so they see 8 devices as well.
"""

import os

_FLAG = "--xla_force_host_platform_device_count"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {_FLAG}=8").strip()
# Tests run on CPU even where an accelerator is present, so figures are comparable.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
