"""Checkpoints over Orbax's CheckpointManager: save, resume, fall back, restore resharded.

A checkpoint step holds three items, each in its own folder:

  train_state/  the arrays: parameters, optimizer state, step, RNG (Orbax StandardSave,
                sharded, written asynchronously while training continues)
  loop_state/   JSON: where the loop is (task-sampler position, epoch, ...) so a resumed
                run continues the same data order
  metadata/     JSON: the resolved config, the metrics at that step, and what sandmle
                needs to rebuild the tree (which leaves were typed PRNG keys)

Retention keeps the last `max_to_keep` steps plus every step divisible by `keep_every`.
`restore()` reads the latest step that restores cleanly: a corrupt or partial latest
step is reported with a warning naming the step and the error, moved aside to
`<step>.corrupt-<time>` (never deleted), and the previous step is restored instead.
Restoring onto a target (arrays or `jax.ShapeDtypeStruct`s with shardings) places
every leaf on the target's sharding, which may use a different mesh than the save.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from sandmle.checkpoint_config import default_config  # noqa: F401  (the config block)

ITEMS: tuple[str, ...] = ("train_state", "loop_state", "metadata")
_INTERNAL = "__sandmle__"  # metadata key holding what restore needs (key leaves)
FORMAT_VERSION = 1


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint step could not be restored and was skipped."""


class CheckpointError(RuntimeError):
    """No checkpoint step could be restored."""


@dataclasses.dataclass
class Restored:
    """What `CheckpointManager.restore` returns."""
    step: int
    train_state: Any
    loop_state: dict[str, Any]
    metadata: dict[str, Any]
    skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    @property
    def config(self) -> dict[str, Any] | None:
        """The resolved config saved with this step (a plain dict), if any."""
        return self.metadata.get("config")

    @property
    def metrics(self) -> dict[str, Any]:
        """The metrics saved with this step."""
        return self.metadata.get("metrics") or {}


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _encode_keys(tree: Any) -> tuple[Any, dict[str, str]]:
    """Typed PRNG keys -> their uint32 key data (Orbax stores plain arrays)."""
    impls: dict[str, str] = {}

    def enc(path, x):
        if _is_key(x):
            impls[jax.tree_util.keystr(path)] = str(jax.random.key_impl(x))
            return jax.random.key_data(x)
        return x
    return jax.tree_util.tree_map_with_path(enc, tree), impls


