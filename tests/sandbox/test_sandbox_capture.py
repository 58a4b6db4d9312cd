"""CappedStream keeps exactly the head and the tail and marks the cut."""

from __future__ import annotations

from sandmle.sandbox.capture import CappedStream


def test_short_stream_is_kept_whole():
    s = CappedStream(100)
    for part in (b"abc", b"def\n", "é".encode()):
        s.write(part)
    assert s.text() == "abcdef\né" and s.total == 9


def test_long_stream_keeps_head_and_tail_in_small_and_big_writes():
    data = bytes(range(256)) * 40  # 10240 bytes
    for chunk in (1, 7, 333, 5000, 20000):
        s = CappedStream(1000)
        for i in range(0, len(data), chunk):
            s.write(data[i:i + chunk])
        text = s.text()
        head, rest = text.split("\n...[sandbox: ", 1)
        assert head == data[:500].decode("utf-8", "replace")
        assert rest.startswith(f"{len(data) - 1000} bytes cut of {len(data)}]...\n")
        assert rest.split("]...\n", 1)[1] == data[-500:].decode("utf-8", "replace")
