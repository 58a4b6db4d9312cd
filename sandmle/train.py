"""Job `train`: tasks -> expert demonstrations -> Seed-SFT -> trajectory-wise GRPO/PPO.

    sandmle --config=configs/tiny_cpu.py --workdir=/tmp/sandmle

`train_and_evaluate(config, workdir)` runs the whole method: the task set (an envgen
workdir's train/validation split, generated on first use), the tokenizer and the policy
on the mesh, the sandbox farm; an evaluation of the untrained policy on the validation
tasks; Seed-SFT on the scripted expert's trajectories of the train tasks; then RL steps:
`rl.tasks_per_step` tasks x `rl.group_size` rollouts through the farm, rewards,
advantages, `rl.ppo_epochs` passes of `rl.num_minibatches` mini-batches through
`Learner.update`, metrics, periodic evaluation and Orbax checkpoints of the train state
with the loop state (phase, step, task-sampler position, evaluations). A rerun of the same
command resumes exactly; SIGTERM / Ctrl-C save at the next step boundary and exit 0.

Job `sft` (`run_sft`) stops after Seed-SFT. The RL step itself is in sandmle/rl_steps.py.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from sandmle import build, checkpoint, metrics, preemption, tasksets
from sandmle.agent import expert, summary
from sandmle.agent.rollout import Rollouts, TaskRef
from sandmle.agent.trajectory import dumps, loads
from sandmle.errors import UserError
from sandmle.rl import advantages as adv_lib
from sandmle.rl import sft as sft_lib
from sandmle.rl.learner import Learner

PHASES = ("sft", "rl", "done")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Refuses configs that cannot run, before anything is written (one line each)."""
    rl = config.rl
    if rl.group_size < 1 or rl.tasks_per_step < 1:
        raise UserError("config.rl.group_size and config.rl.tasks_per_step must be >= 1")
    if rl.advantage in ("grpo", "dr_grpo", "rloo") and rl.group_size < 2 and config.rl.steps:
        raise UserError(f"config.rl.advantage={rl.advantage!r} needs group_size >= 2")
    if rl.num_minibatches < 1 or rl.ppo_epochs < 1:
        raise UserError("config.rl.num_minibatches and config.rl.ppo_epochs must be >= 1")
    if config.rl.steps < 0 or config.sft.steps < 0:
        raise UserError("config.rl.steps and config.sft.steps must be >= 0")
    if config.sampling.temperature != rl.temperature:
        raise UserError(f"config.sampling.temperature {config.sampling.temperature} differs "
                        f"from config.rl.temperature {rl.temperature}: the learner's ratio "
                        f"needs the sampler's temperature")
    if config.tasks.dir:  # a missing or broken task set fails here, not after the farm starts
        tasksets.load(config.tasks.dir, config.tasks.num_train, config.tasks.num_validation)


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(parts).integers(2**31 - 1))


def tokenizer_corpus(tasks: list[str], config: ml_collections.ConfigDict) -> list[str]:
    """Text the test tokenizer learns its merges from: the scaffold, the expert's code and
    the task descriptions (so a tiny policy reads and writes short sequences)."""
    from sandmle.agent import scaffold, tools
    texts = [scaffold.system_prompt(config.agent.max_calls, config.agent.exec_timeout_s),
             json.dumps(tools.schemas(config.agent.tools)), expert.INSPECT, expert.FALLBACK,
             scaffold.MALFORMED_HINT]
    rng = np.random.default_rng(config.seed)
    for _ in range(64):
        texts.append(expert.solution_code(expert.draw_choices(rng)))
    texts += [(Path(t) / "public" / "description.md").read_text(errors="replace")
              for t in tasks]
    return texts


