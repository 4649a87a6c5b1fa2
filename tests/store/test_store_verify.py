"""Signatures checked in a pool of processes (store/verify.py): the same verdicts as inline, always.

    .venv/bin/python -m pytest tests/store/test_store_verify.py -q
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time

from protocol import build, fresh_seed
from store import Replica, VerifyPool
from tests.store.test_store_factory import NOW, SWARM, claim, key, result, task, tid, vote


def mixed_batch() -> list:
    """Valid messages, a forged signature, a vote whose seed proof is another key's, a vote with
    a good fresh-seed proof, an in-batch duplicate, and bytes that are no envelope."""
    t = task(key(0))
    claims = [claim(key(1 + n % 3), tid(t), f"1.{n:06d}", at=NOW - 500 + n) for n in range(40)]
    good_fresh = vote(key(4), claims[0].id, fresh=True)
    seed, proof = fresh_seed(key(5), claims[1].id)  # key(5)'s proof in key(4)'s vote
    body = {"claim": claims[1].id, "verdict": "reproduced", "result": dict(result("1.000000"), seed=seed),
            "reason": "", "seed_proof": proof}
    stolen_proof = build(key(4), SWARM, "vote", body, created_at=NOW - 50)
    forged = json.loads(claims[2].canonical()) | {"sig": "11" * 64}
    forged_raw = json.dumps(forged, separators=(",", ":"), sort_keys=True).encode()
    items = [t.canonical()] + [c.canonical() for c in claims[3:]] + [good_fresh.canonical(), stolen_proof.canonical(),
                                                                   forged_raw, claims[3].canonical(), b"{nope"]
    return items


def summary(report) -> tuple:
    return [e.id for e in report.accepted], sorted(report.duplicate), report.rejected


async def ingest_twice(tmp_path, pool: VerifyPool) -> tuple:
    items = mixed_batch()
    inline = await Replica.open(tmp_path / "inline.sqlite3", swarm=SWARM, self_key=key(0).pubkey)
    pooled = await Replica.open(tmp_path / "pooled.sqlite3", swarm=SWARM, self_key=key(0).pubkey)
    try:
        return summary(await inline.ingest(items, now=NOW)), summary(await pooled.ingest(items, now=NOW, verifier=pool))
    finally:
        await inline.close()
        await pooled.close()


async def test_pool_verdicts_equal_inline_ones(tmp_path):
    pool = VerifyPool(workers=2, min_batch=1, chunk=7)  # several chunks, one of them short
    try:
        inline, pooled = await ingest_twice(tmp_path, pool)
    finally:
        pool.close()
    assert pooled == inline
    rejected = [reason for _, reason in inline[2]]
    assert rejected.count("invalid: bad signature") == 2 and rejected[-1].startswith("invalid: not JSON")
    assert len(inline[0]) == 1 + 37 + 1  # task, claims 3..39, the honest fresh-seed vote
    assert pool.verified == len(mixed_batch()) - 1  # every decoded one, the junk never reaches it


async def test_small_batches_are_checked_inline(tmp_path):
    pool = VerifyPool(workers=2, min_batch=10_000)
    try:
        inline, pooled = await ingest_twice(tmp_path, pool)
        assert pooled == inline and pool.verified == 0 and not pool.running
    finally:
        pool.close()


async def test_a_killed_worker_costs_nothing_but_time(tmp_path):
    pool = VerifyPool(workers=2, min_batch=1)
    try:
        await ingest_twice(tmp_path / "warm", pool)  # the pool is up
        for pid in list(pool._pool._processes):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not pool._pool._broken and time.monotonic() < deadline:  # noticed by its manager thread
            await asyncio.sleep(0.05)
        (tmp_path / "again").mkdir()
        inline, pooled = await ingest_twice(tmp_path / "again", pool)
        assert pooled == inline  # checked here instead, same verdicts
        inline, pooled = await ingest_twice(tmp_path / "third", pool)  # a fresh pool next time
        assert pooled == inline and pool.running
    finally:
        pool.close()


async def test_idle_pool_stops_and_close_is_final(tmp_path):
    pool = VerifyPool(workers=1, min_batch=1, idle_s=0.2)
    await ingest_twice(tmp_path, pool)
    assert pool.running
    deadline = time.monotonic() + 0.2 + 10  # idle_s plus slack for a busy machine
    while pool.running and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not pool.running
    pool.close()
    (tmp_path / "closed").mkdir()
    inline, pooled = await ingest_twice(tmp_path / "closed", pool)
    assert pooled == inline and not pool.running


async def test_warm_starts_the_workers_at_once_and_idle_ones_still_stop(tmp_path):
    pool = VerifyPool(workers=2, min_batch=1, idle_s=0.5)
    try:
        pool.warm()  # returns at once: the workers start in the background
        assert pool.running
        deadline = time.monotonic() + 30  # process start-up on a busy machine
        while time.monotonic() < deadline and not (
                len(pool._pool._processes) == 2 and all(p.is_alive() for p in pool._pool._processes.values())):
            await asyncio.sleep(0.05)
        assert len(pool._pool._processes) == 2
        inline, pooled = await ingest_twice(tmp_path, pool)  # the warm workers verify as usual
        assert pooled == inline and pool.verified == len(mixed_batch()) - 1
        deadline = time.monotonic() + 0.5 + 10  # idle_s plus slack for a busy machine
        while pool.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not pool.running
    finally:
        pool.close()
    pool.warm()  # closed: nothing starts
    assert not pool.running


OWNER = """
import asyncio, os, sys
sys.path.insert(0, {root!r})
from store.verify import VerifyPool

async def main():
    pool = VerifyPool(2)
    pool.warm()
    while len(pool._pool._processes) < 2:
        await asyncio.sleep(0.05)
    await asyncio.gather(*(asyncio.wrap_future(pool._pool.submit(os.getpid)) for _ in range(4)))
    print(" ".join(str(p) for p in pool._pool._processes), flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_workers_exit_when_the_node_that_made_them_is_killed(tmp_path):
    """Workers are the forkserver's children: a node killed outright (SIGKILL, the OOM killer) must not
    leave them running. They check every WATCH_S that it is alive."""
    import subprocess
    import sys
    from pathlib import Path

    from store.verify import WATCH_S

    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(root=str(Path(__file__).resolve().parents[2])))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in owner.stdout.readline().split()]
        assert len(workers) == 2
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)

        def alive(pid: int) -> bool:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().split(") ")[1][0] != "Z"  # a zombie has exited
            except FileNotFoundError:
                return False

        deadline = time.monotonic() + 10 * WATCH_S + 20  # their watch period, on a busy machine
        while any(alive(p) for p in workers):
            assert time.monotonic() < deadline, [p for p in workers if alive(p)]
            time.sleep(0.1)
    finally:
        owner.kill()
        owner.wait(30)
