"""Tests for sandmle.envgen.llm against a local replay server."""

import pytest

from sandmle.envgen import llm
from sandmle.envgen.replay_server import ReplayServer


def _client(server, **kw):
    cfg = llm.default_config()
    cfg.base_url, cfg.backoff_s, cfg.timeout_s = server.base_url, 0.01, 5.0
    cfg.update(kw)
    return llm.ChatClient(cfg)


def test_chat_retries_transport_errors():
    with ReplayServer([{"status": 500}, {"raw": b"{bad json"}, "hello"]) as s:
        reply = _client(s).chat([{"role": "user", "content": "hi"}])
    assert reply.content == "hello" and len(s.requests) == 3


def test_chat_gives_up():
    with ReplayServer([{"status": 500}] * 5) as s:
        with pytest.raises(llm.LLMError, match="no usable reply after 2 tries"):
            _client(s, max_retries=1).chat([{"role": "user", "content": "hi"}])


def test_extractors():
    code = llm.extract_code(llm.Reply("text\n```python\nprint(1)\n```\nmore", "stop"))
    assert code == "print(1)\n"
    with pytest.raises(llm.ReplyError, match="not closed"):
        llm.extract_code(llm.Reply("```python\nprint(1", "stop"))
    with pytest.raises(llm.ReplyError, match="truncated"):
        llm.extract_code(llm.Reply("```python\nprint(1)\n```", "length"))
    assert llm.extract_json(llm.Reply('sure: ```json\n{"a": 1}\n```', "stop")) == {"a": 1}
    with pytest.raises(llm.ReplyError, match="invalid JSON"):
        llm.extract_json(llm.Reply('{"a": 1,,}', "stop"))
    assert llm.extract_text(llm.Reply("```markdown\n# T\n```", "stop")) == "# T\n"


def test_ask_verified_feeds_errors_back():
    answers = ["no code here", "```python\nraise ValueError('boom')\n```",
               "```python\nx = 2\n```"]

    def verify(code):
        scope = {}
        exec(code, scope)  # the test's own recorded code, not untrusted input
        return scope["x"]

    with ReplayServer(answers) as s:
        value, reasons = llm.ask_verified(_client(s), [{"role": "user", "content": "code"}],
                                          llm.extract_code, verify, max_attempts=3, what="code")
    assert value == 2
    assert "no ```python code block" in reasons[0] and "boom" in reasons[1]
    # The third request carries both failures back to the model.
    fed = [m["content"] for m in s.requests[2]["messages"] if m["role"] == "user"]
    assert any("boom" in m for m in fed) and any("code block" in m for m in fed)


def test_ask_verified_exhausts():
    with ReplayServer(["nope", "still nope"]) as s:
        with pytest.raises(llm.LLMRoleError) as err:
            llm.ask_verified(_client(s), [{"role": "user", "content": "q"}], llm.extract_json,
                             lambda v: v, max_attempts=2)
    assert len(err.value.reasons) == 2
