"""One GRPO learner step on agent trajectories, as 1 process or as process i of N.

    python tests/train_multihost_step.py OUT.json NUM_PROCESSES PROCESS_ID PORT

Every process builds the same tiny Qwen3 on a (data=4) mesh spanning all processes'
devices, the same batch (`to_batch` of fixed trajectories with group-relative
advantages) and makes one `Learner.update`; process 0 writes the loss and a digest of
the updated parameters (gathered from every process) to OUT.json.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(out: str, num: int, pid: int, port: int) -> None:
    import jax
    if num > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=num,
                                   process_id=pid)
    import numpy as np
    from jax.experimental import multihost_utils

    from sandmle import parallel
    from sandmle.agent.trajectory import Segment, Trajectory, to_batch
    from sandmle.models import qwen3
    from sandmle.rl import advantages
    from sandmle.rl.config import default_config
    from sandmle.rl.learner import Learner

    mesh = parallel.make_mesh((4, 1, 1, 1))
    cfg = qwen3.get_preset("tiny", vocab_size=64, num_hidden_layers=1)
    model = qwen3.create_sharded(cfg, mesh, seed=0)
    rng = np.random.default_rng(0)
    trajs = []
    for i in range(8):  # 2 groups of 4, ragged lengths, prompt then two sampled turns
        seg = Segment()
        seg.append(rng.integers(0, 64, 5 + i % 3), sampled=False)
        seg.append(rng.integers(0, 64, 4), sampled=True, logprobs=rng.uniform(-5, -3, 4))
        seg.append(rng.integers(0, 64, 3), sampled=False)
        seg.append(rng.integers(0, 64, 2 + i % 2), sampled=True,
                   logprobs=rng.uniform(-5, -3, 2 + i % 2))
        trajs.append(Trajectory(traj_id=str(i), task_id="t", task_dir="t", segments=[seg],
                                reward=float(rng.uniform())))
    rl = default_config()
    rl.optim.lr = 1e-2
    adv = advantages.from_config(rl, np.array([t.reward for t in trajs], np.float32),
                                 np.ones((8, 1), np.float32))
    batch = to_batch(trajs, 32, advantages=np.asarray(adv.advantages)[:, 0])
    learner = Learner(model, rl, mesh)
    state = learner.init_state()
    state, metrics = learner.update(state, batch)
    params = multihost_utils.process_allgather(state.params, tiled=True)
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    if jax.process_index() == 0:
        with open(out, "w") as f:
            json.dump({"loss": float(np.asarray(metrics["loss"])),
                       "param_sum": float(sum(x.sum() for x in leaves)),
                       "param_abs": float(sum(np.abs(x).sum() for x in leaves)),
                       "first": [float(x.ravel()[0]) for x in leaves],
                       "devices": jax.device_count(), "processes": jax.process_count()}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
