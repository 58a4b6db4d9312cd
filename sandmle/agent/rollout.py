"""Many trajectories at once: a policy backend writes turns while the farm runs tool calls.

`Rollouts(policy, tokenizer, farm, config).run(tasks, workroot, seed)` advances every row
(one trajectory per (task, sample)) through the same loop: rows that wait for the model are
sent to the policy together (one batched sampler call per round), rows whose code is
running wait on their farm futures, and finished rows leave. In 'async' mode a round starts
as soon as enough rows are ready, so the sampler and the farm work at the same time; in
'sync' mode every round waits for all running tools, which makes batch composition, and so
every sampled token for fixed seeds, reproducible.

Each row's tokens go straight from the policy into its `Trajectory` (never re-tokenised);
observations are appended as `ChatTokenizer.tool_responses_ids`. The batch's stats split
the wall time into sampler-only, farm-only, both, and neither (host work), and count turns,
tokens, terminations and the failure cases the scaffold handles.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from sandmle.agent import rewards, scaffold, tools
from sandmle.agent.env import AgentEnv
from sandmle.agent.policy import Policy, TurnOutput, TurnRequest
from sandmle.agent.trajectory import Segment, Trajectory, Turn
from sandmle.models import chat_format as cf


@dataclasses.dataclass(frozen=True)
class TaskRef:
    """One trajectory to run: a task directory, its group and its index in the group."""

    task_dir: str
    group: int = 0
    sample: int = 0


class BusyClock:
    """Integrates wall time over (sampler busy, farm busy) states; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._t = time.perf_counter()
        self._sampler = False
        self._jobs = 0
        self.bins = collections.Counter()

    def _advance(self) -> None:
        now = time.perf_counter()
        key = ("sampler" if self._sampler else "") + ("+farm" if self._jobs else "")
        self.bins[key or "idle"] += now - self._t
        self._t = now

    def sampler(self, busy: bool) -> None:
        with self._lock:
            self._advance()
            self._sampler = busy

    def job(self, delta: int) -> None:
        with self._lock:
            self._advance()
            self._jobs += delta

    def split(self) -> dict[str, float]:
        """Seconds with only the sampler busy, only the farm, both, and neither."""
        with self._lock:
            self._advance()
            b = dict(self.bins)
        return {"sampler_only_s": b.get("sampler", 0.0), "farm_only_s": b.get("+farm", 0.0),
                "both_s": b.get("sampler+farm", 0.0), "idle_s": b.get("idle", 0.0)}


@dataclasses.dataclass
class _Row:
    index: int
    traj: Trajectory
    env: AgentEnv
    prompt_ids: list[int]
    state: str = "ready"              # ready | sampling | tool | done
    pending: list[int] = dataclasses.field(default_factory=list)
    new: bool = True
    future: Any = None
    pieces: list[list[int]] = dataclasses.field(default_factory=list)  # ids each turn adds
    visible: list[int] = dataclasses.field(default_factory=list)      # turns in context
    ready_since: float = 0.0
    start: float = 0.0
    max_new: int = 0
    close: list[int] = dataclasses.field(default_factory=list)  # unsampled <|im_end|>


@dataclasses.dataclass
class RolloutBatch:
    """Finished trajectories (in the order of the tasks given) and the batch's stats."""

    trajectories: list[Trajectory]
    stats: dict[str, float]


