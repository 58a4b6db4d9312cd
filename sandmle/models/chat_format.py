"""The Qwen3 chat format as Python: text pieces that know who produced them.

`qwen3_chat_template.jinja` (shipped next to this module) is what transformers and vLLM render;
this module renders the same string, but as a list of `Piece`s whose `trainable` flag marks the
characters the assistant produced (its turn body and closing `<|im_end|>`, never the
`<|im_start|>assistant\\n` header). Tests check both agree character for character, so the
tokenizer can turn the pieces into ids plus an exact assistant mask.

Message dicts follow the OpenAI / transformers convention:
  {"role": "system" | "user" | "assistant" | "tool", "content": str,
   "reasoning_content": str (assistant, optional),
   "tool_calls": [{"type": "function", "function": {"name": str, "arguments": dict | str}}]}
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from typing import Any, Mapping, Sequence

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
THINK_START, THINK_END = "<think>", "</think>"
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_START, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"

# Qwen3's added tokens, in the order (and so the relative ids) of the released tokenizer.
# `special` is what tokenizer.json says; the tag-like ones are added but not special.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True),
    (IM_START, True),
    (IM_END, True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    (TOOL_CALL_START, False),
    (TOOL_CALL_END, False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    (TOOL_RESPONSE_START, False),
    (TOOL_RESPONSE_END, False),
    (THINK_START, False),
    (THINK_END, False),
)

# Tokens the chat format cannot work without: each must be a single token of the vocabulary.
REQUIRED_TOKENS = (IM_START, IM_END, THINK_START, THINK_END, TOOL_CALL_START, TOOL_CALL_END,
                   TOOL_RESPONSE_START, TOOL_RESPONSE_END)

GENERATION_PROMPT = IM_START + "assistant\n"
EMPTY_THINK = THINK_START + "\n\n" + THINK_END + "\n\n"

_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')

_ROLES = ("system", "user", "assistant", "tool")


def chat_template() -> str:
    """The Jinja source of the shipped Qwen3 chat template."""
    return (importlib.resources.files("sandmle.models") / "qwen3_chat_template.jinja").read_text(
        encoding="utf-8")


@dataclasses.dataclass(frozen=True)
class Piece:
    """A run of rendered text; `trainable` marks text the assistant produced."""
    text: str
    trainable: bool = False


def to_json(value: Any) -> str:
    """JSON as the template's `tojson` filter writes it (transformers: no ASCII escaping)."""
    return json.dumps(value, ensure_ascii=False)


def _text(message: Mapping[str, Any], index: int, allow_none: bool) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and allow_none:
        return ""
    raise ValueError(
        f"message {index} ({message.get('role')!r}): content must be a string, got "
        f"{type(content).__name__}; multimodal content lists are not part of this format")


def _validate(messages: Sequence[Mapping[str, Any]]) -> None:
    if not messages:
        raise ValueError("cannot render an empty conversation")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {i} must be a mapping, got {type(message).__name__}")
        if message.get("role") not in _ROLES:
            raise ValueError(f"message {i}: unknown role {message.get('role')!r}; "
                             f"expected one of {_ROLES}")
        _text(message, i, allow_none=message["role"] == "assistant")


def _is_wrapped_tool_response(content: str) -> bool:
    return content.startswith(TOOL_RESPONSE_START) and content.endswith(TOOL_RESPONSE_END)


def last_query_index(messages: Sequence[Mapping[str, Any]]) -> int:
    """Index of the last real user query (not a wrapped tool response), else len - 1.

    Assistant turns after it keep their reasoning; earlier ones are rendered without it.
    """
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        content = message.get("content")
        if (message.get("role") == "user" and isinstance(content, str)
                and not _is_wrapped_tool_response(content)):
            return i
    return len(messages) - 1


def split_reasoning(message: Mapping[str, Any]) -> tuple[str, str]:
    """(reasoning, content) of an assistant message, as the template derives them."""
    content = message.get("content")
    content = content if isinstance(content, str) else ""
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str):
        return reasoning, content
    if THINK_END in content:
        reasoning = content.split(THINK_END)[0].rstrip("\n").split(THINK_START)[-1].lstrip("\n")
        return reasoning, content.split(THINK_END)[-1].lstrip("\n")
    return "", content


