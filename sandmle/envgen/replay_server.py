"""An OpenAI-compatible chat server that replays recorded answers, for tests and offline runs.

Each POST to /v1/chat/completions pops the next recorded answer: a string (sent as the
assistant message), a dict {"content", "finish_reason"}, {"status": 500} for an HTTP error,
or {"raw": b"..."} for a body sent verbatim (malformed replies). Requests are kept in
`requests` so tests can check what the roles asked (e.g. that errors were fed back).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ReplayServer:
    """Serves `answers` in order on 127.0.0.1 from a daemon thread; use as a context manager."""

    def __init__(self, answers: list[Any]):
        self.answers = list(answers)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    answer = server.answers.pop(0) if server.answers else {"status": 503}
                if isinstance(answer, str):
                    answer = {"content": answer}
                if "status" in answer:
                    self.send_response(answer["status"])
                    self.end_headers()
                    return
                if "raw" in answer:
                    data = answer["raw"]
                else:
                    data = json.dumps({
                        "id": "replay", "object": "chat.completion", "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": answer.get("finish_reason", "stop"),
                                     "message": {"role": "assistant", "content": answer["content"]}}],
                    }).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "ReplayServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
