"""The trajectory record (DESIGN.md's contract) and its one conversion into a learner batch.

A trajectory holds the exact token ids the policy saw and sampled, never re-derived from
text. Tokens live in *segments*: a segment is one context the policy sampled in, as one
growing sequence (prompt, sampled turn, observation, sampled turn, ...). A trajectory has
one segment unless its context was pruned: pruning starts a new segment holding only what
the model sees next (the prompt and the kept turns, as the very ids they had), so the
tokens sampled before the pruning stay in the segment they were sampled in, with the
context they were sampled from. `to_batch` turns every segment into one learner row.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

TERMINATIONS = ("answer", "max_turns", "timeout", "context", "error")


@dataclasses.dataclass
class Segment:
    """One context of sampling: tokens, loss mask (1 = sampled) and the sampler's logprobs."""

    tokens: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)

    def append(self, ids: Sequence[int], sampled: bool,
               logprobs: Sequence[float] | None = None) -> tuple[int, int]:
        """Appends ids; returns their (start, end) span. Logprobs only for sampled ids."""
        ids = [int(i) for i in ids]
        if sampled:
            lp = [float(x) for x in (logprobs if logprobs is not None else [0.0] * len(ids))]
            if len(lp) != len(ids):
                raise ValueError(f"{len(ids)} sampled ids but {len(lp)} logprobs")
        else:
            lp = [0.0] * len(ids)
        start = len(self.tokens)
        self.tokens.extend(ids)
        self.loss_mask.extend([int(sampled)] * len(ids))
        self.logprobs.extend(lp)
        return start, len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclasses.dataclass
class Turn:
    """One assistant turn: what was sampled, how it parsed, what the tool answered.

    `segment` and `sampled` locate the sampled ids; `context` lists the earlier turns the
    model saw when it sampled this one (besides the system prompt and the task), so a
    pruned context is on record. `observation_span` locates the appended tool-response ids.
    """

    index: int
    segment: int
    sampled: tuple[int, int]
    context: list[int]
    finish_reason: str                 # the sampler's: 'stop' | 'length'
    text: str                          # the sampled text (decoded, for humans and parsing)
    think: str = ""
    tool: str | None = None            # None: a final answer (or a malformed turn)
    arguments: dict | None = None
    parse_error: str = ""              # why the turn is not a well-formed call/answer
    observation: str | None = None
    observation_span: tuple[int, int] | None = None
    tool_status: str = ""              # farm status, 'invalid' for malformed turns
    tool_seconds: float = 0.0
    closed: bool = False               # truncated turn closed by an unsampled <|im_end|>

    @property
    def well_formed(self) -> bool:
        """A non-empty think block and a well-formed tool call or final answer."""
        return bool(self.think.strip()) and not self.parse_error

    @property
    def failed(self) -> bool:
        """Malformed, or a tool call that did not succeed (the first to go when pruning)."""
        return bool(self.parse_error) or self.tool_status not in ("", "ok")


@dataclasses.dataclass
class Trajectory:
    """A whole agent episode on one task."""

    traj_id: str
    task_id: str
    task_dir: str
    group: int = 0                     # index of the task's group in the step
    sample: int = 0                    # index within the group
    segments: list[Segment] = dataclasses.field(default_factory=lambda: [Segment()])
    turns: list[Turn] = dataclasses.field(default_factory=list)
    prompt_len: int = 0                # ids of system + task at the start of every segment
    termination: str = ""
    report: dict | None = None
    reward: float = 0.0
    reward_parts: dict = dataclasses.field(default_factory=dict)
    wall_s: float = 0.0
    error: str = ""
    policy: str = ""                   # who acted: 'policy', 'expert', ...

    @property
    def num_sampled_tokens(self) -> int:
        return int(sum(sum(s.loss_mask) for s in self.segments))

    @property
    def num_tokens(self) -> int:
        return int(sum(len(s) for s in self.segments))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (tokens included), read back by `from_json`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Trajectory":
        d = dict(d)
        d["segments"] = [Segment(**s) for s in d["segments"]]
        turns = []
        for t in d["turns"]:
            t = dict(t)
            t["sampled"] = tuple(t["sampled"])
            if t.get("observation_span") is not None:
                t["observation_span"] = tuple(t["observation_span"])
            turns.append(Turn(**t))
        d["turns"] = turns
        return cls(**d)


