"""Qwen3 chat rendering, assistant masks and token-in-token-out against transformers."""

import copy
import json
import os
import re
import shutil

import pytest

from sandmle.models import chat_format as cf
from sandmle.models.tiny_tokenizer import build_test_tokenizer
from sandmle.models.tokenizer import ChatBuffer, ChatTokenizer

TOOLS = [
    {"type": "function", "function": {
        "name": "execute_python", "description": "Run Python code in the sandbox.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                       "required": ["code"]}}},
    {"type": "function", "function": {
        "name": "submit", "description": "Grade submission.csv — finish.",
        "parameters": {"type": "object", "properties": {}}}},
]
SYSTEM = {"role": "system", "content": "You are an ML engineer. Be brief."}
TASK = {"role": "user", "content": "Predict `target` in train.csv; metric: accuracy."}


def _call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


# An agent trajectory in thinking mode: every assistant turn is in the form the policy samples.
AGENT = [
    SYSTEM, TASK,
    {"role": "assistant", "content": "Let me look at the data first.",
     "reasoning_content": "I should inspect the columns.",
     "tool_calls": [_call("execute_python", {"code": "import pandas as pd\nprint(pd.read_csv('train.csv').head())"})]},
    {"role": "tool", "content": "   id  x0  target\n0   0 1.5       1"},
    {"role": "assistant", "content": "<think>\nTwo things to run.\n</think>\n\n",
     "tool_calls": [_call("execute_python", {"code": "print(1)"}),
                    _call("execute_python", '{"code": "print(2)"}')]},
    {"role": "tool", "content": "1"},
    {"role": "tool", "content": "Traceback (most recent call last):\nKeyError: 'y' — ünïcode ✓"},
    {"role": "assistant", "content": "Accuracy 0.91; submitting.",
     "reasoning_content": "Good enough.", "tool_calls": [_call("submit", {})]},
    {"role": "tool", "content": "{\"score\": 0.91, \"medal\": \"gold\"}"},
    {"role": "assistant", "content": "<think>\nDone.\n</think>\n\nSubmitted: score 0.91 (gold)."},
]

CONVERSATIONS = {
    "system_user_think": dict(messages=[
        SYSTEM, {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\n4"}]),
    "reasoning_field_and_gen_prompt": dict(messages=[
        {"role": "user", "content": "Name a metric."},
        {"role": "assistant", "content": "AUC.", "reasoning_content": "\nAny will do.\n"},
        {"role": "user", "content": "Another?"}], add_generation_prompt=True),
    "agent_tools": dict(messages=AGENT, tools=TOOLS),
    "agent_tools_gen_prompt": dict(messages=AGENT[:-1], tools=TOOLS, add_generation_prompt=True),
    "multi_turn_drops_old_reasoning": dict(messages=[
        SYSTEM,
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nold thoughts\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2 with no reasoning"},
        {"role": "user", "content": "Q3"},
        {"role": "assistant", "content": "A3", "reasoning_content": "new thoughts"},
        {"role": "user", "content": "Q4"},
        {"role": "assistant", "content": "A4"}]),
    "no_thinking_gen_prompt": dict(messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"}], add_generation_prompt=True, enable_thinking=False),
    "tools_without_system": dict(messages=[
        {"role": "user", "content": "Run it."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"name": "execute_python", "arguments": {"code": "x = 'é'"}}]},
        {"role": "tool", "content": ""}], tools=TOOLS, add_generation_prompt=True),
    "wrapped_tool_response_is_not_a_query": dict(messages=[
        {"role": "user", "content": "Go."},
        {"role": "assistant", "content": "", "reasoning_content": "call it",
         "tool_calls": [_call("submit", {})]},
        {"role": "user", "content": "<tool_response>\nok\n</tool_response>"},
        {"role": "system", "content": "Mid-conversation system note."},
        {"role": "assistant", "content": "Finished."}]),
}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_test_tokenizer(tmp_path_factory.mktemp("tok") / "qwen3-test", vocab_size=4096)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return ChatTokenizer.from_pretrained(tok_dir)


def _kwargs(conv):
    return {k: v for k, v in conv.items() if k != "messages"}


def _hf_ids(tok, conv):
    out = tok.hf.apply_chat_template(conv["messages"], tokenize=True, return_dict=False,
                                     **_kwargs(conv))
    return list(out)


def _runs(mask):
    """Maximal [start, end) runs of 1s."""
    runs, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_render_matches_apply_chat_template(tok, name):
    conv = CONVERSATIONS[name]
    hf_text = tok.hf.apply_chat_template(conv["messages"], tokenize=False, **_kwargs(conv))
    assert tok.render_text(conv["messages"], **_kwargs(conv)) == hf_text
    rendered = tok.render(conv["messages"], **_kwargs(conv))
    assert rendered.ids == _hf_ids(tok, conv)
    assert len(rendered.assistant_mask) == len(rendered.ids)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_assistant_mask_covers_exactly_assistant_turns(tok, name):
    conv = CONVERSATIONS[name]
    hf_text = tok.hf.apply_chat_template(conv["messages"], tokenize=False, **_kwargs(conv))
    # Independent of sandmle's renderer: every assistant body in transformers' rendering,
    # from after the `<|im_start|>assistant\n` header through its `<|im_end|>`.
    expected = re.findall(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", hf_text, flags=re.S)
    assert len(expected) == sum(m["role"] == "assistant" for m in conv["messages"])
    rendered = tok.render(conv["messages"], **_kwargs(conv))
    runs = _runs(rendered.assistant_mask)
    assert [tok.decode(rendered.ids[a:b]) for a, b in runs] == expected
    header = tok.generation_prompt_ids()
    for a, b in runs:
        assert rendered.ids[b - 1] == tok.im_end_id
        assert rendered.ids[a - len(header):a] == header
    # Unmasked tokens are everything else, so together they decode to the whole text.
    assert tok.decode(rendered.ids) == hf_text


def test_special_tokens_match_qwen3_layout(tok, tok_dir):
    names = [t for t, _ in cf.QWEN3_ADDED_TOKENS]
    ids = [tok.token_ids[t] for t in names]
    assert ids == list(range(tok.vocab_size - len(names), tok.vocab_size))
    assert type(tok.hf).__name__ == "Qwen2Tokenizer"
    assert tok.hf.eos_token == "<|im_end|>" and tok.hf.pad_token == "<|endoftext|>"
    assert tok.hf.bos_token is None
    assert tok.vocab_size == len(tok.hf) == 4096
    assert tok.hf.chat_template == cf.chat_template()
    text = "def f(x):\n    return x ** 2  # naïve ✓ 你好\n\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<think><tool_call><|im_end|>") == [
        tok.token_ids["<think>"], tok.token_ids["<tool_call>"], tok.im_end_id]


def test_buffer_agent_rollout_equals_full_render(tok):
    """Token-in-token-out: prompt, sampled turns and tool responses appended as ids."""
    msgs = AGENT
    buf = ChatBuffer.start(tok, msgs[:2], tools=TOOLS)
    i = 2
    while i < len(msgs):
        # At each sampling point the buffer is exactly the rendered prompt.
        expect = _hf_ids(tok, dict(messages=msgs[:i], tools=TOOLS, add_generation_prompt=True))
        assert buf.ids == expect
        buf.add_sampled(tok.assistant_ids(msgs[i]))
        i += 1
        responses = []
        while i < len(msgs) and msgs[i]["role"] == "tool":
            responses.append(msgs[i]["content"])
            i += 1
        if responses:
            buf.add_tool_responses(responses)
    # The rendered conversation ends with the newline after the last <|im_end|>, which nobody
    # samples (generation stops at <|im_end|>); otherwise ids and masks are identical.
    full = tok.render(msgs, tools=TOOLS)
    assert full.ids == _hf_ids(tok, dict(messages=msgs, tools=TOOLS))
    assert full.ids[-1:] == tok.encode("\n") and full.assistant_mask[-1] == 0
    assert buf.ids == full.ids[:-1]
    assert buf.mask == full.assistant_mask[:-1]
    kinds = [k for k, _, _ in buf.segments]
    assert kinds == ["prompt", "sampled", "tool", "sampled", "tool", "sampled", "tool", "sampled"]
    assert buf.segments[-1][2] == len(buf)


def test_append_helpers_equal_full_render(tok):
    msgs = AGENT[:4]
    prefix = tok.render(msgs[:3], tools=TOOLS).ids  # ends with "<|im_end|>\n"
    assert prefix[-2] == tok.im_end_id
    ids = tok.append_tool_responses(prefix[:-1], [msgs[3]["content"]])
    assert ids == _hf_ids(tok, dict(messages=msgs, tools=TOOLS, add_generation_prompt=True))
    ids = tok.append_tool_responses(prefix[:-1], [msgs[3]["content"]],
                                    add_generation_prompt=False)
    assert ids == _hf_ids(tok, dict(messages=msgs, tools=TOOLS))
    assert tok.generation_prompt_ids() == tok.encode("<|im_start|>assistant\n")
    assert tok.decode(tok.generation_prompt_ids(enable_thinking=False)) == (
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_new_user_turn_keeps_history_tokens(tok):
    """A new user query: the template would drop earlier reasoning; the buffer keeps what the
    policy saw, which equals rendering the history as it was and the new turn after it."""
    q1, q2 = {"role": "user", "content": "Q1"}, {"role": "user", "content": "Q2 — more"}
    a1 = {"role": "assistant", "content": "A1", "reasoning_content": "thinking 1"}
    a2 = {"role": "assistant", "content": "A2", "reasoning_content": "thinking 2"}
    buf = ChatBuffer.start(tok, [SYSTEM, q1])
    buf.add_sampled(tok.assistant_ids(a1))
    before = list(buf.ids)
    buf.add_user(q2["content"])
    assert buf.ids[:len(before)] == before
    seen = (tok.hf.apply_chat_template([SYSTEM, q1, a1], tokenize=False)
            + tok.hf.apply_chat_template([q2], tokenize=False, add_generation_prompt=True))
    assert buf.ids == tok.encode(seen)
    buf.add_sampled(tok.assistant_ids(a2))
    runs = _runs(buf.mask)
    assert [tok.decode(buf.ids[a:b]) for a, b in runs] == [
        "<think>\nthinking 1\n</think>\n\nA1<|im_end|>",
        "<think>\nthinking 2\n</think>\n\nA2<|im_end|>"]
    # The template's own rendering of the finished conversation differs only by the reasoning
    # it drops from the first turn.
    full = tok.hf.apply_chat_template([SYSTEM, q1, a1, q2, a2], tokenize=False)
    assert tok.decode(buf.ids) + "\n" == full.replace("assistant\nA1",
                                               "assistant\n<think>\nthinking 1\n</think>\n\nA1")


def test_truncated_turn_must_be_closed(tok):
    buf = ChatBuffer.start(tok, [TASK])
    buf.add_sampled(tok.encode("<think>\nunfinished"))
    with pytest.raises(ValueError, match="<\\|im_end\\|>"):
        buf.add_tool_responses(["x"])
    with pytest.raises(ValueError, match="closed assistant turn"):
        tok.append_user(buf.ids, "hello")
    buf.close_turn()
    assert buf.ids[-1] == tok.im_end_id and buf.mask[-1] == 0
    buf.close_turn()  # already closed: no second <|im_end|>
    assert buf.segments[-1][0] == "close" and buf.ids[-2] != tok.im_end_id
    buf.add_tool_responses(["x"])
    assert tok.decode(buf.ids).endswith(
        "unfinished<|im_end|>\n<|im_start|>user\n<tool_response>\nx\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("messages, match", [
    ([], "empty conversation"),
    ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
    ([{"role": "user", "content": [{"type": "text", "text": "x"}]}], "content must be a string"),
    ([{"role": "user", "content": None}], "content must be a string"),
    (["hello"], "must be a mapping"),
    ([{"role": "user", "content": "x"},
      {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}],
     "name and arguments"),
])
def test_bad_messages_raise(tok, messages, match):
    with pytest.raises(ValueError, match=match):
        tok.render(messages)


def test_bad_tool_responses_raise(tok):
    ids = tok.render([TASK, {"role": "assistant", "content": "ok"}]).ids[:-1]
    with pytest.raises(ValueError, match="non-empty sequence"):
        tok.append_tool_responses(ids, "a bare string")
    with pytest.raises(ValueError, match="must be a string"):
        tok.append_tool_responses(ids, [{"stdout": 1}])


def test_loading_errors(tmp_path, tok_dir):
    with pytest.raises(FileNotFoundError):
        ChatTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="cannot load a tokenizer"):
        ChatTokenizer.from_pretrained(tmp_path)  # empty directory
    # A foreign chat template is refused unless asked for.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, name), foreign / name)
    config = json.loads((foreign / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                               "<|im_end|>\n{% endfor %}")
    (foreign / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not render the Qwen3 format"):
        ChatTokenizer.from_pretrained(foreign)
    assert ChatTokenizer.from_pretrained(foreign, check_template=False).hf.chat_template == (
        config["chat_template"])
    # No template at all: sandmle's is installed.
    del config["chat_template"]
    (foreign / "tokenizer_config.json").write_text(json.dumps(config))
    assert ChatTokenizer.from_pretrained(foreign).hf.chat_template == cf.chat_template()


def test_tokenizer_without_chat_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="lacks the Qwen3 chat tokens"):
        ChatTokenizer(PreTrainedTokenizerFast(tokenizer_object=raw))


def test_build_rejects_tiny_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        build_test_tokenizer(tmp_path / "t", vocab_size=100)


def test_render_does_not_mutate_messages(tok):
    conv = copy.deepcopy(CONVERSATIONS["agent_tools"])
    tok.render(conv["messages"], tools=conv["tools"])
    assert conv == CONVERSATIONS["agent_tools"]


def test_console_entry_builds_loadable_tokenizer(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli-tok"
    proc = subprocess.run([sys.executable, "-m", "sandmle.models.tiny_tokenizer", f"--out={out}",
                           "--vocab_size=512"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "512 ids" in proc.stdout
    assert ChatTokenizer.from_pretrained(out).vocab_size == 512
