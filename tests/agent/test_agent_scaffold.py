"""Parsing assistant turns, observations cut to a token budget, and the pruning order."""

import dataclasses

import pytest

from sandmle.agent import scaffold

TOOLS = ("execute_python", "validate", "score")
CALL = '<tool_call>\n{"name": "execute_python", "arguments": {"code": "print(1)"}}\n</tool_call>'


def test_well_formed_call_and_answer():
    a = scaffold.parse_turn(f"<think>\nrun it\n</think>\n\n{CALL}<|im_end|>", TOOLS)
    assert (a.think, a.tool, a.arguments, a.error) == ("run it", "execute_python",
                                                      {"code": "print(1)"}, "")
    b = scaffold.parse_turn("<think>\ndone\n</think>\n\nAll written.", TOOLS)
    assert b.is_answer and b.answer == "All written." and b.tool is None


@pytest.mark.parametrize("text,needle", [
    ("<think>\nx\n</think>\n\n", "empty turn"),
    ("<think>\nno end", "inside its <think>"),
    ("<think>\nx\n</think>\n\n<tool_call>\n{\"name\": \"execute_python\"", "unterminated"),
    (f"<think>\nx\n</think>\n\n{CALL}\n{CALL}", "2 tool calls"),
    ("<think>\nx\n</think>\n\n<tool_call>\n{not json}\n</tool_call>", "not valid JSON"),
    ("<think>\nx\n</think>\n\n<tool_call>\n[1, 2]\n</tool_call>", '"name"'),
    ('<think>\nx\n</think>\n\n<tool_call>\n{"name": "rm", "arguments": {}}\n</tool_call>',
     "unknown tool 'rm'"),
    ('<think>\nx\n</think>\n\n<tool_call>\n{"name": "validate", "arguments": 3}\n</tool_call>',
     "must be a JSON object"),
])
def test_malformed_turns_are_named(text, needle):
    a = scaffold.parse_turn(text, TOOLS)
    assert needle in a.error and not a.is_answer and a.tool is None
    assert needle in scaffold.malformed_observation(a.error)


def test_truncated_answer_is_not_an_answer_and_missing_think_is_kept_apart():
    a = scaffold.parse_turn("<think>\nx\n</think>\n\nhalf a sent", TOOLS, truncated=True)
    assert a.error and "token limit" in a.error
    b = scaffold.parse_turn(CALL, TOOLS)  # no think block: a call, but format counts it
    assert b.tool == "execute_python" and b.think == "" and not b.error


class _Tok:
    """Whitespace 'tokenizer': one token per character, enough to count."""

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_cut_keeps_head_and_tail():
    text = "A" * 50 + "B" * 50
    assert scaffold.cut_to_tokens(text, _Tok(), 200) == text
    cut = scaffold.cut_to_tokens(text, _Tok(), 20)
    assert cut.startswith("A" * 10) and cut.endswith("B" * 10) and "80 tokens cut" in cut


def test_execution_observation_fields():
    obs = scaffold.execution_observation("error", 1, 2.34, "out", "Traceback", None)
    assert obs.splitlines()[0] == "status: error (exit code 1) in 2.3 s"
    assert "stdout:\nout" in obs and "stderr:\nTraceback" in obs
    quiet = scaffold.execution_observation("ok", 0, 1.0, "", "", None, show_seconds=False)
    assert quiet == "status: ok (exit code 0)\n(no output)"


@dataclasses.dataclass
class T:
    failed: bool


def test_prune_order_failed_turns_first_then_all_but_last():
    turns = [T(False), T(True), T(False), T(True)]
    sizes = [10, 10, 10, 10]
    assert scaffold.prune(turns, sizes, 5, 45) == [0, 1, 2, 3]      # fits: nothing dropped
    assert scaffold.prune(turns, sizes, 5, 35) == [0, 2, 3]         # failed turn 1 goes
    assert scaffold.prune(turns, sizes, 5, 20) == [3]               # only the last remains
    assert scaffold.prune(turns, sizes, 5, 14) is None              # nothing fits
