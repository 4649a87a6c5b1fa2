"""The client for a node running on this home: where it listens (its runtime file) and asking it.

The CLI's commands that talk to a running node (import, status) use this; the node writes the
runtime file when it starts (node/cli/node.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from node.errors import UserError
from node.home import Home
from node.net.http import HttpTransport
from node.net.swarmkey import SwarmKey
from node.net.transport import PeerUnavailable


def runtime_path(home: Home) -> Path:
    return home.path / "node.json"


def running_address(home: Home) -> str | None:
    """The address of this home's running node, if its runtime file says one is up."""
    runtime = runtime_path(home)
    if not runtime.exists():
        return None
    try:
        info = json.loads(runtime.read_text())
        os.kill(int(info["pid"]), 0)
    except (ValueError, KeyError, OSError):
        return None  # stale file from a killed node
    return info["address"]


async def ask(home: Home, path: str, method: str = "GET", body: bytes | None = None) -> Any:
    """Ask this home's running node (address from its runtime file)."""
    if running_address(home) is None:
        raise UserError(f"no node is running for {home.path} (start one: ralphswarm node --home {home.path})")
    info = json.loads(runtime_path(home).read_text())
    key = None
    if info.get("swarm_key_file"):  # the running node's own key: the CLI speaks to it sealed
        key = SwarmKey.load(Path(info["swarm_key_file"]), info["swarm"])
    async with aiohttp.ClientSession() as session:
        transport = HttpTransport(session, swarm_key=key, timeout_s=5)
        try:
            return await transport.request(method, info["address"], path, body)
        except PeerUnavailable as exc:
            raise UserError(f"the node at {info['address']} did not answer ({exc.reason})") from None
