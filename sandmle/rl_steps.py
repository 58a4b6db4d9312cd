"""The RL phase of the train job: rollouts -> rewards -> advantages -> learner updates.

One step samples `rl.tasks_per_step` train tasks (an epoch-wise shuffled order whose
position is checkpointed), runs `rl.group_size` trajectories of each through the farm
with the learner's current parameters, turns them into one learner batch (`to_batch`),
and makes `rl.ppo_epochs` passes of `rl.num_minibatches` shuffled mini-batches through
`Learner.update`. With `rl.overlap`, the rollouts of step t+1 run in a second thread
while step t updates (one-step off-policy: the ratio is taken against the behaviour
policy's logprobs, which the batch carries).
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from sandmle import metrics
from sandmle.agent import summary
from sandmle.agent.rollout import TaskRef
from sandmle.agent.trajectory import segment_rows, to_batch
from sandmle.regression import BatchSampler
from sandmle.rl import advantages as adv_lib


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(parts).integers(2**31 - 1))


def make_batch(run: Any, learner: Any, state: Any, trajectories: list
               ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The learner batch of a step's trajectories, with advantages (and PPO's values)."""
    c = run.config
    rewards = np.array([t.reward for t in trajectories], np.float32)
    include = [not (c.agent.drop_timeouts and t.termination == "timeout")
               for t in trajectories]
    seq_len = run.seq_len(trajectories)
    pad_rows = run.rows_multiple(c.rl.num_minibatches)
    info: dict[str, float] = {}
    if adv_lib.needs_critic(c.rl.advantage):
        batch = to_batch(trajectories, seq_len, include=include, pad_rows_to=pad_rows)
        values = np.asarray(learner.forward(state.params, state.extra, batch)["values"])
        rows = segment_rows(trajectories)
        row_rewards = np.zeros(batch["tokens"].shape[0], np.float32)
        row_rewards[:len(rows)] = rewards[rows]
        # Each segment (learner row) is one episode ending in the trajectory's reward.
        adv = adv_lib.compute_advantages(
            "gae", row_rewards, batch["loss_mask"], group_size=1, values=values,
            gamma=c.rl.gamma, lam=c.rl.lam, whiten=c.rl.whiten_advantages)
        batch["advantages"] = np.asarray(adv.advantages) * batch["loss_mask"]
        batch["old_values"] = values * batch["loss_mask"]
        batch["returns"] = np.asarray(adv.returns)
    else:
        adv = adv_lib.from_config(c.rl, rewards, np.ones((len(rewards), 1), np.float32))
        batch = to_batch(trajectories, seq_len, advantages=np.asarray(adv.advantages)[:, 0],
                         include=include, pad_rows_to=pad_rows)
        info["degenerate_groups"] = float(adv.degenerate_groups)
    return batch, info


def minibatches(batch: dict[str, np.ndarray], n: int, seed: int) -> list[dict]:
    """`n` equal mini-batches of shuffled rows (each a multiple of the batch shards)."""
    rows = batch["tokens"].shape[0]
    order = np.random.default_rng(seed).permutation(rows)
    return [{k: v[part] for k, v in batch.items()} for part in np.array_split(order, n)]