def tool_call_text(call: Mapping[str, Any]) -> str:
    """One `<tool_call>` block; `call` is {"function": {...}} or the function dict itself."""
    function = call.get("function") or call
    try:
        name, arguments = function["name"], function["arguments"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"tool call needs a name and arguments, got {call!r}") from e
    if not isinstance(arguments, str):
        arguments = to_json(arguments)
    return f'{TOOL_CALL_START}\n{{"name": "{name}", "arguments": {arguments}}}\n{TOOL_CALL_END}'


def assistant_body(message: Mapping[str, Any], with_think: bool) -> str:
    """What the assistant writes in its turn, before the closing `<|im_end|>`.

    `with_think` renders the reasoning block (`<think>\\n...\\n</think>\\n\\n`), as the template
    does for turns after the last user query (always for the final turn, otherwise only when the
    reasoning is non-empty).
    """
    reasoning, content = split_reasoning(message)
    if with_think:
        text = f"{THINK_START}\n{reasoning.strip(chr(10))}\n{THINK_END}\n\n{content.lstrip(chr(10))}"
    else:
        text = content
    for i, call in enumerate(message.get("tool_calls") or ()):
        if content or i > 0:
            text += "\n"
        text += tool_call_text(call)
    return text


def system_text(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> str:
    """The leading system turn (empty when there is neither a system message nor tools)."""
    first_is_system = messages[0].get("role") == "system"
    if tools:
        text = IM_START + "system\n"
        if first_is_system:
            text += _text(messages[0], 0, allow_none=False) + "\n\n"
        text += _TOOLS_HEADER + "".join("\n" + to_json(tool) for tool in tools)
        return text + _TOOLS_FOOTER + IM_END + "\n"
    if first_is_system:
        return IM_START + "system\n" + _text(messages[0], 0, allow_none=False) + IM_END + "\n"
    return ""


def tool_responses_text(contents: Sequence[str]) -> str:
    """One user turn wrapping each tool output in `<tool_response>` (no trailing newline)."""
    body = "".join(f"\n{TOOL_RESPONSE_START}\n{c}\n{TOOL_RESPONSE_END}" for c in contents)
    return IM_START + "user" + body + IM_END + "\n"


def generation_prompt(enable_thinking: bool = True) -> str:
    """The text that opens an assistant turn for sampling."""
    return GENERATION_PROMPT + ("" if enable_thinking else EMPTY_THINK)


def render_pieces(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None,
                  add_generation_prompt: bool = False,
                  enable_thinking: bool = True) -> list[Piece]:
    """Render a conversation as the shipped template does, split by who wrote each piece."""
    _validate(messages)
    pieces = [Piece(system_text(messages, tools))]
    last_query = last_query_index(messages)
    n = len(messages)
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "user" or (role == "system" and i > 0):
            pieces.append(Piece(IM_START + role + "\n" + _text(message, i, False) + IM_END + "\n"))
        elif role == "assistant":
            reasoning, _ = split_reasoning(message)
            with_think = i > last_query and (i == n - 1 or bool(reasoning))
            pieces.append(Piece(GENERATION_PROMPT))
            pieces.append(Piece(assistant_body(message, with_think) + IM_END, trainable=True))
            pieces.append(Piece("\n"))
        elif role == "tool":
            opens = i == 0 or messages[i - 1]["role"] != "tool"
            closes = i == n - 1 or messages[i + 1]["role"] != "tool"
            text = (IM_START + "user" if opens else "")
            text += f"\n{TOOL_RESPONSE_START}\n{_text(message, i, False)}\n{TOOL_RESPONSE_END}"
            pieces.append(Piece(text + (IM_END + "\n" if closes else "")))
    if add_generation_prompt:
        pieces.append(Piece(generation_prompt(enable_thinking)))
    return [p for p in pieces if p.text]


def render_text(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None,
                add_generation_prompt: bool = False, enable_thinking: bool = True) -> str:
    """The rendered conversation as one string (what `apply_chat_template(tokenize=False)` gives)."""
    return "".join(p.text for p in render_pieces(messages, tools, add_generation_prompt,
                                                 enable_thinking))
