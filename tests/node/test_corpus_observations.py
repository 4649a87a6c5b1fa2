"""The node's corpus as the optimizer's trial history: ReplicaCorpus.observations over a real
replica: every claim of the task with its rebuilt source and its numbers, oldest first, own ones
marked; a claim whose ancestor is missing is left out, not an error; the bound on how many.
Run: .venv/bin/python -m pytest tests/node/test_corpus_observations.py"""
from __future__ import annotations

from node.corpus import ReplicaCorpus, TaskBook
from protocol import Identity, build
from store import Replica
from tests.messages import result
from trainer.patches import make_patch, source_sha256

PEER = Identity.from_seed(b"\x42" * 32)
ME = Identity.from_seed(b"\x43" * 32)


async def _claim(replica, task, author, parent_source, parent_id, new, n, outcome="worse", val="1.900000"):
    body = {"task": task.id, "parent": parent_id, "patch": make_patch(parent_source, new), "source_sha256": source_sha256(new),
            "note": f"claim {n}", "outcome": outcome, "result": None if outcome == "crashed" else result(val)}
    env = build(author, "public", "claim", body, created_at=1_700_000_000 + n)
    return env


async def test_observations_are_every_claim_with_its_source(tmp_path):
    replica = await Replica.open(tmp_path / "r.sqlite3", swarm="public", self_key=ME.pubkey,
                                 trusted=[PEER.pubkey])  # an operator-trusted peer: its numbers count
    try:
        book = TaskBook(replica)
        task = book.registry.resolve("tiny")
        a_src = task.source.replace("MATRIX_LR = 0.03", "MATRIX_LR = 0.05")
        b_src = a_src.replace("EMBED_LR = 0.1", "EMBED_LR = 0.2")
        c_src = task.source.replace("DEPTH = 2", "DEPTH = 3")
        a = await _claim(replica, task, PEER, task.source, None, a_src, 1, "improved", "1.800000")
        b = await _claim(replica, task, ME, a_src, a.id, b_src, 2)
        c = await _claim(replica, task, ME, task.source, None, c_src, 3, "crashed")
        orphan_parent = await _claim(replica, task, PEER, task.source, None, c_src + "# x\n", 4)
        orphan = await _claim(replica, task, PEER, c_src + "# x\n", orphan_parent.id, c_src + "# y\n", 5)
        report = await replica.ingest([e.canonical() for e in (a, b, c, orphan)])  # not orphan_parent
        assert len(report.accepted) == 4, report.rejected
        corpus = ReplicaCorpus(replica, book, ME.pubkey)
        obs = await corpus.observations(task.id)
        assert [o.claim_id for o in obs] == [a.id, b.id, c.id]  # the orphan's source cannot be rebuilt yet
        assert [o.source for o in obs] == [a_src, b_src, c_src]
        assert [o.own for o in obs] == [False, True, True]
        assert [o.val_bpb for o in obs] == [1.8, 1.9, None] and obs[0].tokens == 4096 and obs[0].curve[0] == (0, 5.545177)
        assert obs[1].parent == a.id and obs[2].outcome == "crashed"
        ReplicaCorpus.MAX_OBSERVATIONS, saved = 2, ReplicaCorpus.MAX_OBSERVATIONS
        try:
            assert [o.claim_id for o in await corpus.observations(task.id)] == [c.id]  # newest 2: c and the orphan
        finally:
            ReplicaCorpus.MAX_OBSERVATIONS = saved
    finally:
        await replica.close()


STRANGER = Identity.from_seed(b"\x44" * 32)


async def test_a_strangers_claims_do_not_steer_the_optimizer_until_someone_trusted_reproduces_them(tmp_path):
    # Claims cost a stranger nothing: fake great values at bad constants, fake crashes at good ones,
    # created_at in the future to push every real trial out of the newest MAX_OBSERVATIONS.
    replica = await Replica.open(tmp_path / "r.sqlite3", swarm="public", self_key=ME.pubkey)
    try:
        book = TaskBook(replica)
        task = book.registry.resolve("tiny")
        mine_src = task.source.replace("MATRIX_LR = 0.03", "MATRIX_LR = 0.04")
        mine = await _claim(replica, task, ME, task.source, None, mine_src, 1, "improved", "1.850000")
        junk = [await _claim(replica, task, STRANGER, task.source, None,
                             task.source.replace("DEPTH = 2", f"DEPTH = 2\nJUNK = {i}"), 10**6 + i, "improved", "0.100000")
                for i in range(3)]
        real_src = task.source.replace("EMBED_LR = 0.1", "EMBED_LR = 0.3")
        real = await _claim(replica, task, STRANGER, task.source, None, real_src, 2, "improved", "1.700000")
        report = await replica.ingest([e.canonical() for e in (mine, *junk, real)])
        assert len(report.accepted) == 5, report.rejected
        corpus = ReplicaCorpus(replica, book, ME.pubkey)
        ReplicaCorpus.MAX_OBSERVATIONS, saved = 2, ReplicaCorpus.MAX_OBSERVATIONS
        try:
            assert [o.claim_id for o in await corpus.observations(task.id)] == [mine.id]
            # this node reproduces the stranger's real claim (at its fresh seed): now it is a trial,
            # with the value measured here rather than the one claimed
            vote = build(ME, "public", "vote", {"claim": real.id, "verdict": "reproduced", "reason": "",
                                                "result": result("1.712000")}, created_at=1_700_000_100)
            assert (await replica.ingest([vote.canonical()])).accepted
            obs = await corpus.observations(task.id)
            assert [o.claim_id for o in obs] == [mine.id, real.id]
            assert [o.val_bpb for o in obs] == [1.85, 1.712] and obs[1].source == real_src
        finally:
            ReplicaCorpus.MAX_OBSERVATIONS = saved
    finally:
        await replica.close()