def _to_jsonable(value: Any) -> Any:
    """Config/metrics -> JSON types (ConfigDicts, numpy and jax scalars included)."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(value)
        return _to_jsonable(arr.item() if arr.size == 1 else arr.tolist())
    return repr(value)


def abstract_like(tree: Any, shardings: Any = None) -> Any:
    """A tree of `jax.ShapeDtypeStruct`s to restore onto.

    Args:
      tree: arrays or ShapeDtypeStructs (e.g. `jax.eval_shape(init_fn)`).
      shardings: a matching tree of shardings (default: each leaf's own sharding).
    """
    if shardings is None:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                           sharding=getattr(x, "sharding", None)), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


class CheckpointManager:
    """Saves and restores (train_state, loop_state, metadata) steps under `directory`.

    Args:
      directory: where step folders go (e.g. `<workdir>/checkpoints`).
      max_to_keep: keep the newest N steps (None: all).
      keep_every: also keep every step divisible by this (0/None: none).
      async_save: write arrays in the background; `wait()` or `close()` to finish.
      read_only: never write, delete or move anything (inspection).
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3,
                 keep_every: int | None = None, async_save: bool = True,
                 read_only: bool = False) -> None:
        directory = os.fspath(directory)
        # Object-store URLs (gs://, s3://) go to Orbax untouched.
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        self.read_only = read_only
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(max_to_keep)]
        if keep_every:
            policies.append(ocp.checkpoint_managers.EveryNSteps(int(keep_every)))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            read_only=read_only,
            create=not read_only,
        )
        if read_only and "://" not in self.directory and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"no checkpoint directory at {self.directory}")
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=ITEMS)

    @classmethod
    def from_config(cls, workdir: str | os.PathLike,
                    config: ml_collections.ConfigDict) -> "CheckpointManager":
        """A manager for a run from its `checkpoint` config block (`default_config`).

        Checkpoints go to `config.directory`, or `<workdir>/checkpoints` when empty.
        """
        directory = config.get("directory", "") or os.path.join(os.fspath(workdir),
                                                                 "checkpoints")
        return cls(directory, max_to_keep=config.get("max_to_keep", 3),
                   keep_every=config.get("keep_every", 0) or None,
                   async_save=config.get("async_save", True))

    # -- steps ---------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Finalized steps on disk, ascending (in-flight saves excluded)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest finalized step, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def step_dir(self, step: int) -> str:
        """The folder of one step."""
        return os.path.join(self.directory, str(step))

    # -- save ----------------------------------------------------------------
    def save(self, step: int, train_state: Any, *,
             loop_state: Mapping[str, Any] | None = None,
             config: Any = None, metrics: Mapping[str, Any] | None = None,
             force: bool = True) -> bool:
        """Starts saving `step` (asynchronously unless configured otherwise).

        The arrays are copied off-device before this returns, so training may go on
        and donate or overwrite them. Returns True when a save was started.
        """
        if self.read_only:
            raise PermissionError(f"{self.directory} was opened read-only")
        encoded, key_impls = _encode_keys(train_state)
        metadata = {
            "config": _to_jsonable(config) if config is not None else None,
            "metrics": _to_jsonable(dict(metrics or {})),
            "time": time.time(),
            _INTERNAL: {"format": FORMAT_VERSION, "key_impls": key_impls},
        }
        return self._manager.save(
            int(step),
            args=ocp.args.Composite(
                train_state=ocp.args.StandardSave(encoded),
                loop_state=ocp.args.JsonSave(_to_jsonable(dict(loop_state or {}))),
                metadata=ocp.args.JsonSave(metadata),
            ),
            force=force)

    def wait(self) -> None:
        """Blocks until in-flight saves are on disk (raises if one failed)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- restore -------------------------------------------------------------
    def read_json(self, step: int, item: str) -> dict[str, Any]:
        """Reads the `loop_state` or `metadata` item of a step (no arrays)."""
        if item not in ("loop_state", "metadata"):
            raise ValueError(f"{item!r} is not a JSON item; choose loop_state or metadata")
        restored = self._manager.restore(int(step), args=ocp.args.Composite(
            **{item: ocp.args.JsonRestore()}))
        return dict(restored[item] or {})

    def tree_metadata(self, step: int) -> Any:
        """Orbax's metadata of the train_state tree (shapes, dtypes, shardings)."""
        handler = ocp.StandardCheckpointHandler()
        meta = handler.metadata(ocp.path.step.epath.Path(self.step_dir(step)) /
                                "train_state")
        return meta.tree if hasattr(meta, "tree") else meta

    def _restore_step(self, step: int, target: Any) -> Restored:
        metadata = self.read_json(step, "metadata")
        key_impls = (metadata.get(_INTERNAL) or {}).get("key_impls", {})
        abstract = None
        if target is not None:
            abstract = abstract_like(target)

            def to_stored(path, x):
                # Key leaves are stored as uint32 key data, one trailing dimension more.
                if _is_key(x):
                    data = jax.eval_shape(jax.random.key_data, x)
                    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
                return x
            abstract = jax.tree_util.tree_map_with_path(to_stored, abstract)
        restored = self._manager.restore(int(step), args=ocp.args.Composite(
            train_state=ocp.args.StandardRestore(abstract),
            loop_state=ocp.args.JsonRestore()))

        def decode(path, x):
            impl = key_impls.get(jax.tree_util.keystr(path))
            return jax.random.wrap_key_data(x, impl=impl) if impl else x
        train_state = jax.tree_util.tree_map_with_path(decode, restored["train_state"])
        # Force a read of every leaf now: a short file must fail here, not mid-training.
        jax.block_until_ready(train_state)
        return Restored(step=int(step), train_state=train_state,
                        loop_state=dict(restored["loop_state"] or {}),
                        metadata={k: v for k, v in metadata.items() if k != _INTERNAL})

    def _quarantine(self, step: int) -> str | None:
        if self.read_only or jax.process_index() != 0 or "://" in self.directory:
            return None
        src = self.step_dir(step)
        dst = f"{src}.corrupt-{int(time.time())}"
        try:
            os.rename(src, dst)
        except OSError as e:
            logging.error("could not move corrupt checkpoint %s aside: %s", src, e)
            return None
        self._manager.reload()
        return dst

    def restore(self, step: int | None = None, *, target: Any = None,
                fallback: bool = True) -> Restored | None:
        """Restores a step (default: the newest that restores cleanly).

        Args:
          step: a specific step; it must restore (no fallback) or this raises.
          target: a tree of arrays or ShapeDtypeStructs with shardings to restore onto
            (any mesh); None restores with the shardings saved.
          fallback: with `step=None`, skip a corrupt step (warning naming it) and try
            the previous one.

        Returns:
          The restored step, or None when the directory holds no checkpoint.

        Raises:
          CheckpointError: the named step, or every step, failed to restore.
        """
        if step is not None:
            try:
                return self._restore_step(step, target)
            except Exception as e:  # any reader error means this step is unusable
                raise CheckpointError(
                    f"checkpoint step {step} in {self.directory} could not be restored: "
                    f"{type(e).__name__}: {str(e)[:500]}") from e
        steps = self.all_steps()
        if not steps:
            return None
        skipped: list[tuple[int, str]] = []
        for s in reversed(steps):
            try:
                result = self._restore_step(s, target)
            except Exception as e:  # corrupt or partial: report, keep, try the previous
                reason = f"{type(e).__name__}: {str(e)[:300]}"
                skipped.append((s, reason))
                msg = (f"checkpoint step {s} in {self.directory} is corrupt or partial "
                       f"and was skipped ({reason})")
                logging.warning(msg)
                warnings.warn(msg, CorruptCheckpointWarning, stacklevel=2)
                if not fallback:
                    raise CheckpointError(msg) from e
                continue
            # An older step restored onto the same target, so the newer ones are bad
            # (not the target): move them aside so later saves of those step numbers
            # do not collide. Nothing is deleted.
            for bad, _ in skipped:
                moved = self._quarantine(bad)
                if moved:
                    logging.warning("restored step %d; corrupt step %d kept at %s",
                                    s, bad, moved)
            result.skipped = skipped
            return result
        raise CheckpointError(
            f"no checkpoint in {self.directory} could be restored: " +
            "; ".join(f"step {s}: {r}" for s, r in skipped))


def list_step_dirs(directory: str | os.PathLike) -> Sequence[int]:
    """Finalized step numbers under a checkpoint directory, without Orbax state."""
    directory = os.fspath(directory)
    steps = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.isdigit() and os.path.isdir(path) and all(
                os.path.isdir(os.path.join(path, item)) for item in ITEMS):
            steps.append(int(name))
    return sorted(steps)
