"""The corpus as the loops see it: ralph's ``CorpusView`` over the replica, and the sources of claims.

A claim carries a patch against its parent's source; its full source is rebuilt by applying the
patches along its lineage from the task baseline, and checked against the claim's source_sha256
(protocol/SPEC.md 5.3). Sources are cached by claim id (they never change: messages are immutable),
in a cache bounded in bytes; the rebuild is bounded in depth and size (ReplicaCorpus).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from protocol import Envelope
from ralph.corpus import CorpusEntry, Observation, observation_of
from trainer.patches import PatchError, apply_patch, source_sha256
from trainer.tasks import Task, TaskRegistry


class SourceError(Exception):
    """A claim whose source cannot be rebuilt: unknown parent, patch that does not apply, hash mismatch,
    a lineage too deep or a source too big."""


class MissingAncestor(SourceError):
    """An ancestor this replica does not hold (yet): the claim waits for it."""

    def __init__(self, ancestor: str, message: str):
        super().__init__(message)
        self.ancestor = ancestor


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
    """``ralph.corpus.CorpusView`` over the node's replica, from the node's own point of view.

    Rebuilding is bounded (issue 17): a lineage deeper than MAX_CHAIN_DEPTH links, or a source that
    grows past MAX_SOURCE_BYTES at any link, is refused (``SourceError``: a reproducer votes it
    ``failed`` without building further); a claim whose ancestor the replica lacks raises
    ``MissingAncestor`` (it waits for the ancestor rather than being voted on). Rebuilt sources are
    kept in an LRU cache of at most MAX_CACHE_BYTES, and the rebuild starts from the nearest cached
    ancestor."""

    MAX_CHAIN_DEPTH = 1024  # links from the task's source to a claim
    MAX_SOURCE_BYTES = 512 * 1024  # a rebuilt source (task sources are at most 64 KiB; patches add 64 KiB a link)
    MAX_CACHE_BYTES = 32 * 1024 * 1024  # rebuilt sources kept (UTF-8 bytes)
    MAX_OBSERVATIONS = 2000  # the newest claims the optimizer and the duplicate check read per step

    def __init__(self, replica: Any, tasks: TaskBook, own_key: str):
        self.replica = replica
        self.tasks = tasks
        self.own_key = own_key
        self._sources: OrderedDict[str, str] = OrderedDict()  # claim id -> source, least recently used first
        self._cache_bytes = 0

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    def _cached(self, claim_id: str) -> str | None:
        source = self._sources.get(claim_id)
        if source is not None:
            self._sources.move_to_end(claim_id)
        return source

    def _remember(self, claim_id: str, source: str) -> None:
        size = len(source.encode("utf-8"))
        if claim_id in self._sources or size > self.MAX_CACHE_BYTES // 4:
            return
        self._sources[claim_id] = source
        self._cache_bytes += size
        while self._cache_bytes > self.MAX_CACHE_BYTES:
            _, old = self._sources.popitem(last=False)
            self._cache_bytes -= len(old.encode("utf-8"))

    async def source_of(self, claim_id: str) -> str:
        cached = self._cached(claim_id)
        if cached is not None:
            return cached
        env = await self.replica.get(claim_id)
        if env is None or env.kind != "claim":
            raise SourceError(f"unknown claim {claim_id[:12]}")
        task = await self.tasks.get(env.body["task"])
        if task is None:
            raise SourceError(f"unknown task {env.body['task'][:12]}")
        # walk up to the task's source or the nearest cached ancestor, never further than the bound
        chain, source, seen = [env], task.source, {claim_id}
        parent = env.body["parent"]
        while parent is not None:
            cached = self._cached(parent)
            if cached is not None:
                source = cached
                break
            if len(chain) >= self.MAX_CHAIN_DEPTH or parent in seen:
                raise SourceError(f"lineage of claim {claim_id[:12]} deeper than {self.MAX_CHAIN_DEPTH} links")
            seen.add(parent)
            link = await self.replica.get(parent)
            if link is None or link.kind != "claim":
                raise MissingAncestor(parent, f"missing ancestor {parent[:12]} of claim {claim_id[:12]}")
            chain.append(link)
            parent = link.body["parent"]
        for link in reversed(chain):
            try:
                source = apply_patch(source, link.body["patch"])
            except PatchError as exc:
                raise SourceError(f"patch of {link.id[:12]} does not apply: {exc}") from None
            if len(source.encode("utf-8")) > self.MAX_SOURCE_BYTES:
                raise SourceError(f"source of {link.id[:12]} is over {self.MAX_SOURCE_BYTES // 1024} KiB")
            if source_sha256(source) != link.body["source_sha256"]:
                raise SourceError(f"source of {link.id[:12]} does not match its source_sha256")
            self._remember(link.id, source)
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

    async def observations(self, task_id: str) -> list[Observation]:
        """The task's newest MAX_OBSERVATIONS believable claims with their sources, oldest first
        (claims whose source cannot be rebuilt are left out): the optimizer's trial history, the
        tried scripts. A peer's number steers this node's compute, so it is believed only as far as
        this node's view allows: a claim verified here carries its reproduced value; an unverified
        one counts only when its author has voting power here (pre-trusted, or agreement earned with
        our runs), disputed, over budget and non-deterministic ones not at all; a stranger's claims,
        which cost nothing to make (fake values, fake crashes, created_at in the future), do not
        count until someone trusted reproduces them."""
        statuses = await self.replica.statuses(task_id)
        power = await self.replica.voting_power()
        believed: list[tuple[Envelope, float | None]] = []
        for c in await self.replica.claims(task_id):
            st = statuses.get(c.id)
            if c.author == self.own_key:
                believed.append((c, None))
            elif st is not None and st.status == "verified" and st.reproduced_bpb is not None:
                believed.append((c, float(st.reproduced_bpb)))
            elif power(c.author) > 0 and (st is None or st.status in ("pending", "verified")):
                believed.append((c, None))
        believed.sort(key=lambda cv: (cv[0].created_at, cv[0].id))
        out = []
        for c, value in believed[-self.MAX_OBSERVATIONS:]:
            try:
                source = await self.source_of(c.id)
            except SourceError:
                continue
            obs = observation_of(c.id, c.body, source, c.author == self.own_key)
            out.append(obs if value is None else dataclasses.replace(obs, val_bpb=value))
        return out