def dumps(trajectories: Sequence[Trajectory]) -> str:
    """JSON lines, one trajectory per line."""
    return "".join(json.dumps(t.to_json()) + "\n" for t in trajectories)


def loads(text: str) -> list[Trajectory]:
    return [Trajectory.from_json(json.loads(line)) for line in text.splitlines() if line]


def segment_rows(trajectories: Sequence[Trajectory]) -> np.ndarray:
    """[rows] index of the trajectory each `to_batch` row comes from."""
    return np.array([i for i, t in enumerate(trajectories) for _ in t.segments], np.int32)


def to_batch(trajectories: Sequence[Trajectory], pad_to: int | None = None, *,
             advantages: Sequence[float] | np.ndarray | None = None,
             include: Sequence[bool] | None = None, pad_rows_to: int = 1,
             pad_id: int = 0) -> dict[str, np.ndarray]:
    """The learner's batch (docs/rl.md): one row per segment, rows in trajectory order.

    Args:
      trajectories: the records.
      pad_to: sequence length T (default: the longest segment). A longer segment raises.
      advantages: one scalar per trajectory (e.g. group-relative), or one array per row
        ([rows, T], e.g. GAE); placed on the sampled tokens. Omitted: no 'advantages'.
      include: per trajectory, False drops it from the loss (mask 0), e.g. timed out.
      pad_rows_to: the row count is padded to a multiple of this with empty rows (mask 0),
        so the batch divides over the mesh's batch shards.
      pad_id: token of the padding.

    Returns:
      tokens, positions, attention_mask, loss_mask (float32: 1 exactly on sampled tokens),
      old_logprobs (the sampler's logprobs there, 0 elsewhere) and advantages, each [B, T].
    """
    segs = [(i, s) for i, t in enumerate(trajectories) for s in t.segments]
    if not segs:
        raise ValueError("to_batch needs at least one trajectory")
    longest = max(len(s) for _, s in segs)
    t_len = longest if pad_to is None else int(pad_to)
    if longest > t_len:
        worst = max(segs, key=lambda x: len(x[1]))
        raise ValueError(f"trajectory {trajectories[worst[0]].traj_id} has a segment of "
                         f"{longest} tokens, more than pad_to={t_len}")
    rows = -(-len(segs) // pad_rows_to) * pad_rows_to
    tokens = np.full((rows, t_len), pad_id, np.int32)
    attn = np.zeros((rows, t_len), bool)
    loss_mask = np.zeros((rows, t_len), np.float32)
    old_lp = np.zeros((rows, t_len), np.float32)
    for r, (i, s) in enumerate(segs):
        n = len(s)
        tokens[r, :n] = s.tokens
        attn[r, :n] = True
        keep = include is None or bool(include[i])
        loss_mask[r, :n] = np.asarray(s.loss_mask, np.float32) * keep
        old_lp[r, :n] = s.logprobs
    old_lp *= loss_mask
    batch = {"tokens": tokens,
             "positions": np.broadcast_to(np.arange(t_len, dtype=np.int32), (rows, t_len)).copy(),
             "attention_mask": attn, "loss_mask": loss_mask, "old_logprobs": old_lp}
    if advantages is not None:
        adv = np.asarray(advantages, np.float32)
        if adv.ndim == 1:
            if adv.shape[0] != len(trajectories):
                raise ValueError(f"{adv.shape[0]} advantages for {len(trajectories)} trajectories")
            per_row = np.zeros((rows, 1), np.float32)
            per_row[:len(segs), 0] = adv[segment_rows(trajectories)]
            batch["advantages"] = per_row * loss_mask
        else:
            if adv.shape[0] < len(segs):
                raise ValueError(f"advantages have {adv.shape[0]} rows, the batch {len(segs)}")
            full = np.zeros((rows, t_len), np.float32)
            full[:len(segs), :adv.shape[1]] = adv[:len(segs), :t_len]
            batch["advantages"] = full * loss_mask
    return batch
