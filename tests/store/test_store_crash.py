"""Crash safety: a real child process importing in batches is SIGKILLed mid-import; the file stays
consistent, holds only whole batches, and a second import completes the set.

Run: .venv/bin/python -m pytest tests/store/test_store_crash.py
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.store.test_store_factory import NOW, SWARM, claim, key, tid, task, vote

ROOT = Path(__file__).resolve().parents[2]
BATCH = 50
TOTAL = 1500

CHILD = textwrap.dedent(f"""
    import asyncio, sys
    sys.path.insert(0, {str(ROOT)!r})
    from store import Replica

    async def main(db, src, self_key):
        lines = open(src, "rb").read().splitlines()
        r = await Replica.open(db, swarm={SWARM!r}, self_key=self_key)
        for i in range(0, len(lines), {BATCH}):
            print("begin", i // {BATCH}, flush=True)
            report = await r.ingest(lines[i:i + {BATCH}], now={NOW})
            assert not report.rejected, report.rejected[:3]
            print("done", i // {BATCH}, len(report.accepted), flush=True)
        await r.close()
        print("finished", flush=True)
        sys.stdin.read()  # stay until the test lets go: a kill must land on a live process, however fast the import

    asyncio.run(main(*sys.argv[1:]))
""")


def messages() -> list[bytes]:
    authors = [key(i) for i in range(1, 5)]
    t = task(authors[0])
    out = [t.canonical()]
    claims = [claim(authors[i % 4], tid(t), f"1.{i:06d}", at=NOW - 5000 + i) for i in range(TOTAL // 3)]
    out += [c.canonical() for c in claims]
    i = 0
    while len(out) < TOTAL:
        out.append(vote(authors[(i + 1) % 4], claims[i % len(claims)].id, at=NOW - 1000 + i).canonical())
        i += 1
    return out


def run_child(tmp_path: Path, db: Path, src: Path, kill_after_batch: int | None, delay: float = 0.0) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(src), key(0).pubkey],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.strip())
            if line.startswith("finished"):
                proc.stdin.close()
            if kill_after_batch is not None and line.startswith(f"begin {kill_after_batch}"):
                time.sleep(delay)  # land the kill in decoding, inserting or committing
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if kill_after_batch is None:
        assert proc.returncode == 0, proc.stderr.read()
    else:
        assert proc.returncode == -signal.SIGKILL
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if not stream.closed:
            stream.close()
    return seen


def test_sigkill_mid_import_leaves_whole_batches(tmp_path):
    lines = messages()
    src = tmp_path / "corpus.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "replica.sqlite3"
    batches = [set() for _ in range(0, TOTAL, BATCH)]
    from protocol import parse
    for n, raw in enumerate(lines):
        batches[n // BATCH].add(parse(raw)["id"])

    # Each run re-imports from the start (earlier batches come back as duplicates) and is
    # killed a little further on, at a different point of a batch's decode/insert/commit.
    for kill_batch, delay in ((6, 0.0), (12, 0.02), (18, 0.04), (24, 0.08)):
        seen = run_child(tmp_path, db, src, kill_after_batch=kill_batch, delay=delay)
        assert "finished" not in seen and f"begin {kill_batch}" in seen
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {r[0] for r in conn.execute("SELECT id FROM messages")}
        assert len(stored) % BATCH == 0 and len(stored) >= kill_batch * BATCH
        for members in batches:  # each batch is in the file entirely or not at all
            assert members <= stored or not (members & stored)

    seen = run_child(tmp_path, db, src, kill_after_batch=None)
    assert seen[-1] == "finished"
    accepted = sum(int(s.split()[2]) for s in seen if s.startswith("done"))
    assert accepted == TOTAL - len(stored)  # the second import only adds what was missing
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == TOTAL
