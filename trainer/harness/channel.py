"""The channel between a sandboxed harness process and the trusted runner: one AF_UNIX SOCK_SEQPACKET
socketpair the runner creates and passes to the process (run_sandboxed's ``pass_fds``).

Each message is one datagram of JSON (message boundaries are the socket's, so no framing to parse),
at most ``MAX_MESSAGE`` bytes; descriptors (a sealed memfd) may ride along with a message. The runner
reads it with a deadline it enforces itself, and never opens a file the run can plant (a FIFO, a
symlink): progress and results come only this way (docs: protocol/SPEC.md, "Evaluation").

Both sides use this module: the runner its own copy, the sandbox the copy mounted for it.
"""
from __future__ import annotations

import array
import json
import socket

MAX_MESSAGE = 1 << 16  # bytes of JSON per message; a curve of 64 points is ~2 KiB
MAX_FDS = 4


class ChannelError(Exception):
    """The peer sent something that is not a message of this protocol (or too much of it)."""


def pair() -> tuple[socket.socket, socket.socket]:
    """(runner's end, process's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise ChannelError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """One message and the descriptors it carried; (None, []) at end of stream. Blocks as the
    socket's timeout says (socket.timeout propagates). Raises ChannelError for a truncated (too
    long, or carrying more than MAX_FDS descriptors), non-JSON or non-object message; the
    descriptors of a refused message are closed."""
    data, ancdata, flags, _ = sock.recvmsg(MAX_MESSAGE + 1, socket.CMSG_SPACE(MAX_FDS * 4))
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - (len(payload) % got.itemsize)])
            fds.extend(got)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_MESSAGE:
        _close(fds)
        raise ChannelError("message too long")
    if not data:
        _close(fds)
        return None, []
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        _close(fds)
        raise ChannelError("message is not JSON") from None
    if not isinstance(obj, dict) or len(obj) != 1:
        _close(fds)
        raise ChannelError("message is not an object of one key")
    return obj, fds


def _close(fds: list[int]) -> None:
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
