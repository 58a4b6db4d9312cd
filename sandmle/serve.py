"""sandmle-serve: an OpenAI-compatible endpoint over a checkpoint or a Hugging Face directory.

  sandmle-serve --checkpoint=/tmp/run                 # a train workdir (newest step)
  sandmle-serve --hf=/tmp/run_hf --port=8000          # a Hugging Face Qwen3 directory

Serves on http://127.0.0.1:8000/v1 (localhost unless --host says otherwise):
`POST /v1/chat/completions` (messages with `tools`; tool calls come back in OpenAI's
format, written by the model in Qwen3's `<tool_call>` format inside, with the `<think>`
block as `reasoning_content`), `POST /v1/completions` (a text prompt or token ids) and
`GET /v1/models`. Requests from concurrent clients are batched: every request enters the
sampling engine as it arrives and shares its decode steps with the others. A request that
does not fit the model's context (--max_model_len) or is malformed gets HTTP 400 with
OpenAI's error body, and the server keeps serving. Sampling settings are the server's
(--temperature, --top_p); a request's `seed`, `max_tokens`, `stop` and `n` are honoured.
Streaming is not supported.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Any

from absl import flags, logging

from sandmle.errors import UserError


@dataclasses.dataclass
class Finished:
    """One generation: its ids, why it stopped, and the scheduler steps it spanned."""

    tokens: list[int]
    finish_reason: str
    timing: dict[str, int]


class Scheduler:
    """Feeds requests into a sampling engine from any thread and resolves their futures.

    One thread owns the engine (and so the model): it admits what arrived, runs one
    `engine.step()` (a decode step shared by every live request), hands finished turns
    back and releases them. `steps` counts engine steps; each result says at which steps
    its request was admitted and finished and how many requests were live then.

    Args:
      engine: `add(Request) -> handle`, `step() -> [turn]`, `release(handle)`.
      request_cls: the engine's Request type.
      gather_s: when idle, wait up to this long after a first request for others to join
        it (a lock-step engine cannot add them once its batch has started).
      max_batch: stop waiting as soon as this many requests are live.
    """

    def __init__(self, engine: Any, request_cls: Any, gather_s: float = 0.01,
                 max_batch: int = 16):
        self.engine, self.request_cls, self.gather_s = engine, request_cls, gather_s
        self.max_batch = max_batch
        self.steps = 0
        self.max_live = 0
        self._inbox: queue.Queue = queue.Queue()
        self._live: dict[int, tuple[concurrent.futures.Future, int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sandmle-serve-engine",
                                        daemon=True)
        self._thread.start()

    def submit(self, ids: list[int], max_tokens: int, seed: int, stop: list[str]
               ) -> "concurrent.futures.Future[Finished]":
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._inbox.put((ids, max_tokens, seed, stop, fut))
        return fut

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _admit(self, item: tuple) -> None:
        ids, max_tokens, seed, stop, fut = item
        try:
            handle = self.engine.add(self.request_cls(ids, max_tokens, stop_strings=stop or None,
                                                      seed=seed))
        except (ValueError, RuntimeError) as e:
            fut.set_exception(e)
            return
        self._live[handle] = (fut, self.steps, 0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._live:
                try:
                    first = self._inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._admit(first)
                deadline = time.monotonic() + self.gather_s
                while len(self._live) < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        self._admit(self._inbox.get(timeout=left))
                    except queue.Empty:
                        break
            while True:
                try:
                    self._admit(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if not self._live:
                continue
            live = len(self._live)
            self.max_live = max(self.max_live, live)
            try:
                turns = self.engine.step()
            except Exception as e:  # noqa: BLE001 -- fail the requests, keep serving
                logging.exception("engine step failed")
                for handle, (fut, _, _) in list(self._live.items()):
                    fut.set_exception(RuntimeError(f"generation failed: {e}"))
                    self.engine.release(handle)
                self._live.clear()
                continue
            self.steps += 1
            for turn in turns:
                fut, start, _ = self._live.pop(turn.handle)
                self.engine.release(turn.handle)
                fut.set_result(Finished([int(t) for t in turn.tokens], turn.finish_reason,
                                        {"start_step": start, "end_step": self.steps,
                                         "live_at_end": live}))


class LockstepEngine:
    """An engine over `Sampler.generate`: each step generates, as one batch, every request
    added since the last step (lock-step batching; requests arriving meanwhile wait for
    the next batch). Per-request stop strings are applied to the text afterwards."""

    @dataclasses.dataclass
    class Request:
        ids: list[int]
        max_new_tokens: int
        stop_strings: Any = None
        seed: int = 0

    @dataclasses.dataclass
    class Turn:
        handle: int
        tokens: list[int]
        finish_reason: str

    def __init__(self, sampler: Any, sampling: Any):
        self.sampler, self.sampling = sampler, sampling
        self._queue: list[tuple[int, Any]] = []
        self._next = 0

    def add(self, request: Any) -> int:
        self._next += 1
        self._queue.append((self._next, request))
        return self._next

    def step(self) -> list[Any]:
        queue_, self._queue = self._queue, []
        if not queue_:
            return []
        gen = self.sampler.generate([r.ids for _, r in queue_],
                                    max_new_tokens=[r.max_new_tokens for _, r in queue_],
                                    sampling=self.sampling, seed=queue_[0][1].seed)
        return [self.Turn(h, gen.tokens[i, :int(gen.lengths[i])].tolist(),
                          "length" if gen.finish_reasons[i] == "length" else "stop")
                for i, (h, _) in enumerate(queue_)]

    def release(self, handle: int) -> None:
        pass


def build_engine(model: Any, tokenizer: Any, num_slots: int, max_model_len: int,
                 sampling: Any, mesh: Any, rules: Any) -> tuple[Any, Any]:
    """(engine, its Request type): the continuous-batching Engine when this checkout has
    it, else lock-step batches over the Sampler."""
    try:
        from sandmle.sampling.engine import Engine, Request
    except ImportError:
        from sandmle.sampling import Sampler
        sampler = Sampler(model, tokenizer=tokenizer, mesh=mesh, rules=rules)
        return LockstepEngine(sampler, sampling), LockstepEngine.Request
    engine = Engine(model, tokenizer=tokenizer, num_slots=num_slots, max_seq_len=max_model_len,
                    sampling=sampling, mesh=mesh, rules=rules)
    return engine, Request


def _define_flags() -> None:
    # Defined when the command runs, not on import: other tools name flags alike.
    flags.DEFINE_string("checkpoint", None, "a train workdir, its checkpoints/ folder or a "
                        "step folder")
    flags.DEFINE_integer("step", None, "checkpoint step (default: the newest that restores)")
    flags.DEFINE_string("hf", None, "a Hugging Face Qwen3 directory (instead of --checkpoint)")
    flags.DEFINE_string("host", "127.0.0.1", "address to listen on (localhost by default)")
    flags.DEFINE_integer("port", 8000, "port to listen on")
    flags.DEFINE_string("model_name", "sandmle", "the model id /v1/models lists")
    flags.DEFINE_integer("max_model_len", 4096, "prompt + completion tokens per request")
    flags.DEFINE_integer("max_tokens", 512, "completion tokens when a request gives none")
    flags.DEFINE_integer("num_slots", 16, "requests decoded together")
    flags.DEFINE_integer("batch_wait_ms", 10, "when idle, how long a first request waits "
                         "for others to share its batch (ends early once num_slots are in)")
    flags.DEFINE_float("temperature", 1.0, "sampling temperature (0: greedy)")
    flags.DEFINE_float("top_p", 1.0, "nucleus sampling")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    fv = flags.FLAGS
    if bool(fv.checkpoint) == bool(fv.hf):
        raise UserError("give one model: --checkpoint=RUN_OR_STEP or --hf=DIR")
    if not 0 < fv.port < 65536 or fv.max_model_len < 2 or fv.num_slots < 1 or \
            fv.max_tokens < 1 or fv.temperature < 0 or fv.batch_wait_ms < 0:
        raise UserError("--port must be in 1..65535, --max_model_len >= 2, --num_slots, "
                        "--max_tokens >= 1, --temperature and --batch_wait_ms >= 0")
    from sandmle import eval_sources
    eval_sources.check_model_path("checkpoint" if fv.checkpoint else "hf",
                                  fv.checkpoint or fv.hf)
    import socket
    try:  # a busy port or a foreign address: say so before loading the model
        with socket.create_server((fv.host, fv.port)):
            pass
    except OSError as e:
        raise UserError(f"cannot listen on {fv.host}:{fv.port}: {e.strerror or e}") from None
    import ml_collections
    import uvicorn

    from sandmle import build
    from sandmle.sampling import SamplingParams
    mesh, rules = build.mesh_and_rules(ml_collections.ConfigDict(
        {"mesh": {"shape": (-1, 1, 1, 1)}}))
    if fv.checkpoint:
        model, tok, _, ckpt_dir, step = eval_sources.load_checkpoint(fv.checkpoint, fv.step,
                                                                     mesh, rules)
        what = f"{ckpt_dir} step {step}"
    else:
        model, tok = eval_sources.load_hf(fv.hf, "", mesh, rules)
        what = fv.hf
    sampling = SamplingParams(temperature=fv.temperature or 1.0, top_p=fv.top_p,
                              greedy=fv.temperature == 0)
    engine, request_cls = build_engine(model, tok, fv.num_slots, fv.max_model_len, sampling,
                                       mesh, rules)
    scheduler = Scheduler(engine, request_cls, gather_s=fv.batch_wait_ms / 1000,
                          max_batch=fv.num_slots)
    # Compile before the first client waits on it.
    scheduler.submit(tok.encode("warm up"), 2, 0, []).result()
    from sandmle.serve_app import make_app
    app = make_app(scheduler, tok, fv.model_name, fv.max_model_len, fv.max_tokens)
    config = uvicorn.Config(app, host=fv.host, port=fv.port, log_level="warning")
    server = uvicorn.Server(config)
    print(f"sandmle-serve: {what} on http://{fv.host}:{fv.port}/v1 "
          f"(model {fv.model_name!r})", flush=True)
    try:
        server.run()
    finally:
        scheduler.close()


def run() -> None:
    """Console script `sandmle-serve`."""
    from sandmle import cli
    _define_flags()
    cli.run_app(main, prog="sandmle-serve", doc=__doc__)


if __name__ == "__main__":
    run()
