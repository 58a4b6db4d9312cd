"""The agent's tools: a registry of name -> (schema, function), each returning a future.

`execute_python` runs code in the trajectory's persistent workdir through the sandbox farm;
`validate` checks ./submission.csv's format only (like MLE-bench's validation server);
`score` (the paper's training tool) says which milestones the current submission reaches,
never a label or a score. Every tool answers with a `ToolResult` future, so the rollout
engine waits on farm jobs and in-process tools alike.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sandmle.agent import scaffold
from sandmle.rl.registry import Registry

if TYPE_CHECKING:
    from sandmle.agent.env import AgentEnv


@dataclasses.dataclass
class ToolResult:
    """What a tool call gave back: the observation text, a status and its seconds."""

    observation: str
    status: str = "ok"
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Tool:
    """A tool: its OpenAI-style function schema and `fn(env, arguments) -> Future`."""

    name: str
    description: str
    parameters: dict
    fn: Callable[["AgentEnv", dict], "concurrent.futures.Future[ToolResult]"]

    def schema(self) -> dict:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


TOOLS = Registry("tool")
_NO_ARGS = {"type": "object", "properties": {}, "required": []}


def resolved(result: ToolResult) -> "concurrent.futures.Future[ToolResult]":
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_result(result)
    return fut


def _register(name: str, description: str, parameters: dict):
    def wrap(fn):
        TOOLS.register(name)(Tool(name, description, parameters, fn))
        return fn
    return wrap


@_register("execute_python",
           "Run Python code as a fresh process in the working directory; returns the exit "
           "status, stdout and stderr.",
           {"type": "object", "properties": {"code": {"type": "string",
                                                      "description": "Python source to run"}},
            "required": ["code"]})
def execute_python(env: "AgentEnv", arguments: dict) -> "concurrent.futures.Future[ToolResult]":
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        return resolved(ToolResult(scaffold.malformed_observation(
            'execute_python needs a non-empty "code" string'), status="invalid"))
    extra = sorted(set(arguments) - {"code"})
    if extra:
        return resolved(ToolResult(scaffold.malformed_observation(
            f"execute_python takes only \"code\", got {extra}"), status="invalid"))
    return env.run_code(code)


@_register("validate",
           "Check that ./submission.csv has the expected format (ids, columns, values); "
           "says nothing about its quality.", _NO_ARGS)
def validate(env: "AgentEnv", arguments: dict) -> "concurrent.futures.Future[ToolResult]":
    del arguments
    ok, reason = env.check_format()
    text = "submission.csv is valid." if ok else f"submission.csv is not valid: {reason}"
    return resolved(ToolResult(text, status="ok"))


@_register("score",
           "Say which milestones ./submission.csv reaches on the hidden test labels: valid, "
           "above the median, bronze, silver, gold. Never reveals the score itself.", _NO_ARGS)
def score(env: "AgentEnv", arguments: dict) -> "concurrent.futures.Future[ToolResult]":
    del arguments
    report = env.grade()
    if not report["valid_submission"]:
        return resolved(ToolResult(f"submission.csv is not valid: {report['reason']}"))
    medal = ("gold" if report["gold_medal"] else "silver" if report["silver_medal"]
             else "bronze" if report["bronze_medal"] else "none")
    text = (f"valid: yes; above median: {'yes' if report['above_median'] else 'no'}; "
            f"medal: {medal}")
    return resolved(ToolResult(text))


def schemas(names: Sequence[str]) -> list[dict]:
    """OpenAI function schemas of the named tools (for the system prompt)."""
    return [TOOLS.get(n).schema() for n in names]


def call(env: "AgentEnv", name: str, arguments: dict[str, Any]
         ) -> "concurrent.futures.Future[ToolResult]":
    """Runs tool `name`; an exception inside a tool becomes an error observation."""
    try:
        return TOOLS.get(name).fn(env, arguments)
    except Exception as e:  # noqa: BLE001 -- a tool failure is the agent's observation
        return resolved(ToolResult(f"Error: tool {name} failed: {type(e).__name__}: {e}",
                                   status="error"))
