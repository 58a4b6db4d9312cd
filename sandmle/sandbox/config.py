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


# Enough for the interpreter and its libraries to start; never secrets.
PASS_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "PYTHONPATH",
            "VIRTUAL_ENV")


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
    c.isolation = "auto"  # 'auto' | 'strict' | 'userns' | 'none'
    # As root, each trajectory (workdir) runs as a uid of its own from
    # [uid_base, uid_base + uid_count), claimed machine-wide until
    # farm.release(workdir); a farm holds at most max_trajectory_uids and hands
    # back the least recently used idle one when it needs another.
    c.uid_base = 62000
    c.uid_count = 1000
    c.max_trajectory_uids = 256
    c.seccomp = True  # the job's syscall filter (pyseccomp + libseccomp2)
    c.kill_grace_s = 1.0  # SIGTERM -> SIGKILL delay
    c.threads_per_job = 1  # OMP/OpenBLAS/MKL threads inside a job
    c.hidden = []  # host paths hidden from every job (besides each job's own)
    # Extra host directories every job sees read-only (its root holds only the
    # system directories, the interpreter's trees, its inputs and its workdir).
    c.expose = []
    # The farm's environment variables workers and zygotes keep; jobs get none.
    c.pass_env = list(PASS_ENV)
    c.python = ""  # interpreter for workers; '' = the caller's sys.executable
    c.ray = ml_collections.ConfigDict()
    c.ray.address = ""  # '' = start/attach a local instance; 'auto' or 'ray://...'
    c.ray.num_actors = 1  # Ray actors, each hosting a local farm of num_workers
    c.ray.num_cpus_per_actor = 1.0
    c.ray.init_kwargs = ml_collections.ConfigDict()
    return c
