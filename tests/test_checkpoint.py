"""Checkpoint manager: kill-safety, resharded restore, corrupt fallback, retention."""

import glob
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sandmle import checkpoint, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_state(step: int):
    """A deterministic train state: params, Adam state, step and a typed RNG key."""
    key = jax.random.key(step)
    params = {"w": jax.random.normal(key, (16, 8)), "b": jnp.arange(8.0) * step,
              "emb": jax.random.normal(jax.random.fold_in(key, 1), (32, 16), jnp.bfloat16)}
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    _, opt_state = opt.update(params, opt_state, params)
    return {"params": params, "opt_state": opt_state, "step": jnp.int32(step),
            "rng": jax.random.split(jax.random.key(100 + step), 2)}


def assert_bit_identical(a, b, same_structure=True):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert len(la) == len(lb)
    if same_structure:
        assert ta == tb
    for x, y in zip(la, lb):
        if checkpoint._is_key(x):
            assert checkpoint._is_key(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_save_sigkill_restore_bit_identical(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.dirname(__file__)!r})
        import jax
        from sandmle import checkpoint, parallel
        from test_checkpoint import make_state
        mesh = parallel.make_mesh((2, 2, 2, 1))
        names = {{"w": ("embed", "mlp"), "b": ("mlp",), "emb": ("vocab", "embed")}}
        mgr = checkpoint.CheckpointManager({str(tmp_path)!r}, max_to_keep=5)
        for step in (1, 2, 3):
            state = make_state(step)
            state["params"] = parallel.shard_tree(state["params"], names, mesh)
            mgr.save(step, state, loop_state={{"position": step * 10}},
                     metrics={{"loss": 1.0 / step}}, config={{"lr": 0.1}})
        mgr.wait()
        mgr.save(4, make_state(4), loop_state={{"position": 40}})  # in flight ...
        os.kill(os.getpid(), signal.SIGKILL)                       # ... when killed
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    mgr = checkpoint.CheckpointManager(tmp_path)
    restored = mgr.restore(target=make_state(0))
    assert restored.step in (3, 4), restored.step  # step 4 only if it finished in time
    assert restored.skipped == []
    assert_bit_identical(restored.train_state, make_state(restored.step))
    assert restored.loop_state == {"position": restored.step * 10}
    if restored.step == 3:
        assert restored.metrics == {"loss": pytest.approx(1 / 3)}
        assert restored.config == {"lr": 0.1}
    # Without a target the values come back as saved, typed keys included (optax's
    # namedtuples become plain containers: structure needs the target).
    again = mgr.restore(3)
    assert_bit_identical(again.train_state, make_state(3), same_structure=False)
    assert again.train_state["params"]["w"].sharding.spec == P("fsdp", "tensor")
    mgr.close()


def test_restore_onto_a_different_mesh(tmp_path):
    names = {"w": ("embed", "mlp"), "b": ("mlp",), "emb": ("vocab", "embed")}
    params = make_state(5)["params"]
    src_mesh = parallel.make_mesh((8, 1, 1, 1))
    src = jax.device_put(params, {
        "w": NamedSharding(src_mesh, P("data", None)),
        "b": NamedSharding(src_mesh, P()),
        "emb": NamedSharding(src_mesh, P("data", None))})
    with checkpoint.CheckpointManager(tmp_path, async_save=False) as mgr:
        mgr.save(5, {"params": src})
    dst_mesh = parallel.make_mesh((2, 2, 2, 1))
    shardings = parallel.tree_shardings(params, names, dst_mesh)
    target = {"params": checkpoint.abstract_like(jax.eval_shape(lambda: params), shardings)}
    restored = checkpoint.CheckpointManager(tmp_path).restore(target=target)
    out = restored.train_state["params"]
    assert out["w"].sharding.spec == P("fsdp", "tensor")
    assert out["emb"].sharding.spec == P("tensor", "fsdp")
    assert out["w"].sharding.mesh.shape == dst_mesh.shape
    assert out["w"].addressable_shards[0].data.shape == (8, 4)
    assert_bit_identical(out, params)


