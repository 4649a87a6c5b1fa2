"""Named errors of the store; the CLI edge turns them into one line (docs/design.md, "Conventions")."""
from __future__ import annotations


class StoreError(Exception):
    """The replica cannot be opened or used: unreadable file, newer schema, closed replica."""
