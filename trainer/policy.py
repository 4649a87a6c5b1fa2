"""Whether this node runs a claim's code: the `--run-untrusted=sandbox|trusted|never` flag (docs/design.md,
"Sandbox modes").

The flag governs code from keys the operator does not trust (code from trusted keys always runs, and is
still sandboxed whenever a sandbox works):
- sandbox (default): run it only inside a working sandbox (bwrap or namespaces); without one, refuse,
  so only trusted keys' code runs, and say so;
- trusted: the operator vouches for the whole swarm: run it even when no sandbox works;
- never: never run it.
"""
from __future__ import annotations

POLICIES = ("sandbox", "trusted", "never")
CONTAINING = ("bwrap", "namespaces")


def may_run(author_trusted: bool, policy: str, sandbox: str) -> tuple[bool, str]:
    """(allowed, reason); the reason is fit for a `refused` vote or a log line."""
    if policy not in POLICIES:
        raise ValueError(f"unknown --run-untrusted policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if author_trusted:
        return True, "author is trusted by the operator"
    if policy == "never":
        return False, "refused: author not trusted and --run-untrusted=never"
    if policy == "trusted":
        return True, f"untrusted author run because --run-untrusted=trusted (sandbox: {sandbox})"
    if sandbox not in CONTAINING:
        return False, (f"refused: no working sandbox here (mode {sandbox!r}); only code from trusted keys "
                       "runs until bubblewrap or user namespaces work")
    return True, f"untrusted author, contained by {sandbox}"
