"""The harness channel (trainer/harness/channel.py): JSON messages, one per SOCK_SEQPACKET datagram,
with descriptors riding along.

Run: .venv/bin/python -m pytest tests/trainer/test_channel.py -q
"""
from __future__ import annotations

import os
import socket

import pytest

from trainer.harness import channel
from trainer.harness.channel import MAX_FDS, MAX_MESSAGE, ChannelError


@pytest.fixture
def ends():
    a, b = channel.pair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_the_pair_is_a_seqpacket_socketpair(ends):
    a, b = ends
    assert a.family == socket.AF_UNIX and a.type == socket.SOCK_SEQPACKET
    assert b.family == socket.AF_UNIX and b.type == socket.SOCK_SEQPACKET


@pytest.mark.parametrize("message", [
    {"job": {"mode": "train", "budget_tokens": 1000, "stop_tokens": None, "seed": 0}},
    {"point": {"tokens": 1024, "loss": 5.25}},
    {"done": {"curve": [[10, "2.000000"], [20, "1.500000"]], "device": "cpu"}},
    {"error": "TypeError: unsupported operand (train.py line 3) \u00e9\u4e2d"},
    {"end": {}},
    {"batch": [64, 64]},
])
def test_messages_round_trip_in_both_directions(ends, message):
    a, b = ends
    channel.send(a, message)
    assert channel.recv(b) == (message, [])
    channel.send(b, message)
    assert channel.recv(a) == (message, [])


def test_message_boundaries_are_the_sockets(ends):
    a, b = ends
    for i in range(5):
        channel.send(a, {"point": {"tokens": i}})
    assert [channel.recv(b)[0]["point"]["tokens"] for _ in range(5)] == list(range(5))


def test_a_message_of_exactly_the_limit_passes(ends):
    a, b = ends
    overhead = len('{"x":""}')
    message = {"x": "y" * (MAX_MESSAGE - overhead)}
    channel.send(a, message)
    assert channel.recv(b) == (message, [])


def test_an_oversized_message_is_refused_by_send(ends):
    a, b = ends
    with pytest.raises(ChannelError, match="exceeds"):
        channel.send(a, {"x": "y" * MAX_MESSAGE})
    b.settimeout(0.2)
    with pytest.raises(socket.timeout):  # nothing was sent
        channel.recv(b)


def test_an_oversized_datagram_is_a_channel_error_on_receipt(ends):
    a, b = ends
    a.send(b"x" * (MAX_MESSAGE + 10))
    with pytest.raises(ChannelError, match="too long"):
        channel.recv(b)
    channel.send(a, {"ok": 1})  # the rest of the stream is still readable, datagram by datagram
    assert channel.recv(b) == ({"ok": 1}, [])


def test_an_oversized_datagram_closes_the_descriptors_it_carried(ends, tmp_path):
    a, b = ends
    fd = os.memfd_create("big")
    try:
        before = _open_fds()
        a.sendmsg([b"{" * (MAX_MESSAGE + 10)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))])
        with pytest.raises(ChannelError, match="too long"):
            channel.recv(b)
        assert _open_fds() == before
    finally:
        os.close(fd)


@pytest.mark.parametrize("raw, says", [
    (b"not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b'{"a": 1', "not JSON"),
    (b"[1, 2]", "not an object"),
    (b'"text"', "not an object"),
    (b"42", "not an object"),
    (b"null", "not an object"),
    (b"{}", "not an object of one key"),
    (b'{"a": 1, "b": 2}', "not an object of one key"),
])
def test_what_is_not_a_message_is_a_channel_error(ends, raw, says):
    a, b = ends
    a.send(raw)
    with pytest.raises(ChannelError, match=says):
        channel.recv(b)


def test_a_malformed_message_closes_the_descriptors_it_carried(ends):
    a, b = ends
    fd = os.memfd_create("junk")
    try:
        before = _open_fds()
        a.sendmsg([b"[1]"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))])
        with pytest.raises(ChannelError):
            channel.recv(b)
        assert _open_fds() == before
    finally:
        os.close(fd)


def test_descriptors_ride_along(ends):
    a, b = ends
    fd = os.memfd_create("shared")
    try:
        os.write(fd, b"the shared bytes")
        channel.send(a, {"job": {"mode": "model"}}, (fd,))
        message, fds = channel.recv(b)
        assert message == {"job": {"mode": "model"}} and len(fds) == 1
        try:
            assert fds[0] != fd
            assert os.pread(fds[0], 100, 0) == b"the shared bytes"
            os.pwrite(fds[0], b"THE", 0)  # the very same file, not a copy
            assert os.pread(fd, 3, 0) == b"THE"
        finally:
            os.close(fds[0])
    finally:
        os.close(fd)


def test_up_to_max_fds_descriptors_ride_along(ends):
    a, b = ends
    mine = [os.memfd_create(f"m{i}") for i in range(MAX_FDS)]
    try:
        for i, fd in enumerate(mine):
            os.write(fd, bytes([i]))
        channel.send(a, {"fds": MAX_FDS}, tuple(mine))
        message, fds = channel.recv(b)
        try:
            assert message == {"fds": MAX_FDS}
            assert [os.pread(fd, 1, 0) for fd in fds] == [bytes([i]) for i in range(MAX_FDS)]
        finally:
            for fd in fds:
                os.close(fd)
    finally:
        for fd in mine:
            os.close(fd)


def test_more_descriptors_than_max_fds_are_refused_and_none_leaks(ends):
    a, b = ends
    mine = [os.memfd_create(f"m{i}") for i in range(MAX_FDS + 2)]
    try:
        before = _open_fds()
        channel.send(a, {"fds": len(mine)}, tuple(mine))
        with pytest.raises(ChannelError, match="too long"):
            channel.recv(b)
        assert _open_fds() == before
    finally:
        for fd in mine:
            os.close(fd)


def test_end_of_stream(ends):
    a, b = ends
    channel.send(a, {"done": {}})
    a.close()
    assert channel.recv(b) == ({"done": {}}, [])
    assert channel.recv(b) == (None, [])
    assert channel.recv(b) == (None, [])  # and it stays ended


def test_receive_honours_the_socket_timeout(ends):
    _, b = ends
    b.settimeout(0.05)
    with pytest.raises(socket.timeout):
        channel.recv(b)
