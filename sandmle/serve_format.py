"""OpenAI's request and response bodies <-> Qwen3's chat format, for sandmle-serve.

Requests are checked field by field; anything wrong raises `RequestError`, which the
server answers with HTTP 400 and OpenAI's error body. Chat messages (with `tools`, tool
calls whose arguments are JSON strings, and `tool` messages) are rendered by
`ChatTokenizer.render`, so the prompt is exactly what transformers' chat template gives.
A generated turn is split back into `reasoning_content` (the `<think>` block), `content`
and `tool_calls` (each `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` block
that parses; one that does not stays in the content, as vLLM's Hermes parser does).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from typing import Any

from sandmle.models import chat_format as cf

_CALL = re.compile(re.escape(cf.TOOL_CALL_START) + r"\s*(.*?)\s*" + re.escape(cf.TOOL_CALL_END),
                   re.DOTALL)


class RequestError(ValueError):
    """A request the server refuses (HTTP 400); `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": "invalid_request_error",
                          "param": self.param, "code": None}}


@dataclasses.dataclass
class Prompt:
    """A checked request: prompt ids and generation settings, one entry per choice."""

    ids: list[int]
    max_tokens: int
    n: int
    seed: int
    stop: list[str]
    chat: bool
    echo_model: str


def _int(body: dict, name: str, default: int | None, low: int) -> int | None:
    v = body.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise RequestError(f"'{name}' must be an integer >= {low}, got {v!r}", name)
    return v


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("'stop' must be a string or a list of non-empty strings", "stop")
    return stop


def parse_request(body: Any, tokenizer: Any, chat: bool, max_model_len: int,
                  default_max_tokens: int, model_name: str) -> Prompt:
    """Checks a /v1/chat/completions (chat) or /v1/completions body; prompt ids included."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if body.get("stream"):
        raise RequestError("'stream' is not supported by sandmle-serve; send stream=false",
                           "stream")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty list", "messages")
        tools = body.get("tools") or None
        if tools is not None and not isinstance(tools, list):
            raise RequestError("'tools' must be a list", "tools")
        kwargs = body.get("chat_template_kwargs") or {}
        try:
            ids = tokenizer.render(messages, tools, add_generation_prompt=True,
                                   enable_thinking=bool(kwargs.get("enable_thinking", True))).ids
        except (ValueError, TypeError, KeyError) as e:
            raise RequestError(f"'messages' cannot be rendered: {e}", "messages") from None
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = tokenizer.encode(prompt)
        elif isinstance(prompt, list) and prompt and all(
                isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            if any(i < 0 or i >= tokenizer.vocab_size for i in prompt):
                raise RequestError(f"'prompt' holds token ids outside [0, "
                                   f"{tokenizer.vocab_size})", "prompt")
            ids = list(prompt)
        else:
            raise RequestError("'prompt' must be a string, a list of one string, or a list "
                               "of token ids", "prompt")
        if not ids:
            raise RequestError("'prompt' is empty", "prompt")
    max_tokens = _int(body, "max_completion_tokens", None, 1)
    max_tokens = _int(body, "max_tokens", max_tokens, 1)
    room = max_model_len - len(ids)
    if room < 1 or (max_tokens is not None and max_tokens > room):
        asked = max_tokens if max_tokens is not None else 1
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {len(ids) + asked} tokens ({len(ids)} in the "
            f"{'messages' if chat else 'prompt'}, {asked} in the completion). Please reduce "
            f"the length of the {'messages' if chat else 'prompt'} or completion.",
            "messages" if chat else "prompt")
    n = _int(body, "n", 1, 1)
    if n > 16:
        raise RequestError("'n' must be <= 16", "n")
    seed = _int(body, "seed", None, 0)
    if seed is None:
        seed = uuid.uuid4().int % (2**31 - 1)
    return Prompt(ids=ids, max_tokens=max_tokens or min(default_max_tokens, room), n=n,
                  seed=seed, stop=_stop(body), chat=chat,
                  echo_model=str(body.get("model") or model_name))


def split_turn(text: str) -> dict[str, Any]:
    """A generated assistant turn -> OpenAI message fields (reasoning, content, tool calls)."""
    text = text.removesuffix(cf.IM_END).removesuffix(cf.ENDOFTEXT)
    reasoning = None
    stripped = text.lstrip()
    if stripped.startswith(cf.THINK_START):
        inner = stripped[len(cf.THINK_START):]
        if cf.THINK_END in inner:
            reasoning, text = inner.split(cf.THINK_END, 1)
            reasoning = reasoning.strip("\n")
        else:  # cut inside its thinking
            reasoning, text = inner.strip("\n"), ""
    calls, kept, last = [], [], 0
    for m in _CALL.finditer(text):
        try:
            call = json.loads(m.group(1))
            name, args = call["name"], call.get("arguments", {})
            if not isinstance(name, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            continue  # not a call: stays in the content
        kept.append(text[last:m.start()])
        last = m.end()
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": name, "arguments": args if isinstance(args, str)
                                   else json.dumps(args, ensure_ascii=False)}})
    kept.append(text[last:])
    content = "".join(kept).strip()
    return {"role": "assistant", "content": content or (None if calls else ""),
            "reasoning_content": reasoning, **({"tool_calls": calls} if calls else {})}


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """`text` up to the first of the request's stop strings (excluded), and whether one hit."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def response(prompt: Prompt, outputs: list[tuple[str, str, int]], timing: dict[str, Any]
             ) -> dict[str, Any]:
    """The response body; `outputs` holds (text, finish reason, tokens) per choice."""
    choices = []
    for i, (text, finish, _) in enumerate(outputs):
        text, hit = cut_at_stop(text, prompt.stop)
        finish = "stop" if hit else finish
        if prompt.chat:
            message = split_turn(text)
            if message.get("tool_calls") and finish == "stop":
                finish = "tool_calls"
            choices.append({"index": i, "message": message, "finish_reason": finish,
                            "logprobs": None})
        else:
            choices.append({"index": i, "text": text, "finish_reason": finish,
                            "logprobs": None})
    completion = sum(n for _, _, n in outputs)
    return {"id": f"{'chatcmpl' if prompt.chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if prompt.chat else "text_completion",
            "created": int(time.time()), "model": prompt.echo_model, "choices": choices,
            "usage": {"prompt_tokens": len(prompt.ids), "completion_tokens": completion,
                      "total_tokens": len(prompt.ids) + completion},
            "sandmle": timing}
