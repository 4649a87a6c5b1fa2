"""The corpus as the loops see it: ralph's ``CorpusView`` over the replica, and the sources of claims.

A claim carries a patch against its parent's source; its full source is rebuilt by applying the
patches along its lineage from the task baseline, and checked against the claim's source_sha256
(protocol/SPEC.md 5.3). Sources are cached by claim id (they never change: messages are immutable).
"""
from __future__ import annotations

from typing import Any

from ralph.corpus import CorpusEntry
from trainer.patches import PatchError, apply_patch, source_sha256
from trainer.tasks import Task, TaskRegistry


class SourceError(Exception):
    """A claim whose source cannot be rebuilt: unknown parent, patch that does not apply, hash mismatch."""


class TaskBook:
    """Tasks this node can run: trainer.tasks.TaskRegistry (the built-ins) plus the task messages of
    the corpus, read from the replica when a lookup misses."""

    def __init__(self, replica: Any):
        self.replica = replica
        self.registry = TaskRegistry()

    async def refresh(self) -> None:
        for env in await self.replica.tasks():
            self.registry.add_body(env.body)

    async def get(self, task_id: str) -> Task | None:
        if self.registry.get(task_id) is None:
            await self.refresh()
        return self.registry.get(task_id)

    async def ids(self) -> set[str]:
        """Every task known: built-in or in the corpus."""
        await self.refresh()
        return self.registry.ids()

    async def find(self, name_or_id: str) -> Task | None:
        """By name, full id or unique id prefix (trainer.tasks.TaskRegistry.find), corpus tasks included."""
        await self.refresh()
        return self.registry.find(name_or_id)


class ReplicaCorpus:
    """``ralph.corpus.CorpusView`` over the node's replica, from the node's own point of view."""

    MAX_CACHE = 4096

    def __init__(self, replica: Any, tasks: TaskBook, own_key: str):
        self.replica = replica
        self.tasks = tasks
        self.own_key = own_key
        self._sources: dict[str, str] = {}

    async def source_of(self, claim_id: str) -> str:
        if claim_id in self._sources:
            return self._sources[claim_id]
        chain = []
        env = await self.replica.get(claim_id)
        if env is None or env.kind != "claim":
            raise SourceError(f"unknown claim {claim_id[:12]}")
        lineage = await self.replica.lineage(claim_id)
        ancestors = lineage["ancestors"]
        chain = [*ancestors, env]
        task = await self.tasks.get(env.body["task"])
        if task is None:
            raise SourceError(f"unknown task {env.body['task'][:12]}")
        if chain[0].body["parent"] is not None:
            raise SourceError(f"missing ancestor {chain[0].body['parent'][:12]} of claim {claim_id[:12]}")
        source = task.source
        for link in chain:
            if link.id in self._sources:
                source = self._sources[link.id]
                continue
            try:
                source = apply_patch(source, link.body["patch"])
            except PatchError as exc:
                raise SourceError(f"patch of {link.id[:12]} does not apply: {exc}") from None
            if source_sha256(source) != link.body["source_sha256"]:
                raise SourceError(f"source of {link.id[:12]} does not match its source_sha256")
            if len(self._sources) < self.MAX_CACHE:
                self._sources[link.id] = source
        return source

    def _entry(self, env: Any, val_bpb: str | None) -> CorpusEntry:
        b = env.body
        return CorpusEntry(env.id, b["source_sha256"], float(val_bpb) if val_bpb else None, b["note"], b["patch"],
                           b["outcome"], b["parent"])

    async def top_entries(self, task_id: str, k: int) -> list[CorpusEntry]:
        return [self._entry(e.claim, e.val_bpb) for e in await self.replica.top_entries(task_id, k)]

    async def has_source(self, task_id: str, sha: str, tokens: int | None = None) -> bool:
        if tokens is None:
            return sha in await self.replica.source_hashes(task_id)
        return any(c.body["source_sha256"] == sha and (c.body["result"] or {}).get("tokens") == tokens
                   for c in await self.replica.claims(task_id))

    async def recent_negatives(self, task_id: str, n: int) -> list[CorpusEntry]:
        claims = [c for c in await self.replica.claims(task_id) if c.body["outcome"] in ("worse", "crashed")]
        claims.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        return [self._entry(c, (c.body["result"] or {}).get("val_bpb")) for c in claims[:n]]

    async def own_best(self, task_id: str) -> CorpusEntry | None:
        mine = [c for c in await self.replica.claims(task_id)
                if c.author == self.own_key and c.body["outcome"] == "improved" and c.body["result"]]
        if not mine:
            return None
        best = min(mine, key=lambda c: float(c.body["result"]["val_bpb"]))
        return self._entry(best, best.body["result"]["val_bpb"])
