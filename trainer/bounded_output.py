"""Bounded capture of a child's output: a program printing without end must not exhaust our memory.

Keeps the head and the tail of the stream (a training script's `key: value` summary comes last) and
counts what was dropped in between; the pipe is always drained, so the child never blocks on a full pipe.
"""
from __future__ import annotations


class BoundedBuffer:
    def __init__(self, cap_bytes: int) -> None:
        self.head_cap = cap_bytes // 2
        self.tail_cap = cap_bytes - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail += chunk
        # trim only once the tail is twice its cap, so trimming costs O(1) amortized per byte
        if len(self.tail) > 2 * self.tail_cap:
            cut = len(self.tail) - self.tail_cap
            self.dropped += cut
            del self.tail[:cut]

    def text(self) -> str:
        tail = self.tail
        dropped = self.dropped
        if len(tail) > self.tail_cap:
            dropped += len(tail) - self.tail_cap
            tail = tail[len(tail) - self.tail_cap:]
        middle = f"\n[... {dropped} bytes of output dropped ...]\n".encode() if dropped else b""
        return bytes(self.head + middle + tail).decode("utf-8", errors="replace")
