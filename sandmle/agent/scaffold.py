"""The ReAct scaffold: the prompt, parsing an assistant turn, observations, the context budget.

The agent writes Qwen3's own format: a `<think>` block, then either exactly one
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` or a final answer (text with no
tool call). A malformed turn gets an error observation that says how to call a tool; it
counts as one of the trajectory's LLM calls.

Context budget (the paper's order): when the next turn would not fit, failed tool turns are
dropped first, then everything but the system prompt, the task and the last turn (its call
and its observation: the last 2 messages). Pruning builds the new context from the ids
already in the trajectory, never from re-tokenised text, and never touches what was sampled.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from sandmle.models import chat_format as cf

SYSTEM_PROMPT = """\
You are an expert machine-learning engineer. Solve the task below in a sandbox.
- The task's files are in ./input/ (read-only): train.csv, test.csv, sample_submission.csv \
and any media folders. The user message is the task's description.md.
- Write predictions for every row of test.csv to ./submission.csv, in the format of \
./input/sample_submission.csv.
- Call one tool per turn. execute_python runs your code as a fresh Python process in the \
working directory (numpy, pandas, scipy, scikit-learn; no network; {timeout:g} s limit); \
files you write stay there for later calls.
- You have {max_calls} turns in all. When ./submission.csv is final, answer without a tool call."""

MALFORMED_HINT = (
    'Call exactly one tool as <tool_call>\n{"name": "execute_python", "arguments": '
    '{"code": "..."}}\n</tool_call>, or answer without a tool call once ./submission.csv '
    "is final.")


def system_prompt(max_calls: int, timeout_s: float) -> str:
    """The system message stating the sandbox contract, tools and limits."""
    return SYSTEM_PROMPT.format(max_calls=max_calls, timeout=timeout_s)


@dataclasses.dataclass
class Action:
    """A parsed assistant turn: a tool call, a final answer, or why it is malformed."""

    think: str
    tool: str | None = None
    arguments: dict | None = None
    answer: str | None = None
    error: str = ""

    @property
    def is_answer(self) -> bool:
        return self.answer is not None and not self.error


def parse_turn(text: str, tools: Sequence[str], truncated: bool = False) -> Action:
    """Parses the text of one sampled turn (without its closing `<|im_end|>`).

    Args:
      text: the decoded sampled ids.
      tools: names of the enabled tools; any other name is an error.
      truncated: the sampler stopped at max_new_tokens (the turn was cut).
    """
    text = text.removesuffix(cf.IM_END).removesuffix(cf.ENDOFTEXT)
    think, body = "", text
    stripped = text.lstrip()
    if stripped.startswith(cf.THINK_START):
        inner = stripped[len(cf.THINK_START):]
        if cf.THINK_END in inner:
            think, body = inner.split(cf.THINK_END, 1)
        else:
            return Action(think=inner, error=_cut("the turn ended inside its <think> block", truncated))
    think = think.strip()
    n_open, n_close = body.count(cf.TOOL_CALL_START), body.count(cf.TOOL_CALL_END)
    if n_open == 0 and n_close == 0:
        answer = body.strip()
        if truncated:
            return Action(think=think, error=_cut("the turn was cut before it ended", True))
        if not answer:
            return Action(think=think, error="empty turn: no tool call and no answer")
        return Action(think=think, answer=answer)
    if n_open != n_close:
        return Action(think=think, error=_cut("unterminated <tool_call> block", truncated))
    if n_open > 1:
        return Action(think=think, error=f"{n_open} tool calls in one turn; make one per turn")
    inside = body.split(cf.TOOL_CALL_START, 1)[1].split(cf.TOOL_CALL_END, 1)[0]
    try:
        call = json.loads(inside)
    except json.JSONDecodeError as e:
        return Action(think=think, error=f"the tool call is not valid JSON ({e.msg} at "
                                         f"character {e.pos})")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return Action(think=think, error='the tool call needs a "name" string')
    name, args = call["name"], call.get("arguments", {})
    if name not in tools:
        return Action(think=think, error=f"unknown tool {name!r}; tools: {', '.join(tools)}")
    if not isinstance(args, dict):
        return Action(think=think, error=f'"arguments" of {name} must be a JSON object')
    return Action(think=think, tool=name, arguments=args)


def _cut(reason: str, truncated: bool) -> str:
    return reason + (" (the turn hit the token limit)" if truncated else "")


def malformed_observation(error: str) -> str:
    """What the agent reads after a malformed turn."""
    return f"Error: {error}. {MALFORMED_HINT}"


def cut_to_tokens(text: str, tokenizer: Any, max_tokens: int) -> str:
    """`text` kept whole, or its first and last max_tokens/2 tokens around a marked cut."""
    ids = tokenizer.encode(text)
    if len(ids) <= max_tokens:
        return text
    head, tail = max_tokens // 2, max_tokens - max_tokens // 2
    cut = len(ids) - head - tail
    return (tokenizer.decode(ids[:head]) + f"\n[... {cut} tokens cut ...]\n"
            + tokenizer.decode(ids[len(ids) - tail:]))


def execution_observation(status: str, exit_code: int | None, seconds: float, stdout: str,
                          stderr: str, error: str | None, show_seconds: bool = True) -> str:
    """A farm Result as the agent reads it: status, time, then the two streams."""
    head = f"status: {status}"
    if exit_code is not None:
        head += f" (exit code {exit_code})"
    if show_seconds:
        head += f" in {seconds:.1f} s"
    parts = [head]
    if error and status != "ok":
        parts.append(f"note: {error}")
    if stdout.strip():
        parts.append("stdout:\n" + stdout.rstrip())
    if stderr.strip():
        parts.append("stderr:\n" + stderr.rstrip())
    if len(parts) == 1:
        parts.append("(no output)")
    return "\n".join(parts)


def prune(turns: Sequence[Any], sizes: Sequence[int], prompt_len: int, budget: int
          ) -> list[int] | None:
    """Which earlier turns to keep so that the context fits `budget` tokens, or None.

    `turns` are the turns so far (objects with `.failed`), `sizes[i]` the ids turn i adds to
    a context (its sampled ids, closing id and observation). Stage 1 drops failed turns
    (never the last one, whose observation the model must read next); stage 2 keeps only
    the last turn. None when even that does not fit.
    """
    n = len(turns)
    everything = list(range(n))
    if prompt_len + sum(sizes) <= budget:
        return everything
    stage1 = [i for i in everything if i == n - 1 or not turns[i].failed]
    if prompt_len + sum(sizes[i] for i in stage1) <= budget:
        return stage1
    stage2 = everything[-1:]
    if prompt_len + sum(sizes[i] for i in stage2) <= budget:
        return stage2
    return None
