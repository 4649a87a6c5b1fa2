"""Signature checks on every core, for bulk ingest (a node catching up, a big push).

Ed25519 verification is most of what ingest costs (scripts/bench/ingest), and it is independent per
message: a pool of worker processes checks a batch's signatures while the main process decodes and
stores. The workers run ``protocol.verify_sig``'s two checks (``protocol.verify``, then a vote's
``check_seed_proof``) on a small copy of each envelope (its id, author, signature and, for a vote
with a seed proof, the claim and proof), so a message passes or fails exactly as it would inline
(tests/store/test_store_verify.py compares the two). decode() recomputes every id from the fields before the
signature is checked, so a valid signature over that id is the whole check.

The pool starts on first use and stops after ``idle_s`` without work (and with ``close``); below
``min_batch`` messages the caller verifies inline, where a round trip to another process costs
more than it saves.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

from protocol import Envelope, check_seed_proof, verify, verify_sig

# id, author, sig; for a vote with a seed proof also its claim and proof (what that proof signs), else None.
Part = tuple[str, str, str, "str | None", "str | None"]


def _part(env: Envelope) -> Part:
    body = env.body
    if env.kind == "vote" and "seed_proof" in body:
        return env.id, env.author, env.sig, body["claim"], body["seed_proof"]
    return env.id, env.author, env.sig, None, None


def verify_parts(parts: Sequence[Part]) -> list[bool]:
    """Worker: ``verify_sig`` of each envelope the parts stand for, written out (no Envelope is
    rebuilt): the signature over the id's 32 bytes, then a vote's seed proof (SPEC.md 5.4.1)."""
    fromhex = bytes.fromhex
    return [verify(author, fromhex(sig), fromhex(env_id)) and (proof is None or check_seed_proof(author, claim, proof))
            for env_id, author, sig, claim, proof in parts]


WATCH_S = 1.0  # how often a worker checks that the process that made the pool is alive


def _watch(owner: int) -> None:
    """A worker's initializer: exit once the process that made the pool is gone. Workers are the
    forkserver's children, not the node's, so a node killed outright (SIGKILL, the OOM killer) would
    otherwise leave them, and the forkserver waiting on them, running for good."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(WATCH_S)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # pragma: no cover - a pid reused by another user's process
                os._exit(0)

    threading.Thread(target=watch, name="watch-owner", daemon=True).start()


def _ready() -> None:
    """Worker: nothing; submitted by ``VerifyPool.warm`` to start a worker."""


def _verify_chunk(parts: Sequence[Part]) -> tuple[list[bool], float]:
    """Worker: ``verify_parts`` and the CPU seconds it took (``VerifyPool.cpu_s``)."""
    start = time.process_time()
    verdicts = verify_parts(parts)
    return verdicts, time.process_time() - start


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _context() -> multiprocessing.context.BaseContext:
    # Never fork the node itself (it has SQLite and event-loop threads): a forkserver forks workers
    # from a clean process, spawn where there is none.
    # The forkserver imports this module (protocol, both signature libraries) once, so each worker
    # forked from it starts ready: 170 ms of CPU less per worker here (a no-op where it already runs).
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


class VerifyPool:
    """``await pool.verify(envelopes)`` -> one bool per envelope, checked in worker processes."""

    def __init__(self, workers: int | None = None, *, min_batch: int = 64, chunk: int = 64, idle_s: float = 60.0):
        self.workers = workers or default_workers()
        self.min_batch = min_batch
        self.chunk = chunk
        self.idle_s = idle_s
        self.verified = 0  # messages checked in the pool (status, tests)
        self.cpu_s = 0.0  # CPU seconds the workers spent checking them (scripts/bench/ingest)
        self._pool: ProcessPoolExecutor | None = None
        self._busy = 0
        self._last_used = 0.0
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self._pool is not None

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=_context(), initializer=_watch,
                                             initargs=(os.getpid(),))
        return self._pool

    def warm(self) -> None:
        """Start the workers now, in the background, rather than at the first big batch: a node
        about to catch up calls it at start, so its first fetched batch does not wait for new
        processes (a second or more on a busy machine). Idle workers stop after ``idle_s`` as usual."""
        if self._closed or self._pool is not None:
            return
        executor = self._executor()
        for _ in range(self.workers):
            executor.submit(_ready)  # each spawns a worker (concurrent.futures starts them on demand)
        self._last_used = time.monotonic()
        try:
            self._schedule_reap(asyncio.get_running_loop())
        except RuntimeError:  # no event loop: reaped after the next verify instead
            pass

    async def verify(self, envelopes: Sequence[Envelope]) -> list[bool]:
        if self._closed or len(envelopes) < self.min_batch:
            return [verify_sig(env) for env in envelopes]
        parts = [_part(env) for env in envelopes]
        # At least one chunk per worker, so one batch alone keeps every core busy.
        size = max(8, min(self.chunk, -(-len(parts) // self.workers)))
        loop = asyncio.get_running_loop()
        self._busy += 1
        try:
            executor = self._executor()
            futures = [loop.run_in_executor(executor, _verify_chunk, parts[i:i + size])
                       for i in range(0, len(parts), size)]
            results = await asyncio.gather(*futures)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): check this batch here, start afresh next time.
            self._drop()
            return [verify_sig(env) for env in envelopes]
        finally:
            self._busy -= 1
            self._last_used = time.monotonic()
            self._schedule_reap(loop)
        self.verified += len(parts)
        self.cpu_s += sum(cpu for _, cpu in results)
        return [ok for verdicts, _ in results for ok in verdicts]

    def _schedule_reap(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._reaper is None and self._pool is not None:
            self._reaper = loop.call_later(self.idle_s, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        idle = time.monotonic() - self._last_used
        if self._busy == 0 and idle >= self.idle_s:
            self._drop()
        elif self._pool is not None:
            self._reaper = asyncio.get_running_loop().call_later(max(0.1, self.idle_s - idle), self._reap)

    def _drop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (the node's stop); later calls verify inline."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
