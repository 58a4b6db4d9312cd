"""Qwen3 tokenizer: chat rendering with an assistant mask, and token-in-token-out helpers.

`ChatTokenizer` wraps a transformers tokenizer loaded from a local directory (a Qwen3
checkpoint, or one made by `sandmle.models.tiny_tokenizer.build_test_tokenizer`). It renders a
conversation to token ids identical to `apply_chat_template` with the Qwen3 template, together
with a mask that is 1 exactly on the tokens the assistant produced.

For multi-turn RL the history is never re-tokenised: `ChatBuffer` holds the ids the policy saw
and appends sampled tokens (mask 1), tool responses and user turns (mask 0) as token ids.
Appending after a closed assistant turn is exact: every appended piece starts right after
`<|im_end|>`, an added token, so tokenising it alone gives the same ids as tokenising the whole
conversation (added tokens split the text before the BPE model sees it).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from sandmle.models import chat_format as cf

Message = Mapping[str, Any]

# Conversations used to check that a checkpoint's own template renders the format implemented
# here; together they exercise every branch of the template.
PROBE_CONVERSATIONS: tuple[dict[str, Any], ...] = (
    dict(messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=True),
    dict(messages=[
        {"role": "system", "content": "You are an ML engineer."},
        {"role": "user", "content": "Train a model."},
        {"role": "assistant", "content": "<think>\nplan\n</think>\n\nRunning it.",
         "tool_calls": [{"type": "function",
                         "function": {"name": "run", "arguments": {"code": "print(1)"}}}]},
        {"role": "tool", "content": "1"},
        {"role": "tool", "content": "ok"},
        {"role": "assistant", "content": "Done.", "reasoning_content": "it ran"},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "Yes."},
    ], tools=[{"type": "function", "function": {"name": "run", "parameters": {}}}]),
    dict(messages=[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
                   {"role": "user", "content": "Q2"}], add_generation_prompt=True,
         enable_thinking=False),
)


@dataclasses.dataclass
class Rendered:
    """Token ids of a rendered conversation and the assistant mask (1 = assistant produced)."""
    ids: list[int]
    assistant_mask: list[int]


class ChatTokenizer:
    """The Qwen3 chat format over a Hugging Face tokenizer.

    Args:
      tokenizer: a transformers fast tokenizer whose vocabulary has Qwen3's added tokens.
    """

    def __init__(self, tokenizer: Any):
        self.hf = tokenizer
        self._backend = getattr(tokenizer, "backend_tokenizer", None)
        if self._backend is None:
            raise ValueError(f"{type(tokenizer).__name__} is not a fast (tokenizers-backed) "
                             "tokenizer; offsets for the assistant mask need one")
        missing = [t for t in cf.REQUIRED_TOKENS if self._backend.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the Qwen3 chat tokens {missing}; it cannot render "
                             "the chat format (build one with build_test_tokenizer)")
        ids = {t: self._backend.token_to_id(t) for t, _ in cf.QWEN3_ADDED_TOKENS}
        self.token_ids: dict[str, int] = {t: i for t, i in ids.items() if i is not None}
        self.im_start_id = self.token_ids[cf.IM_START]
        self.im_end_id = self.token_ids[cf.IM_END]
        # Qwen3 pads with <|endoftext|>; fall back to <|im_end|> for tokenizers without it.
        self.pad_id = self.token_ids.get(cf.ENDOFTEXT, self.im_end_id)
        # Generation stops at either; Qwen3's generation_config lists both.
        self.stop_ids = tuple(sorted({self.im_end_id, self.pad_id}))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, check_template: bool = True
                        ) -> "ChatTokenizer":
        """Load `AutoTokenizer` from a local directory (never the Hub).

        A directory without a chat template gets the shipped Qwen3 one. With `check_template`,
        a directory whose own template renders the probe conversations differently from this
        module raises, since masks and token-in-token-out would then disagree with what the
        model was trained on.
        """
        from transformers import AutoTokenizer

        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer directory {path!s} does not exist")
        try:
            hf = AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load a tokenizer from {path!s}: {e}") from e
        if not getattr(hf, "is_fast", False):
            raise ValueError(f"tokenizer at {path!s} is not a fast (tokenizers) tokenizer")
        if not hf.chat_template:
            hf.chat_template = cf.chat_template()
        tok = cls(hf)
        if check_template:
            bad = tok.template_mismatch()
            if bad is not None:
                raise ValueError(f"the chat template in {path!s} does not render the Qwen3 format "
                                 f"sandmle implements ({bad}); pass check_template=False to use "
                                 "it anyway, or replace it with sandmle's template")
        return tok

    # ---- plain text <-> ids ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit (base vocabulary plus added tokens)."""
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; added tokens in the text become their ids, nothing is added."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`."""
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---- whole conversations ---------------------------------------------------------------
    def render_text(self, messages: Sequence[Message], tools: Sequence[Any] | None = None,
                    add_generation_prompt: bool = False, enable_thinking: bool = True) -> str:
        """The conversation as text, identical to `apply_chat_template(..., tokenize=False)`."""
        return cf.render_text(messages, tools, add_generation_prompt, enable_thinking)

    def render(self, messages: Sequence[Message], tools: Sequence[Any] | None = None,
               add_generation_prompt: bool = False, enable_thinking: bool = True) -> Rendered:
        """Token ids (as `apply_chat_template` gives them) and the assistant mask.

        The mask is 1 on each token that starts inside an assistant turn's body, from its first
        token through its `<|im_end|>`; 0 on the `<|im_start|>assistant\\n` header, the newline
        after `<|im_end|>`, and everything said by anyone else.
        """
        pieces = cf.render_pieces(messages, tools, add_generation_prompt, enable_thinking)
        return self._encode_pieces(pieces)

    def _encode_pieces(self, pieces: Sequence[cf.Piece]) -> Rendered:
        text = "".join(p.text for p in pieces)
        encoding = self._backend.encode(text, add_special_tokens=False)
        # Character ranges the assistant wrote; tokens are assigned by where they start.
        spans, pos = [], 0
        for piece in pieces:
            if piece.trainable:
                spans.append((pos, pos + len(piece.text)))
            pos += len(piece.text)
        mask, k = [], 0
        for start, _ in encoding.offsets:
            while k < len(spans) and start >= spans[k][1]:
                k += 1
            mask.append(int(k < len(spans) and spans[k][0] <= start))
        return Rendered(list(encoding.ids), mask)

    def template_mismatch(self) -> str | None:
        """None if the tokenizer's chat template renders the probes as this module does."""
        for probe in PROBE_CONVERSATIONS:
            kwargs = {k: v for k, v in probe.items() if k != "messages"}
            try:
                theirs = self.hf.apply_chat_template(probe["messages"], tokenize=False, **kwargs)
            except Exception as e:  # a foreign template may fail on our probes in any way
                return f"template raised {type(e).__name__}: {e}"
            ours = self.render_text(probe["messages"], **kwargs)
            if theirs != ours:
                at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b),
                          min(len(theirs), len(ours)))
                return (f"renders differ at character {at}: template {theirs[at:at + 40]!r} vs "
                        f"sandmle {ours[at:at + 40]!r}")
        return None

    # ---- token-in-token-out pieces ---------------------------------------------------------
    def generation_prompt_ids(self, enable_thinking: bool = True) -> list[int]:
        """`<|im_start|>assistant\\n` (plus an empty think block when thinking is off)."""
        return self.encode(cf.generation_prompt(enable_thinking))

    def assistant_ids(self, message: Message, with_think: bool = True) -> list[int]:
        """The tokens an assistant turn consists of when sampled: body plus `<|im_end|>`.

        `with_think=True` is the form the policy writes after a generation prompt in thinking
        mode (what the template renders for turns after the last user query).
        """
        return self.encode(cf.assistant_body(message, with_think) + cf.IM_END)

    def tool_responses_ids(self, contents: Sequence[str], add_generation_prompt: bool = True,
                           enable_thinking: bool = True) -> list[int]:
        """Tokens to append after an assistant `<|im_end|>`: the newline that ends the turn,
        one user turn of `<tool_response>` blocks, and optionally the next generation prompt."""
        if isinstance(contents, str) or not contents:
            raise ValueError("tool responses must be a non-empty sequence of strings")
        text = "\n" + cf.tool_responses_text([_check_str(c, "tool response") for c in contents])
        return self.encode(text + (cf.generation_prompt(enable_thinking)
                                   if add_generation_prompt else ""))

    def user_ids(self, content: str, add_generation_prompt: bool = True,
                 enable_thinking: bool = True) -> list[int]:
        """Tokens to append after an assistant `<|im_end|>` for a new user turn."""
        text = "\n" + cf.IM_START + "user\n" + _check_str(content, "user content") + cf.IM_END
        text += "\n" + (cf.generation_prompt(enable_thinking) if add_generation_prompt else "")
        return self.encode(text)

    def ends_turn(self, ids: Sequence[int]) -> bool:
        """Whether `ids` end with a closed assistant turn (last token `<|im_end|>`)."""
        return bool(ids) and ids[-1] == self.im_end_id

    def append_tool_responses(self, ids: Sequence[int], contents: Sequence[str],
                              add_generation_prompt: bool = True,
                              enable_thinking: bool = True) -> list[int]:
        """`ids` (ending with the assistant's `<|im_end|>`) followed by the tool responses."""
        self._require_closed(ids)
        return list(ids) + self.tool_responses_ids(contents, add_generation_prompt,
                                                   enable_thinking)

    def append_user(self, ids: Sequence[int], content: str, add_generation_prompt: bool = True,
                    enable_thinking: bool = True) -> list[int]:
        """`ids` (ending with the assistant's `<|im_end|>`) followed by a user turn."""
        self._require_closed(ids)
        return list(ids) + self.user_ids(content, add_generation_prompt, enable_thinking)

    def _require_closed(self, ids: Sequence[int]) -> None:
        if not self.ends_turn(ids):
            raise ValueError("token ids must end with <|im_end|> (a closed assistant turn) before "
                             "a new turn is appended; close a truncated turn first "
                             "(ChatBuffer.close_turn)")


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


