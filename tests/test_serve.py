"""sandmle-serve through the official openai client: chat completions with tools, text
completions, a too-long request (400, the server keeps serving), two concurrent clients
batched together, and Qwen3 tool calls coming back in OpenAI's format."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import eval_helpers as E

openai = pytest.importorskip("openai", reason="needs the openai client (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
# One worker runs this module: its module fixture is built once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group("serve")
MAX_LEN = 512
TOOLS = [{"type": "function", "function": {
    "name": "run_python", "description": "Run a Python program in the task's sandbox.",
    "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                   "required": ["code"]}}}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """sandmle-serve over a tiny checkpoint, in its own process, as a user starts it.

    A first request waits up to 1.5 s for a second to share its batch: the Sampler runs
    lock-step batches, so two clients started together are batched only if both arrive
    before the batch starts (on a loaded machine they may be ~100 ms apart).
    """
    run = E.make_tiny_run(tmp_path_factory.mktemp("serve") / "run")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    log = open(run.parent / "serve.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandmle.serve", f"--checkpoint={run}", f"--port={port}",
         f"--max_model_len={MAX_LEN}", "--max_tokens=6", "--num_slots=2",
         "--batch_wait_ms=1500"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                           max_retries=0, timeout=300)
    try:
        deadline = time.time() + 300
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    pytest.fail(f"sandmle-serve did not start:\n{log.read()[-3000:]}")
                time.sleep(0.5)
        yield client, run
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_models_and_chat_completion_with_tools(server):
    client, run = server
    from sandmle.models.tokenizer import ChatTokenizer
    tok = ChatTokenizer.from_pretrained(run / "tokenizer")
    assert [m.id for m in client.models.list()] == ["sandmle"]
    messages = [
        {"role": "system", "content": "You are an ML engineer."},
        {"role": "user", "content": "Train a model on train.csv."},
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "run_python", "arguments": json.dumps({"code": "print(1)"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "1"},
    ]
    r = client.chat.completions.create(model="sandmle", messages=messages, tools=TOOLS,
                                       max_tokens=4, seed=3)
    assert r.object == "chat.completion" and len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("length", "stop", "tool_calls")
    # The prompt is exactly the Qwen3 chat template's rendering, tools and the call included.
    rendered = tok.render(messages, TOOLS, add_generation_prompt=True).ids
    assert r.usage.prompt_tokens == len(rendered)
    assert 1 <= r.usage.completion_tokens <= 4
    again = client.chat.completions.create(model="sandmle", messages=messages, tools=TOOLS,
                                           max_tokens=4, seed=3)
    assert again.choices[0].message.content == choice.message.content  # seeded


def test_completions_text_and_token_ids(server):
    client, _ = server
    r = client.completions.create(model="sandmle", prompt="def train(x):", max_tokens=5,
                                  seed=1)
    assert r.object == "text_completion" and isinstance(r.choices[0].text, str)
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens >= 1
    ids = client.completions.create(model="sandmle", prompt=[5, 6, 7, 8], max_tokens=3)
    assert ids.usage.prompt_tokens == 4
    two = client.completions.create(model="sandmle", prompt="a", max_tokens=2, n=2, seed=0)
    assert [c.index for c in two.choices] == [0, 1]


def test_too_long_request_is_a_clear_400_and_the_server_keeps_serving(server):
    client, _ = server
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="sandmle", prompt="hello " * 400, max_tokens=5)
    assert e.value.status_code == 400
    assert f"maximum context length is {MAX_LEN} tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model="sandmle", max_tokens=MAX_LEN,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="'messages' must be a non-empty list"):
        client.chat.completions.create(model="sandmle", messages=[])
    ok = client.completions.create(model="sandmle", prompt="still there?", max_tokens=2)
    assert ok.usage.completion_tokens >= 1


def test_two_concurrent_clients_share_a_batch(server):
    client, _ = server
    out: dict[int, dict] = {}
    barrier = threading.Barrier(2)

    def ask(i: int) -> None:
        barrier.wait()
        r = client.completions.create(model="sandmle", prompt=f"client {i}", max_tokens=6,
                                      seed=i)
        out[i] = r.model_extra["sandmle"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(out) == {0, 1}
    # The server's own record of engine steps: a request served strictly after the other
    # would be admitted at or after the step the other finished at.
    first, second = sorted(out.values(), key=lambda t: t["end_step"][0])
    assert second["start_step"][0] < first["end_step"][0], out


# -- tool calls in OpenAI's format, from Qwen3's <tool_call> blocks ---------------------

class ScriptedEngine:
    """An engine whose every generation is the given text: the routes, the parsing and the
    client are the real ones, the words are fixed (a random model writes no tool call)."""

    def __init__(self, tokenizer, text: str):
        self.ids = tokenizer.encode(text) + [tokenizer.im_end_id]
        self._queue: list = []

    def add(self, request):
        self._queue.append(request)
        return len(self._queue)

    def step(self):
        from sandmle.serve import LockstepEngine
        done = [LockstepEngine.Turn(h, self.ids[:r.max_new_tokens], "stop")
                for h, r in enumerate(self._queue, 1) if r is not None]
        self._queue = [None] * len(self._queue)
        return done

    def release(self, handle):
        pass


def test_qwen3_tool_calls_come_back_in_openai_format(tmp_path):
    uvicorn = pytest.importorskip("uvicorn")
    from sandmle.models.tokenizer import ChatTokenizer
    from sandmle.serve import LockstepEngine, Scheduler
    from sandmle.serve_app import make_app
    tok = ChatTokenizer.from_pretrained(E.agent_helpers.tokenizer_dir(str(tmp_path)))
    text = ('<think>\nfit a baseline first\n</think>\n\nLet me look.\n<tool_call>\n'
            '{"name": "run_python", "arguments": {"code": "import pandas"}}\n</tool_call>')
    scheduler = Scheduler(ScriptedEngine(tok, text), LockstepEngine.Request)
    app = make_app(scheduler, tok, "sandmle", 4096, 512)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                               max_retries=5)
        r = client.chat.completions.create(
            model="sandmle", tools=TOOLS, messages=[{"role": "user", "content": "go"}])
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me look."
        assert choice.message.model_extra["reasoning_content"] == "fit a baseline first"
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.function.name == "run_python"
        assert json.loads(call.function.arguments) == {"code": "import pandas"}
        assert call.id.startswith("call_")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        scheduler.close()


# -- an external scaffold from its own package ------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("aide") is None,
                    reason="aideml is not installed (pip install aideml)")
def test_aide_drives_the_endpoint_on_a_micro_task(server, tmp_path):
    client, _ = server
    task = E.make_task(tmp_path / "tasks", "t-binary", "binary", n_train=60, n_test=60)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "aide_scaffold.py"),
                           f"--task={task}", f"--endpoint={client.base_url}".rstrip("/"),
                           "--steps=1", f"--scratch={tmp_path / 'aide'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    served = re.search(r"engine steps served to AIDE: (\d+)", proc.stdout)
    assert served and int(served.group(1)) >= 1, proc.stdout  # AIDE's requests reached us
