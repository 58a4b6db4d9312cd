"""The `regression` job: trains, and resumes to the bit-identical result."""

import os
import shutil

import jax
import numpy as np
import pytest

from configs import regression as regression_config
from sandmle import checkpoint, metrics, regression


def _config(**overrides):
    cfg = regression_config.get_config("runlocal")
    cfg.steps = 20
    cfg.checkpoint.every_steps = 10
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return cfg


def _final_leaves(workdir, step):
    restored = checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints")).restore(step)
    return [np.asarray(jax.random.key_data(x) if checkpoint._is_key(x) else x)
            for x in jax.tree.leaves(restored.train_state)], restored.loop_state


def test_learns_and_resumes_bit_identical(tmp_path):
    work = str(tmp_path / "run")
    first = regression.train_and_evaluate(_config(), work)
    assert first["step"] == 20
    losses = [r["loss"] for r in metrics.read_jsonl(work)]
    assert losses[-1] < losses[0]  # it learns
    reference, loop_ref = _final_leaves(work, 20)
    assert loop_ref == {"epoch": 1, "index": 128}  # 20 batches of 32 over 512 rows

    # A run killed after its step-10 checkpoint: step 20 never reached the disk.
    shutil.rmtree(os.path.join(work, "checkpoints", "20"))
    second = regression.train_and_evaluate(_config(), work)
    assert second["step"] == 20
    resumed, loop = _final_leaves(work, 20)
    assert loop == loop_ref
    for a, b in zip(reference, resumed):
        assert a.tobytes() == b.tobytes()
    assert second["loss"] == first["loss"]


def test_sharded_mesh_matches_single_axis(tmp_path):
    base = regression.train_and_evaluate(_config(steps=10), str(tmp_path / "a"))
    sharded = regression.train_and_evaluate(
        _config(steps=10, **{"mesh.shape": (2, 2, 2, 1)}), str(tmp_path / "b"))
    # Same math on another layout: equal up to reduction order.
    assert sharded["loss"] == pytest.approx(base["loss"], rel=1e-4)


def test_bad_batch_size_is_named(tmp_path):
    with pytest.raises(ValueError, match="batch_size 12 does not divide over the mesh"):
        regression.train_and_evaluate(_config(batch_size=12), str(tmp_path))
