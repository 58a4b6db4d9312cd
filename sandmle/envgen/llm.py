"""A small client for an OpenAI-compatible chat endpoint, and the verify-and-retry loop.

LLM-backed roles never trust a reply: `ask_verified` parses it (code block, JSON object or
text), runs the caller's verification on it, and on any failure feeds the error back to the
model as the next user turn, for a bounded number of attempts. Transport failures (HTTP 5xx,
429, connection errors, malformed response bodies) are retried separately with backoff.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any, Callable

import ml_collections


class LLMError(RuntimeError):
    """The endpoint could not be reached or answered with something that is not a chat reply."""


class ReplyError(ValueError):
    """A reply was received but is unusable (no code block, bad JSON, truncated, rejected)."""


class LLMRoleError(RuntimeError):
    """Every attempt failed; `reasons` lists why, one entry per attempt."""

    def __init__(self, message: str, reasons: list[str]):
        super().__init__(message + ": " + " | ".join(reasons))
        self.reasons = reasons

    @property
    def endpoint_failed(self) -> bool:
        """Whether the last attempt failed because the endpoint did not answer."""
        return bool(self.reasons) and self.reasons[-1].startswith("endpoint:")


def default_config() -> ml_collections.ConfigDict:
    """Endpoint settings; `base_url` like http://127.0.0.1:8000/v1."""
    return ml_collections.ConfigDict({
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "default",
        "api_key": "",
        "timeout_s": 60.0,
        "max_retries": 3,        # transport retries per request
        "backoff_s": 0.5,        # doubled after each transport failure
        "max_attempts": 3,       # reply -> verify -> feedback rounds
        "temperature": 0.7,
        "max_tokens": 4096,
        "probe_timeout_s": 5.0,  # the reachability check before a run starts
        "max_endpoint_failures": 2,  # candidates in a row lost to the endpoint -> stop
    })


def probe(config: ml_collections.ConfigDict) -> None:
    """Checks that the endpoint answers at all (GET <base_url>/models) before a run spends
    time on candidates; raises LLMError naming the URL when it is unreachable or failing.
    Any HTTP answer but 500/502/503/504 counts as alive (a server may not list models)."""
    url = config.base_url.rstrip("/") + "/models"
    timeout = min(float(config.timeout_s), float(config.get("probe_timeout_s", 5.0)))
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code in (500, 502, 503, 504):
            raise LLMError(f"{config.base_url} answers HTTP {e.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise LLMError(f"{config.base_url} is unreachable ({reason})") from None


@dataclasses.dataclass
class Reply:
    """One chat completion: its text and why generation stopped."""

    content: str
    finish_reason: str | None


class ChatClient:
    """POSTs /chat/completions to an OpenAI-compatible server with urllib."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    def chat(self, messages: list[dict[str, str]]) -> Reply:
        """Sends the conversation and returns the first choice; raises LLMError after retries."""
        body = json.dumps({"model": self.config.model, "messages": messages,
                           "temperature": self.config.temperature,
                           "max_tokens": self.config.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        delay, errors = self.config.backoff_s, []
        for attempt in range(self.config.max_retries + 1):
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as resp:
                    raw = resp.read()
                return _parse_completion(raw)
            except urllib.error.HTTPError as e:
                errors.append(f"HTTP {e.code}")
                if e.code < 500 and e.code != 429:
                    break  # a client error will not go away by asking again
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                errors.append(f"{type(e).__name__}: {e}")
            except LLMError as e:
                errors.append(str(e))
            if attempt < self.config.max_retries:
                time.sleep(delay)
                delay *= 2
        raise LLMError(f"{self.url}: no usable reply after {len(errors)} tries ({'; '.join(errors)})")


def _parse_completion(raw: bytes) -> Reply:
    try:
        payload = json.loads(raw.decode("utf-8"))
        choice = payload["choices"][0]
        content = choice["message"]["content"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
        raise LLMError(f"malformed completion body ({type(e).__name__}: {raw[:80]!r})") from e
    if not isinstance(content, str):
        raise LLMError(f"completion content is {type(content).__name__}, not text")
    return Reply(content=content, finish_reason=choice.get("finish_reason"))


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(reply: Reply, language: str = "python") -> str:
    """The longest fenced code block of `language` (or unlabelled) in the reply."""
    _check_truncation(reply)
    blocks = [body for lang, body in _FENCE.findall(reply.content)
              if lang.lower() in ("", language, "py" if language == "python" else language)]
    if not blocks:
        if reply.content.count("```") % 2 == 1:
            raise ReplyError("the code block is not closed (reply cut off?); send the whole block")
        raise ReplyError(f"no ```{language} code block in the reply")
    return max(blocks, key=len).strip() + "\n"


def extract_json(reply: Reply) -> dict:
    """A JSON object from the reply: a ```json block, or the outermost {...}."""
    _check_truncation(reply)
    blocks = [body for lang, body in _FENCE.findall(reply.content) if lang.lower() in ("", "json")]
    text = blocks[0] if blocks else reply.content
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ReplyError("no JSON object in the reply")
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ReplyError(f"invalid JSON: {e}") from e
    if not isinstance(value, dict):
        raise ReplyError("the JSON is not an object")
    return value


def extract_text(reply: Reply) -> str:
    """The reply's text with an enclosing ```markdown fence removed."""
    _check_truncation(reply)
    text = reply.content.strip()
    match = re.fullmatch(r"```[A-Za-z]*\n(.*)```", text, re.DOTALL)
    text = (match.group(1) if match else text).strip()
    if not text:
        raise ReplyError("empty reply")
    return text + "\n"


def _check_truncation(reply: Reply) -> None:
    if reply.finish_reason == "length":
        raise ReplyError("the reply was truncated at the token limit; answer more briefly")


def ask_verified(client: ChatClient, messages: list[dict[str, str]],
                 parse: Callable[[Reply], Any], verify: Callable[[Any], Any],
                 max_attempts: int, what: str = "answer") -> tuple[Any, list[str]]:
    """Asks, parses and verifies; feeds each failure back, up to `max_attempts` replies.

    Args:
      client: the chat client.
      messages: the opening conversation (system + user).
      parse: Reply -> value; raises ReplyError when the reply is unusable.
      verify: value -> result; raises any Exception to reject (its message is fed back).
      max_attempts: replies to try before giving up.
      what: names the thing asked for, in error messages.

    Returns:
      (verify's result, the reasons earlier attempts were rejected).

    Raises:
      LLMRoleError: every attempt failed, or the endpoint is unreachable.
    """
    conversation = list(messages)
    reasons: list[str] = []
    for _ in range(max_attempts):
        try:
            reply = client.chat(conversation)
        except LLMError as e:
            reasons.append(f"endpoint: {e}")
            break
        try:
            value = parse(reply)
            return verify(value), reasons
        except Exception as e:  # noqa: BLE001 - any failure is feedback for the model
            reason = f"{type(e).__name__}: {e}"[:2000]
            reasons.append(reason)
            conversation += [
                {"role": "assistant", "content": reply.content},
                {"role": "user", "content": f"Your {what} was rejected: {reason}\n"
                                            f"Fix the problem and reply with the full {what} again."},
            ]
    raise LLMRoleError(f"no verified {what} after {len(reasons)} attempt(s)", reasons)
