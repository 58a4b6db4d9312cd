"""Capped capture of a job's output stream: head and tail kept, the cut marked."""

from __future__ import annotations

import collections


class CappedStream:
    """Keeps the first and last `keep // 2` bytes of a stream and counts the rest."""

    def __init__(self, keep: int):
        self.head_cap = keep // 2
        self.tail_cap = keep - self.head_cap
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_len = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data:
            return
        if len(data) >= self.tail_cap:
            self.tail.clear()
            self.tail.append(data[-self.tail_cap:])
            self.tail_len = self.tail_cap
            return
        self.tail.append(data)
        self.tail_len += len(data)
        while self.tail_len - len(self.tail[0]) >= self.tail_cap:
            self.tail_len -= len(self.tail.popleft())

    def text(self) -> str:
        """Decoded head + marker + tail (the marker only when bytes were cut)."""
        tail = b"".join(self.tail)
        if len(tail) > self.tail_cap:
            tail = tail[-self.tail_cap:]
        cut = self.total - len(self.head) - len(tail)
        if cut <= 0:
            return (bytes(self.head) + tail).decode("utf-8", "replace")
        marker = f"\n...[sandbox: {cut} bytes cut of {self.total}]...\n"
        return (bytes(self.head).decode("utf-8", "replace") + marker
                + tail.decode("utf-8", "replace"))
