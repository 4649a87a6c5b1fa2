"""The local replica of the corpus: SQLite storage, idempotent ingest, queries, ranking and trust.

See docs/internals.md for the interface and docs/design.md, "Ranking and trust" for the model.
"""
from .errors import StoreError
from .ingest import IngestReport
from .ranking import ClaimStatus, Entry, Leaderboard, RankingSettings
from .replica import Replica, StoreSettings
from .trust import TrustSettings, TrustView, VoteFact, compute_trust
from .verify import VerifyPool

__all__ = [
    "Replica", "StoreSettings", "StoreError", "IngestReport", "ClaimStatus", "Entry", "Leaderboard",
    "RankingSettings", "TrustSettings", "TrustView", "VoteFact", "compute_trust", "VerifyPool",
]
