"""Default configuration of the sandbox farm (the run config's `farm` section)."""

from __future__ import annotations

import dataclasses

import ml_collections

from sandmle.sandbox.job import Limits

# What typical solution scripts import; each forked job then starts with them
# loaded. More modules make the worker larger and each fork a little slower.
DEFAULT_PREIMPORT = ("numpy", "pandas", "scipy", "sklearn", "sklearn.base",
                     "sklearn.pipeline", "sklearn.preprocessing", "sklearn.impute",
                     "sklearn.compose", "sklearn.linear_model", "sklearn.ensemble",
                     "sklearn.model_selection", "sklearn.metrics")


def default_limits() -> ml_collections.ConfigDict:
    """Limits as a ConfigDict (None fields become placeholders so they stay overridable)."""
    return ml_collections.ConfigDict(dataclasses.asdict(Limits()))


def default_config() -> ml_collections.ConfigDict:
    """The `farm` section: backend, workers, pre-imports, limits, isolation, Ray."""
    c = ml_collections.ConfigDict()
    c.backend = "local"  # 'local' | 'ray'
    c.num_workers = 2
    # Imported once per warm worker so that forked jobs start with them loaded.
    c.preimport = list(DEFAULT_PREIMPORT)
    c.limits = default_limits()
    c.isolation = "auto"  # 'auto' | 'strict' | 'none'
    # As root, each worker claims its own job uid in [uid_base, uid_base +
    # uid_count) machine-wide: RLIMIT_NPROC counts per uid, and leftovers are
    # killed by uid, so no two live workers may share one.
    c.uid_base = 62000
    c.uid_count = 1000
    c.kill_grace_s = 1.0  # SIGTERM -> SIGKILL delay
    c.threads_per_job = 1  # OMP/OpenBLAS/MKL threads inside a job
    c.hidden = []  # host paths hidden from every job (besides each job's own)
    c.python = ""  # interpreter for workers; '' = the caller's sys.executable
    c.ray = ml_collections.ConfigDict()
    c.ray.address = ""  # '' = start/attach a local instance; 'auto' or 'ray://...'
    c.ray.num_actors = 1  # Ray actors, each hosting a local farm of num_workers
    c.ray.num_cpus_per_actor = 1.0
    c.ray.init_kwargs = ml_collections.ConfigDict()
    return c