class Run:
    """The parts of one run (task set, tokenizer, model, farm, rollouts) and its loop."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, Path(workdir)
        self.mesh, self.rules = build.mesh_and_rules(config)
        self.farm = build.farm(config)
        try:
            self.tasks = tasksets.prepare(config, workdir, self.farm)
            self.tok = build.tokenizer(config, workdir,
                                       tokenizer_corpus(self.tasks.train, config))
            self.model = build.policy_model(config, self.tok.vocab_size, self.mesh, self.rules)
            self.graphdef, self.init_params, self.init_extra = nnx.split(
                self.model, nnx.Param, ...)
            self.policy = build.sampling_policy(config, self.model, self.tok, self.mesh,
                                                  self.rules)
            self.rollouts = Rollouts(self.policy, self.tok, self.farm, config.agent,
                                     config.rollout)
        except BaseException:
            self.farm.close()
            raise
        self.ckpt = checkpoint.CheckpointManager.from_config(workdir, config.checkpoint)
        self.writer: Any = None

    # ---- parts ------------------------------------------------------------------------------
    def seq_len(self, trajectories: list) -> int:
        """Learner sequence length: the longest segment rounded up to `rl.seq_multiple`
        (few distinct shapes, so few compiled programs)."""
        longest = max(len(s) for t in trajectories for s in t.segments)
        m = self.config.rl.seq_multiple
        return int(-(-longest // m) * m)

    def rows_multiple(self, minibatches: int = 1) -> int:
        """Learner rows are padded to this: every mini-batch splits over the batch shards
        and into `rl.micro_batch_size` micro-batches."""
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"] * self.mesh.shape["expert"]
        return int(math.lcm(shards, self.config.rl.micro_batch_size or 1) * minibatches)

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self, params: Any, extra: Any, name: str, step: int,
                 samples: int | None = None) -> dict[str, float]:
        """Rollouts of the current policy on the validation tasks; scalar metrics."""
        c = self.config.eval
        self.policy.set_params(params, extra)
        refs = [TaskRef(t, g, s) for g, t in enumerate(self.tasks.validation)
                for s in range(samples or c.samples_per_task)]
        out = self.rollouts.run(refs, self.workdir / "eval_runs" / name,
                                seed=_seed(self.config.seed, 7, step))
        m = summary.summarize(out.trajectories)
        m["wall_s"] = out.stats["wall_s"]
        self._save_trajectories(f"eval_{name}", out.trajectories)
        logging.info("eval %s: %s", name, summary.table_row(m))
        return m

    def _save_trajectories(self, name: str, trajectories: list) -> None:
        if jax.process_index() == 0:
            path = self.workdir / "trajectories" / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dumps(trajectories))

    # ---- Seed-SFT -----------------------------------------------------------------------------
    def demonstrations(self) -> list:
        """The expert's trajectories on the train tasks (made once, kept in the workdir)."""
        path = self.workdir / "sft" / "demos.jsonl"
        if path.is_file():
            return loads(path.read_text())
        c = self.config
        pol = expert.ExpertPolicy(self.tok, tools=tuple(c.agent.tools), seed=c.seed,
                                  bug_rate=c.sft.bug_rate, thorough_rate=c.sft.thorough_rate)
        rollouts = Rollouts(pol, self.tok, self.farm, c.agent, c.rollout)
        refs = [TaskRef(t, g, s) for g, t in enumerate(self.tasks.train)
                for s in range(c.sft.demos_per_task)]
        with metrics.progress(len(refs), desc="expert demos") as bar:
            out = rollouts.run(refs, self.workdir / "sft" / "runs", seed=c.seed, progress=bar)
        demos = [t for t in out.trajectories if t.reward >= c.sft.min_reward]
        if not demos:
            raise UserError("no expert demonstration reached config.sft.min_reward "
                            f"{c.sft.min_reward}; lower it or check the task set")
        if jax.process_index() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial")
            tmp.write_text(dumps(demos))
            os.replace(tmp, path)
        logging.info("expert demos: %d of %d kept; %s", len(demos), len(out.trajectories),
                     summary.table_row(summary.summarize(out.trajectories)))
        return demos

    def run_sft(self, loop: dict, guard: Any, state: Any = None) -> tuple[Any, bool]:
        """Seed-SFT from loop['sft_step']; returns (final params tree, preempted)."""
        c = self.config
        demos = self.demonstrations()
        rows = [{"tokens": s.tokens, "loss_mask": s.loss_mask} for t in demos
                for s in t.segments]
        seq_len = c.sft.max_seq_len or self.seq_len(demos)
        kept = [r for r in rows if len(r["tokens"]) <= seq_len]
        if not kept:
            raise UserError(f"every demonstration is longer than config.sft.max_seq_len "
                            f"{seq_len}")
        if len(kept) < len(rows):
            logging.info("seed-sft: %d of %d demonstration rows are longer than %d tokens "
                         "and left out", len(rows) - len(kept), len(rows), seq_len)
        rows = kept
        nnx.update(self.model, self.init_params, self.init_extra)
        trainer = sft_lib.SFTTrainer(self.model, c.sft, self.mesh, self.rules)
        if state is None:
            state = trainer.init_state()
        batches = sft_lib.demo_batches(rows, c.sft.batch_size, seq_len, seed=c.seed)
        start = loop["sft_step"]
        for _ in range(start):  # the same batches as an uninterrupted run
            next(batches)
        with metrics.progress(c.sft.steps, initial=start, desc="seed-sft") as bar:
            for step in range(start + 1, c.sft.steps + 1):
                state, m = trainer.train_step(state, next(batches))
                loop["sft_step"] = step
                bar.update(1)
                if step % c.log_every == 0 or step == c.sft.steps:
                    self.writer.write_scalars(loop["step"] + step,
                                              {f"sft/{k}": v for k, v in m.items()})
                    bar.set_postfix(loss=f"{m['loss']:.3f}")
                if guard.should_stop(step) and step < c.sft.steps:
                    self.save(loop["step"] + step, state, loop, {"sft/loss": m["loss"]})
                    guard.announce(step)
                    return state, True
        return state, False

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self, step: int, state: Any, loop: dict, last: dict) -> None:
        self.ckpt.save(step, state, loop_state=loop, config=self.config, metrics=last)
        self.ckpt.wait()


def _new_loop(config: ml_collections.ConfigDict, run: Run) -> dict:
    return {"phase": "sft" if config.sft.steps else "rl", "step": 0, "sft_step": 0,
            "rl_step": 0, "sampler": None, "evals": {}, "taskset": run.tasks.fingerprint(),
            "vocab_size": run.tok.vocab_size}


