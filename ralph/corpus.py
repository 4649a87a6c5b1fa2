"""How the loop reads the corpus (docs/internals.md, ``ralph.corpus.CorpusView``).

ralph never imports the store: the node implements ``CorpusView`` over its replica (verified
leaderboard, lineage-reconstructed sources, own claims). ``InMemoryCorpus`` is the same contract over
plain dicts, for tests and for running a loop without a node.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from protocol import canon


@dataclass(frozen=True)
class CorpusEntry:
    claim_id: str
    source_sha256: str
    val_bpb: float | None  # reproduced value for verified entries; None for a crashed claim
    note: str
    patch: str  # unified diff against the parent's source
    outcome: str = "improved"  # improved | worse | crashed
    parent: str | None = None


@dataclass(frozen=True)
class Observation:
    """One claim of the task as a trial: its full source and what it measured (whoever ran it).

    The optimizer proposers read these as their trial history, the loop as the set of tried sources
    and the dead ends. ``val_bpb`` is the claimant's value (None when crashed), at ``tokens``."""

    claim_id: str
    source: str
    val_bpb: float | None
    tokens: int | None
    outcome: str  # improved | worse | crashed
    note: str = ""
    parent: str | None = None
    curve: tuple = ()  # ((tokens, loss), ...) as the claim's result reports it
    own: bool = False

    @property
    def over_budget(self) -> bool:
        """Published as worse because it trained longer than the task's compute cap (loop.py)."""
        return "[over budget:" in self.note


def observation_of(claim_id: str, body: dict, source: str, own: bool) -> Observation:
    """An Observation from a claim body; numbers a peer wrote that do not parse read as unknown."""
    result = body.get("result") or {}
    try:
        bpb = float(result["val_bpb"]) if result else None
        bpb = bpb if bpb is not None and bpb == bpb and abs(bpb) != float("inf") else None
    except (KeyError, TypeError, ValueError):
        bpb = None
    tokens = result.get("tokens") if isinstance(result.get("tokens"), int) else None
    curve: list = []
    for point in result.get("curve") or []:
        try:
            curve.append((int(point[0]), float(point[1])))
        except (TypeError, ValueError, IndexError):
            break
    return Observation(claim_id, source, bpb, tokens, str(body.get("outcome", "")), str(body.get("note", "")),
                       body.get("parent"), tuple(curve), own)


@runtime_checkable
class CorpusView(Protocol):
    async def top_entries(self, task_id: str, k: int) -> list[CorpusEntry]:
        """Verified claims of the task, best (largest reproduced improvement) first."""

    async def source_of(self, claim_id: str) -> str:
        """The full train script of a claim (its patch applied along its lineage)."""

    async def has_source(self, task_id: str, sha: str, tokens: int | None = None) -> bool:
        """Whether any claim of the task already has this source hash (tried before, by anyone);
        with ``tokens``, any such claim whose result ran at that budget (result.tokens)."""

    async def recent_negatives(self, task_id: str, n: int) -> list[CorpusEntry]:
        """The latest ``worse`` and ``crashed`` claims, newest first: what not to try again."""

    async def own_best(self, task_id: str) -> CorpusEntry | None:
        """This node's own best measured claim of the task, verified or not."""

    async def observations(self, task_id: str) -> list[Observation]:
        """Every claim of the task whose source can be rebuilt, oldest first (the trial history)."""


class InMemoryCorpus:
    """``CorpusView`` over dicts. ``add`` doubles as the loop's ``publish`` target in tests."""

    def __init__(self) -> None:
        self._claims: list[tuple[str, dict, str, bool, bool]] = []  # (id, body, source, own, verified)
        self._sources: dict[str, str] = {}

    def add(self, body: dict, source: str, *, own: bool = True, verified: bool = True) -> str:
        """Record a claim body with its full source; returns a content-derived 64-hex claim id."""
        claim_id = hashlib.sha256(canon([len(self._claims), body])).hexdigest()
        self._claims.append((claim_id, body, source, own, verified))
        self._sources[claim_id] = source
        return claim_id

    @property
    def bodies(self) -> list[dict]:
        return [c[1] for c in self._claims]

    @staticmethod
    def _entry(claim_id: str, body: dict) -> CorpusEntry:
        result = body.get("result")
        bpb = float(result["val_bpb"]) if result else None
        return CorpusEntry(claim_id, body["source_sha256"], bpb, body["note"], body["patch"],
                           body["outcome"], body["parent"])

    async def top_entries(self, task_id: str, k: int) -> list[CorpusEntry]:
        good = [self._entry(i, b) for i, b, _, _, v in self._claims
                if v and b["task"] == task_id and b["outcome"] == "improved"]
        return sorted(good, key=lambda e: e.val_bpb)[:k]

    async def source_of(self, claim_id: str) -> str:
        try:
            return self._sources[claim_id]
        except KeyError:
            raise KeyError(f"unknown claim {claim_id[:12]}") from None

    async def has_source(self, task_id: str, sha: str, tokens: int | None = None) -> bool:
        return any(b["task"] == task_id and b["source_sha256"] == sha
                   and (tokens is None or (b.get("result") or {}).get("tokens") == tokens)
                   for _, b, _, _, _ in self._claims)

    async def recent_negatives(self, task_id: str, n: int) -> list[CorpusEntry]:
        bad = [self._entry(i, b) for i, b, _, _, _ in self._claims
               if b["task"] == task_id and b["outcome"] in ("worse", "crashed")]
        return bad[::-1][:n]

    async def own_best(self, task_id: str) -> CorpusEntry | None:
        mine = [self._entry(i, b) for i, b, _, own, _ in self._claims
                if own and b["task"] == task_id and b["outcome"] == "improved"]
        return min(mine, key=lambda e: e.val_bpb, default=None)

    async def observations(self, task_id: str) -> list[Observation]:
        return [observation_of(i, b, src, own) for i, b, src, own, _ in self._claims if b["task"] == task_id]