class Rollouts:
    """Runs trajectories of the agent on tasks through a policy backend and the farm.

    Args:
      policy: a backend (LockstepPolicy over the sampler, the scripted ExpertPolicy, ...).
      tokenizer: the ChatTokenizer the policy reads and writes.
      farm: the sandbox farm (`submit(Job) -> Future[Result]`).
      config: the `agent` config section.
      rollout_config: the `rollout` section (mode, gather_s, min_ready_fraction).
    """

    def __init__(self, policy: Policy, tokenizer: Any, farm: Any,
                 config: ml_collections.ConfigDict,
                 rollout_config: ml_collections.ConfigDict | None = None):
        from sandmle.agent.config import rollout_config as default_rollout
        self.policy = policy
        self.tok = tokenizer
        self.farm = farm
        self.config = config
        self.rcfg = rollout_config if rollout_config is not None else default_rollout()
        rewards.REWARDS.get(config.reward)
        self.tool_names = tuple(config.tools)
        for name in self.tool_names:
            tools.TOOLS.get(name)
        self.schemas = tools.schemas(self.tool_names)
        self.system = scaffold.system_prompt(config.max_calls, config.exec_timeout_s)
        self._descriptions: dict[str, str] = {}

    # ---- prompt ----------------------------------------------------------------------------
    def prompt_ids(self, task_dir: str | os.PathLike) -> list[int]:
        """System prompt + tools + the task's description.md (cut to its budget)."""
        text = (Path(task_dir) / "public" / "description.md").read_text(encoding="utf-8",
                                                                         errors="replace")
        text = scaffold.cut_to_tokens(text, self.tok, self.config.description_max_tokens)
        self._descriptions[str(task_dir)] = text
        messages = [{"role": "system", "content": self.system},
                    {"role": "user", "content": text}]
        return self.tok.render(messages, self.schemas, add_generation_prompt=True,
                               enable_thinking=self.config.enable_thinking).ids

    def messages(self, traj: Trajectory, visible: Sequence[int]) -> list[dict]:
        """The context the policy sees next as OpenAI chat messages (system, task, then each
        visible turn and its observation), for backends that take messages, not ids."""
        out = [{"role": "system", "content": self.system},
               {"role": "user", "content": self._descriptions[traj.task_dir]}]
        for i in visible:
            t = traj.turns[i]
            if t.tool is None:  # a malformed turn: its text, and the error as the user's
                out += [{"role": "assistant", "content": t.text.removesuffix(cf.IM_END)},
                        {"role": "user", "content": t.observation or ""}]
                continue
            call = {"id": f"call_{i}", "type": "function",
                    "function": {"name": t.tool, "arguments": json.dumps(t.arguments)}}
            out += [{"role": "assistant", "content": "", "reasoning_content": t.think,
                     "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": f"call_{i}", "content": t.observation or ""}]
        return out

    # ---- the loop --------------------------------------------------------------------------
    def run(self, tasks: Sequence[TaskRef], workroot: str | os.PathLike, seed: int = 0,
            progress: Any = None) -> RolloutBatch:
        """Runs one trajectory per TaskRef to the end; returns them graded and rewarded."""
        t0 = time.perf_counter()
        clock = BusyClock()
        self._clock = clock
        self._stats = collections.Counter()
        self._seed = seed
        if hasattr(self.policy, "reseed"):
            self.policy.reseed(seed)
        prompts: dict[str, list[int]] = {}
        rows: list[_Row] = []
        for i, ref in enumerate(tasks):
            if ref.task_dir not in prompts:
                prompts[ref.task_dir] = self.prompt_ids(ref.task_dir)
            task_id = Path(ref.task_dir).name
            traj = Trajectory(traj_id=f"{i:04d}-{task_id}-{ref.sample}", task_id=task_id,
                              task_dir=str(ref.task_dir), group=ref.group, sample=ref.sample,
                              policy=getattr(self.policy, "name", "policy"))
            env = AgentEnv(ref.task_dir, self.farm, self.config,
                           Path(workroot) / traj.traj_id)
            row = _Row(i, traj, env, prompts[ref.task_dir], start=time.perf_counter())
            traj.prompt_len = len(row.prompt_ids)
            traj.segments[0].append(row.prompt_ids, sampled=False)
            row.pending, row.ready_since = list(row.prompt_ids), row.start
            rows.append(row)
            if not self._room_ok(row, len(row.prompt_ids)):
                self._finish(row, "context")
        live = [r for r in rows if r.state != "done"]
        try:
            while live:
                self._collect_tools(live)
                ready = [r for r in live if r.state == "ready"]
                if ready and self._should_submit(ready, live):
                    for r in ready:
                        self._submit(r)
                if self.policy.pending():
                    clock.sampler(True)
                    try:
                        outs = self.policy.step()
                    finally:
                        clock.sampler(False)
                    for out in outs:
                        self._on_turn(rows[out.row], out)
                else:
                    waiting = [r.future for r in live if r.state == "tool"]
                    if waiting:
                        timeout = self.rcfg.gather_s if ready else None
                        concurrent.futures.wait(waiting, timeout=timeout,
                                                return_when=concurrent.futures.FIRST_COMPLETED)
                before = len(live)
                live = [r for r in live if r.state != "done"]
                if progress is not None and len(live) < before:
                    progress.update(before - len(live))
        finally:
            for r in rows:  # after an exception: no row keeps a workdir or a conversation
                if r.state != "done":
                    if r.future is not None:
                        r.future.result()
                    r.traj.error = r.traj.error or "rollout aborted"
                    r.env.close()
                    self.policy.release(r.index)
        trajs = [r.traj for r in rows]
        return RolloutBatch(trajs, self._batch_stats(trajs, time.perf_counter() - t0, clock))

    # ---- scheduling ------------------------------------------------------------------------
    def _should_submit(self, ready: list[_Row], live: list[_Row]) -> bool:
        if not getattr(self.policy, "gathers", True):
            return True
        running = sum(r.state == "tool" for r in live)
        if running == 0:
            return True
        if self.rcfg.mode == "sync":
            return False
        if len(ready) >= self.rcfg.min_ready_fraction * len(live):
            return True
        return time.perf_counter() - min(r.ready_since for r in ready) >= self.rcfg.gather_s

    def _room_ok(self, row: _Row, context_len: int) -> bool:
        room = self.config.max_context_tokens - context_len
        row.max_new = min(self.config.max_new_tokens, room)
        return row.max_new >= min(self.config.max_new_tokens, 64)

    def _submit(self, row: _Row) -> None:
        traj = row.traj
        seg = traj.segments[-1]
        last = traj.turns[-1] if traj.turns else None
        info = {"task_dir": traj.task_dir, "turn": len(traj.turns),
                "observation": last.observation if last else None,
                "status": last.tool_status if last else None,
                "context_len": len(seg), "tools": self.schemas,
                "messages": self.messages(traj, row.visible)}
        row_seed = int(np.random.default_rng((self._seed, row.index, len(traj.turns)))
                       .integers(2**31 - 1))
        self.policy.submit(TurnRequest(row=row.index, ids=row.pending, new=row.new,
                                       max_new_tokens=row.max_new, seed=row_seed, info=info))
        row.state, row.pending, row.new = "sampling", [], False

    # ---- events ----------------------------------------------------------------------------
    def _on_turn(self, row: _Row, out: TurnOutput) -> None:
        traj, seg = row.traj, row.traj.segments[-1]
        span = seg.append(out.tokens, sampled=True, logprobs=out.logprobs)
        piece = list(out.tokens)
        closed = not out.tokens or out.tokens[-1] != self.tok.im_end_id
        row.close = []
        if closed:
            # The policy stopped without <|im_end|> (length, or a stop string): close the
            # turn with an unsampled one, which the policy must then also read.
            row.close = [self.tok.im_end_id]
            seg.append(row.close, sampled=False)
            piece += row.close
        text = self.tok.decode(out.tokens)
        truncated = out.finish_reason == "length"
        action = scaffold.parse_turn(text, self.tool_names, truncated)
        turn = Turn(index=len(traj.turns), segment=len(traj.segments) - 1, sampled=span,
                    context=list(row.visible), finish_reason=out.finish_reason, text=text,
                    think=action.think, tool=action.tool, arguments=action.arguments,
                    parse_error=action.error, closed=closed)
        traj.turns.append(turn)
        row.pieces.append(piece)
        row.visible.append(turn.index)
        self._stats["turns"] += 1
        self._stats["truncated_turns"] += truncated
        if action.is_answer:
            self._finish(row, "answer")
            return
        if action.error:
            self._stats["malformed_turns"] += 1
            self._stats["empty_turns"] += action.error.startswith("empty turn")
            row.future = tools.resolved(tools.ToolResult(
                scaffold.malformed_observation(action.error), status="invalid"))
        else:
            self._stats[f"calls_{action.tool}"] += 1
            row.future = tools.call(row.env, action.tool, action.arguments)
            if not row.future.done():
                self._clock.job(+1)
                row.future.add_done_callback(lambda _: self._clock.job(-1))
        row.state = "tool"

    def _collect_tools(self, live: list[_Row]) -> None:
        for row in live:
            if row.state == "tool" and row.future.done():
                result, row.future = row.future.result(), None
                self._on_observation(row, result)

    def _on_observation(self, row: _Row, result: tools.ToolResult) -> None:
        traj = row.traj
        turn = traj.turns[-1]
        obs = scaffold.cut_to_tokens(result.observation, self.tok,
                                     self.config.observation_max_tokens)
        turn.observation, turn.tool_status, turn.tool_seconds = obs, result.status, result.seconds
        if result.status == "timeout":
            self._stats["exec_timeouts"] += 1
        if len(traj.turns) >= self.config.max_calls:
            self._finish(row, "max_turns")
            return
        limit = self.config.trajectory_timeout_s
        if limit and time.perf_counter() - row.start > limit:
            self._finish(row, "timeout")
            return
        obs_ids = self.tok.tool_responses_ids([obs], add_generation_prompt=True,
                                              enable_thinking=self.config.enable_thinking)
        row.pieces[-1] = row.pieces[-1] + obs_ids
        seg = traj.segments[-1]
        if len(seg) + len(obs_ids) + self.config.max_new_tokens <= self.config.max_context_tokens:
            turn.observation_span = seg.append(obs_ids, sampled=False)
            row.pending, row.new = row.close + obs_ids, False
            self._room_ok(row, len(seg))
        else:
            self._prune(row, obs_ids)
            if row.state == "done":
                return
        row.state, row.ready_since = "ready", time.perf_counter()

    def _prune(self, row: _Row, obs_ids: list[int]) -> None:
        """Rebuild the context from kept turns' ids (a new segment), or end the row."""
        traj, seg = row.traj, row.traj.segments[-1]
        budget = self.config.max_context_tokens - self.config.max_new_tokens
        sizes = [len(p) for p in row.pieces]
        keep = scaffold.prune(traj.turns, sizes, len(row.prompt_ids), budget)
        if keep is None:
            # Even the last turn alone leaves less than a full turn of room: sample a
            # shorter turn in place if there is any sensible room left.
            if self._room_ok(row, len(seg) + len(obs_ids)):
                traj.turns[-1].observation_span = seg.append(obs_ids, sampled=False)
                row.pending, row.new = row.close + obs_ids, False
                return
            self._stats["context_overflows"] += 1
            self._finish(row, "context")
            return
        self._stats["prunes"] += 1
        new = Segment()
        new.append(row.prompt_ids, sampled=False)
        for i in keep:
            new.append(row.pieces[i], sampled=False)
        traj.segments.append(new)
        row.visible = list(keep)
        row.pending, row.new = list(new.tokens), True
        self.policy.release(row.index)
        self._room_ok(row, len(new))

    def _finish(self, row: _Row, termination: str) -> None:
        traj = row.traj
        traj.termination = termination
        self._stats[f"end_{termination}"] += 1
        try:
            traj.report = row.env.grade()
        except Exception as e:  # noqa: BLE001 -- a malformed task: no reward, keep going
            traj.report, traj.error = None, f"grading failed: {type(e).__name__}: {e}"
        traj.reward, traj.reward_parts = rewards.compute(self.config.reward, traj, traj.report)
        traj.wall_s = time.perf_counter() - row.start
        row.env.close()
        self.policy.release(row.index)
        row.state = "done"

    # ---- stats -----------------------------------------------------------------------------
    def _batch_stats(self, trajs: list[Trajectory], wall: float, clock: BusyClock
                     ) -> dict[str, float]:
        s: dict[str, float] = {"wall_s": wall, "trajectories": len(trajs),
                               "trajectories_per_min": 60.0 * len(trajs) / max(wall, 1e-9)}
        s.update(clock.split())
        s["sampler_s"] = s["sampler_only_s"] + s["both_s"]
        s["farm_s"] = s["farm_only_s"] + s["both_s"]
        s["sampler_idle_s"] = wall - s["sampler_s"]
        s["farm_idle_s"] = wall - s["farm_s"]
        s["sampled_tokens"] = sum(t.num_sampled_tokens for t in trajs)
        s["tokens"] = sum(t.num_tokens for t in trajs)
        s.update({k: float(v) for k, v in self._stats.items()})
        return s