def _restore(run: Run, make_learner) -> tuple[Any, dict | None, Any]:
    """(state, loop, learner) from the newest checkpoint that restores, else (None, None,
    None). The loop state says which phase's train state the step holds."""
    for step in reversed(run.ckpt.all_steps()):
        try:
            loop = run.ckpt.read_json(step, "loop_state")
        except Exception as e:  # noqa: BLE001 -- unreadable step: try the one before
            logging.warning("checkpoint step %d has no readable loop state (%s)", step, e)
            continue
        if loop.get("taskset") != run.tasks.fingerprint():
            raise UserError(f"the workdir's checkpoints were made on another task set "
                            f"({loop.get('taskset')} vs {run.tasks.fingerprint()}); use a new "
                            f"--workdir or the original config.tasks")
        if loop["phase"] == "sft":
            nnx.update(run.model, run.init_params, run.init_extra)
            target = sft_lib.SFTTrainer(run.model, run.config.sft, run.mesh,
                                        run.rules).init_state()
            learner = None
        else:
            learner = make_learner(None)
            target = learner.init_state()
        try:
            restored = run.ckpt.restore(step, target=target)
        except checkpoint.CheckpointError as e:
            logging.warning("%s; trying the step before", e)
            continue
        logging.info("resumed from step %d (phase %s)", step, loop["phase"])
        return restored.train_state, restored.loop_state, learner
    return None, None, None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       phases: tuple[str, ...] = ("sft", "rl")) -> dict[str, Any]:
    """Runs the job (see the module docstring); returns the evaluation table."""
    from sandmle import rl_steps
    if config.get("dry_run", False):
        from sandmle import dryrun
        print(dryrun.report(config), flush=True)
        return {"dry_run": True}
    run = Run(config, workdir)
    try:
        def make_learner(params):
            if params is not None:
                nnx.update(run.model, params["policy"], run.init_extra)
            critic = None
            if adv_lib.needs_critic(config.rl.advantage):
                critic = build.policy_model(config, run.tok.vocab_size, run.mesh, run.rules,
                                            critic=True)
            return Learner(run.model, config.rl, run.mesh, run.rules, critic=critic)

        state, loop, learner = _restore(run, make_learner)
        loop = loop or _new_loop(config, run)
        run.writer = metrics.MetricWriter(workdir, resume_step=loop["step"] if state is not None
                                          else None)
        with preemption.PreemptionGuard() as guard:
            evals = loop["evals"]
            if "start" not in evals and config.eval.at_start:
                evals["start"] = run.evaluate(run.init_params, run.init_extra, "start", 0,
                                              config.eval.start_samples_per_task)
                run.writer.write_scalars(0, {f"eval_start/{k}": v for k, v in
                                             evals["start"].items()})
            if loop["phase"] == "sft":
                state, stopped = run.run_sft(loop, guard, state)
                if stopped:
                    return _finish(run, loop, preempted=True)
                loop["step"] += config.sft.steps
                params = state.params
                evals["sft"] = run.evaluate(params["policy"], run.init_extra, "sft",
                                            loop["step"])
                run.writer.write_scalars(loop["step"], {f"eval_sft/{k}": v for k, v in
                                                        evals["sft"].items()})
                learner = make_learner(params)
                state = learner.init_state()
                loop["phase"] = "rl" if "rl" in phases and config.rl.steps else "done"
                run.save(loop["step"], state, loop, {})
            if loop["phase"] == "rl":
                if learner is None:
                    learner = make_learner(None)
                    state = learner.init_state()
                state, stopped = rl_steps.run_rl(run, learner, state, loop, guard)
                if stopped:
                    return _finish(run, loop, preempted=True)
        return _finish(run, loop)
    finally:
        run.ckpt.close()
        if run.writer is not None:
            run.writer.close()
        run.farm.close()


def _finish(run: Run, loop: dict, preempted: bool = False) -> dict[str, Any]:
    names = {"start": "start", "sft": "after SFT", "rl": "after RL"}
    rows = {names[k]: summary.table_row(v) for k, v in loop["evals"].items() if k in names}
    result = {"phase": loop["phase"], "step": loop["step"], "preempted": preempted,
              "table": rows}
    if not preempted and jax.process_index() == 0:
        text = summary.format_table(rows, f"held-out validation tasks "
                                          f"({len(run.tasks.validation)} tasks x "
                                          f"{run.config.eval.samples_per_task} samples)")
        print(text, flush=True)
        (run.workdir / "results.json").write_text(json.dumps(result, indent=2))
        if run.writer is not None:
            run.writer.flush()
        try:  # the run is finished and saved; a report that cannot be drawn must not fail it
            from sandmle import report
            print(f"report: {report.write_report(run.workdir)}", flush=True)
        except Exception as e:  # noqa: BLE001
            logging.warning("report.html not written: %s", e)
    return result


def run_sft(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Job `sft`: the task set, expert demonstrations and Seed-SFT only."""
    return train_and_evaluate(config, workdir, phases=("sft",))
