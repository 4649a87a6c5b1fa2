"""Shared pytest fixtures. Keep small: helpers shared by several packages' tests live in tests/
(tests/nodeproc.py, tests/protocol_samples.py, ...) and are imported one way, `from tests.X import`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the packages live at the repository root
    sys.path.insert(0, str(ROOT))

from protocol import Identity  # noqa: E402


@pytest.fixture
def alice() -> Identity:
    """A fixed identity (seed 01..01), the author of tests/vectors/envelopes.json."""
    return Identity.from_seed(b"\x01" * 32)


@pytest.fixture
def bob() -> Identity:
    return Identity.from_seed(bytes(range(32)))


@pytest.fixture
def canary(monkeypatch) -> str:
    """A secret planted in *our* environment for the test's duration; it must surface nowhere
    (sandbox and containment tests)."""
    import secrets

    value = "canary-" + secrets.token_hex(16)
    monkeypatch.setenv("RALPHSWARM_TEST_CANARY", value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", value)
    return value
