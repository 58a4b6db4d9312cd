r"""The frame's end-to-end job: a sharded MLP regression (sandmle/regression.py).

Runs anywhere in seconds and checks the mesh, optimizer, metrics, checkpoints and
exact resume on a new machine or pod:

  sandmle --config=configs/regression.py:runlocal --workdir=/tmp/sandmle/regression
  sandmle --config=configs/regression.py --workdir=/tmp/reg \
      --config.mesh.shape='(2,2,2,1)' --config.optim.lr=3e-3
  sandmle-sweep configs/regression.py:runlocal --workdir=/tmp/reg_sweep --dry_run

Arguments (after the colon): `runlocal` (tiny, CPU), `steps=N`.
"""

import ml_collections

from configs.common import parse_arg
from sandmle import checkpoint_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The regression config; `arg` as described in the module docstring."""
    arg = parse_arg(arg, runlocal=False, steps=0)
    config = ml_collections.ConfigDict()
    config.job = "regression"
    config.seed = 0
    config.steps = 2000
    config.batch_size = 256
    config.log_every = 50
    config.eval_every = 500
    config.data = ml_collections.ConfigDict({
        "num_train": 16384, "num_eval": 2048, "features": 128, "teacher_hidden": 64,
        "noise": 0.05})
    config.model = ml_collections.ConfigDict({"hidden": 512})
    config.optim = ml_collections.ConfigDict({
        "lr": 3e-3, "warmup_steps": 100, "weight_decay": 1e-4, "grad_clip": 1.0})
    config.checkpoint = checkpoint_config.default_config()
    config.checkpoint.every_steps = 500
    # Mesh axes (data, fsdp, tensor, expert); -1 takes the remaining devices.
    config.mesh = ml_collections.ConfigDict({"shape": (-1, 1, 1, 1)})
    config.multihost = False
    if arg.runlocal:
        config.steps = 40
        config.batch_size = 32
        config.log_every = 10
        config.eval_every = 20
        config.data.update({"num_train": 512, "num_eval": 64, "features": 16,
                            "teacher_hidden": 8})
        config.model.hidden = 32
        config.optim.warmup_steps = 5
        config.checkpoint.every_steps = 20
        config.checkpoint.async_save = False  # tiny saves: keep CPU runs single-threaded
    if arg.steps:
        config.steps = arg.steps
    return config


def get_sweep(hyper):
    """2 learning rates x 3 batch sizes: `sandmle-sweep configs/regression.py:runlocal`."""
    return hyper.product([
        hyper.sweep("optim.lr", [1e-3, 1e-2]),
        hyper.sweep("batch_size", [16, 32, 64]),
    ])