def update(learner: Any, state: Any, batch: dict, run: Any, step: int
           ) -> tuple[Any, dict[str, float]]:
    """`ppo_epochs` passes of the mini-batches; metrics averaged over the updates."""
    c = run.config.rl
    collected: list[dict] = []
    for epoch in range(c.ppo_epochs):
        for mb in minibatches(batch, c.num_minibatches, _seed(run.config.seed, step, epoch)):
            state, m = learner.update(state, mb)
            collected.append(m)
    host = jax.device_get(collected)
    return state, {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def rollout(run: Any, params: Any, extra: Any, tasks: list[str], step: int) -> Any:
    """The step's trajectories: each task `group_size` times, groups consecutive."""
    c = run.config
    run.policy.set_params(params, extra)
    refs = [TaskRef(t, g, s) for g, t in enumerate(tasks) for s in range(c.rl.group_size)]
    return run.rollouts.run(refs, run.workdir / "rl_runs" / str(step),
                            seed=_seed(c.seed, 11, step))


def _done(value: Any) -> "concurrent.futures.Future":
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_result(value)
    return fut


def run_rl(run: Any, learner: Any, state: Any, loop: dict, guard: Any) -> tuple[Any, bool]:
    """RL steps from loop['rl_step'] to config.rl.steps; returns (state, preempted)."""
    c = run.config
    sampler = BatchSampler(len(run.tasks.train), c.rl.tasks_per_step, c.seed, loop["sampler"])
    base = loop["step"] - loop["rl_step"]
    pool = concurrent.futures.ThreadPoolExecutor(1) if c.rl.overlap else None
    ahead = None
    start = loop["rl_step"]
    try:
        with metrics.progress(c.rl.steps, initial=start, desc="rl") as bar:
            for k in range(start + 1, c.rl.steps + 1):
                t0 = time.perf_counter()
                tasks = [run.tasks.train[i] for i in sampler.next()]
                if ahead is not None:
                    out = ahead.result()
                else:
                    out = rollout(run, state.params["policy"], state.extra["policy"], tasks, k)
                t_roll = time.perf_counter()
                batch, info = make_batch(run, learner, state, out.trajectories)
                if pool is not None and k < c.rl.steps:
                    # The next step's rollouts sample from a copy of the current
                    # parameters while this step's update donates (overwrites) them.
                    nxt = [run.tasks.train[i] for i in BatchSampler(
                        len(run.tasks.train), c.rl.tasks_per_step, c.seed, sampler.state()
                    ).next()]
                    params, extra = jax.tree.map(lambda x: x.copy(), (
                        state.params["policy"], state.extra["policy"]))
                    ahead = pool.submit(rollout, run, params, extra, nxt, k + 1)
                else:
                    ahead = None
                t_batch = time.perf_counter()
                state, lm = update(learner, state, batch, run, k)
                t_end = time.perf_counter()
                step = base + k
                m = summary.summarize(out.trajectories)
                m.update({f"learner/{n}": v for n, v in lm.items()})
                m.update(info)
                s = out.stats
                m.update({"time/step_s": t_end - t0, "time/rollout_s": t_roll - t0,
                          "time/update_s": t_end - t_batch, "time/sampling_s": s["sampler_s"],
                          "time/farm_s": s["farm_s"], "time/rollout_idle_s": s["idle_s"],
                          "time/sampler_idle_s": s["sampler_idle_s"],
                          "time/farm_idle_s": s["farm_idle_s"],
                          "rollout/trajectories_per_min": s["trajectories_per_min"]})
                loop.update(rl_step=k, step=step, sampler=sampler.state())
                if k == c.rl.steps:
                    loop["phase"] = "done"
                if (c.eval.every_steps and k % c.eval.every_steps == 0) or k == c.rl.steps:
                    if ahead is not None:  # one rollout at a time through the policy
                        ahead = _done(ahead.result())
                    ev = run.evaluate(state.params["policy"], state.extra["policy"],
                                      f"rl_{k}", step)
                    loop["evals"]["rl"] = ev
                    m.update({f"eval/{n}": v for n, v in ev.items()})
                run.writer.write_scalars(step, m)
                bar.update(1)
                bar.set_postfix(reward=f"{m['reward_mean']:.3f}")
                if k % c.checkpoint.every_steps == 0 or k == c.rl.steps:
                    run.save(step, state, loop, {"reward_mean": m["reward_mean"]})
                if guard.should_stop(step) and k < c.rl.steps:
                    if k % c.checkpoint.every_steps:
                        run.save(step, state, loop, {"reward_mean": m["reward_mean"]})
                    guard.announce(step)
                    return state, True
    finally:
        if pool is not None:
            if ahead is not None:
                ahead.result()
            pool.shutdown()
    logging.info("rl finished at step %d", loop["step"])
    return state, False
