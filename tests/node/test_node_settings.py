"""One function from (defaults, config file, flags) to the node's settings.

Run: .venv/bin/python -m pytest tests/node/test_node_settings.py -q
"""
from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import UserError
from node.settings import NodeSettings, default_config, settings_from

KEY_A, KEY_B = "a" * 64, "b" * 64


def test_defaults_then_config_then_flags():
    s = settings_from(Path("h"), {}, {})
    assert s == NodeSettings(home=Path("h"))
    assert default_config()["listen"] == "127.0.0.1:7447" and default_config()["task"] == s.task
    config = {"swarm": "lab", "listen": "0.0.0.0:9000", "verify_share": 0.5, "trusted": [KEY_A], "device": "cpu"}
    s = settings_from(Path("h"), config, {})
    assert (s.swarm, s.network.host, s.network.port, s.verify_share, s.trusted, s.device) == (
        "lab", "0.0.0.0", 9000, 0.5, (KEY_A,), "cpu")
    s = settings_from(Path("h"), config, {"swarm": "other", "listen": "127.0.0.1:0", "verify_share": 0.0,
                                          "trusted": (KEY_B,), "lan": False, "sync_interval": 2.0})
    assert (s.swarm, s.network.port, s.verify_share, s.trusted, s.network.lan, s.gossip.sync_interval_s) == (
        "other", 0, 0.0, (KEY_A, KEY_B), False, 2.0)


def test_bad_values_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not 64 lower-case hex"):
        settings_from(tmp_path, {"trusted": ["nope"]}, {})
    with pytest.raises(UserError, match="does not exist"):
        settings_from(tmp_path, {}, {"swarm_key_file": tmp_path / "missing.key"})
    with pytest.raises(UserError, match="HOST:PORT"):
        settings_from(tmp_path, {}, {"listen": "nowhere"})