def _truncate_arrays(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "train_state", "**", "*"),
                                  recursive=True)
             if os.path.isfile(f) and os.sep + "d" + os.sep in f]
    assert files
    for f in files:
        os.truncate(f, os.path.getsize(f) // 2)


def test_truncated_latest_warns_and_falls_back(tmp_path):
    with checkpoint.CheckpointManager(tmp_path, async_save=False) as mgr:
        for step in (1, 2, 3):
            mgr.save(step, make_state(step), loop_state={"position": step})
    _truncate_arrays(tmp_path / "3")
    mgr = checkpoint.CheckpointManager(tmp_path, async_save=False)
    with pytest.warns(checkpoint.CorruptCheckpointWarning, match="step 3 .*corrupt"):
        restored = mgr.restore(target=make_state(0))
    assert restored.step == 2
    assert [s for s, _ in restored.skipped] == [3]
    assert_bit_identical(restored.train_state, make_state(2))
    # Kept, not deleted, and out of the way of the resumed run's next save of step 3.
    assert len(glob.glob(str(tmp_path / "3.corrupt-*"))) == 1
    assert mgr.all_steps() == [1, 2]
    mgr.save(3, make_state(3))
    mgr.wait()
    assert mgr.restore().step == 3
    mgr.close()


def test_truncated_json_item_also_detected(tmp_path):
    with checkpoint.CheckpointManager(tmp_path, async_save=False) as mgr:
        for step in (1, 2):
            mgr.save(step, {"x": jnp.ones(3) * step}, loop_state={"position": step})
    path = tmp_path / "2" / "loop_state" / "metadata"
    path.write_text(path.read_text()[:5])
    mgr = checkpoint.CheckpointManager(tmp_path)
    with pytest.warns(checkpoint.CorruptCheckpointWarning, match="step 2"):
        assert mgr.restore().step == 1


def test_named_step_or_all_corrupt_raise_and_keep_files(tmp_path):
    with checkpoint.CheckpointManager(tmp_path, async_save=False) as mgr:
        mgr.save(1, make_state(1))
    _truncate_arrays(tmp_path / "1")
    mgr = checkpoint.CheckpointManager(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="step 1 .*could not be restored"):
        mgr.restore(1, target=make_state(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", checkpoint.CorruptCheckpointWarning)
        with pytest.raises(checkpoint.CheckpointError, match="no checkpoint .* step 1"):
            mgr.restore(target=make_state(0))
    assert (tmp_path / "1").is_dir()  # nothing moved when no step restores


def test_wrong_target_moves_nothing(tmp_path):
    with checkpoint.CheckpointManager(tmp_path, async_save=False) as mgr:
        mgr.save(1, {"x": jnp.ones(3)})
        mgr.save(2, {"x": jnp.ones(3)})
    mgr = checkpoint.CheckpointManager(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", checkpoint.CorruptCheckpointWarning)
        with pytest.raises(checkpoint.CheckpointError):
            mgr.restore(target={"x": jnp.ones(3), "y": jnp.ones(2)})
    assert mgr.all_steps() == [1, 2]


def test_retention_last_n_and_every_k(tmp_path):
    mgr = checkpoint.CheckpointManager(tmp_path, max_to_keep=2, keep_every=4)
    for step in range(1, 10):
        mgr.save(step, {"x": jnp.full((4,), step)})
    mgr.close()
    assert checkpoint.CheckpointManager(tmp_path).all_steps() == [4, 8, 9]
    assert checkpoint.list_step_dirs(tmp_path) == [4, 8, 9]


def test_empty_directory_returns_none_and_config(tmp_path):
    assert checkpoint.CheckpointManager(tmp_path / "ck").restore() is None
    cfg = checkpoint.default_config()
    mgr = checkpoint.CheckpointManager.from_config(tmp_path / "run", cfg)
    assert mgr.directory == str(tmp_path / "run" / "checkpoints")
    mgr.save(1, {"x": jnp.zeros(2)}, config=ml_collections.ConfigDict({"a": (1, 2)}))
    mgr.wait()
    assert mgr.read_json(1, "metadata")["config"] == {"a": [1, 2]}
    cfg.directory = str(tmp_path / "elsewhere")
    assert checkpoint.CheckpointManager.from_config(tmp_path, cfg).directory == cfg.directory
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        checkpoint.CheckpointManager(tmp_path / "missing", read_only=True)