@dataclasses.dataclass
class ChatBuffer:
    """A growing conversation held as token ids: what the policy saw, never re-tokenised.

    `mask` is 1 on tokens the policy sampled. `segments` records (kind, start, end) token ranges
    in the order they were appended; kinds are prompt, sampled, tool, user, close.
    """
    tokenizer: ChatTokenizer
    ids: list[int] = dataclasses.field(default_factory=list)
    mask: list[int] = dataclasses.field(default_factory=list)
    segments: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    enable_thinking: bool = True

    @classmethod
    def start(cls, tokenizer: ChatTokenizer, messages: Sequence[Message],
              tools: Sequence[Any] | None = None, enable_thinking: bool = True) -> "ChatBuffer":
        """A buffer holding the rendered `messages` plus the generation prompt.

        The whole prompt has mask 0, assistant turns inside it (few-shot demonstrations)
        included: the policy did not sample them.
        """
        rendered = tokenizer.render(messages, tools, add_generation_prompt=True,
                                    enable_thinking=enable_thinking)
        buf = cls(tokenizer, enable_thinking=enable_thinking)
        buf._add("prompt", rendered.ids, [0] * len(rendered.ids))
        return buf

    def _add(self, kind: str, ids: Sequence[int], mask: Sequence[int]) -> None:
        start = len(self.ids)
        self.ids.extend(ids)
        self.mask.extend(mask)
        self.segments.append((kind, start, len(self.ids)))

    def add_sampled(self, ids: Sequence[int]) -> None:
        """Append tokens the policy sampled (mask 1), normally ending with `<|im_end|>`."""
        self._add("sampled", list(ids), [1] * len(ids))

    def close_turn(self) -> None:
        """End a truncated assistant turn with `<|im_end|>` (mask 0: the policy did not emit it)."""
        if not self.tokenizer.ends_turn(self.ids):
            self._add("close", [self.tokenizer.im_end_id], [0])

    def add_tool_responses(self, contents: Sequence[str], add_generation_prompt: bool = True
                           ) -> None:
        """Append a user turn of tool responses (mask 0) and the next generation prompt."""
        self.tokenizer._require_closed(self.ids)
        ids = self.tokenizer.tool_responses_ids(contents, add_generation_prompt,
                                                self.enable_thinking)
        self._add("tool", ids, [0] * len(ids))

    def add_user(self, content: str, add_generation_prompt: bool = True) -> None:
        """Append a user turn (mask 0) and the next generation prompt."""
        self.tokenizer._require_closed(self.ids)
        ids = self.tokenizer.user_ids(content, add_generation_prompt, self.enable_thinking)
        self._add("user", ids, [0] * len(ids))

    def __len__(self) -> int:
        return len(self.ids)
