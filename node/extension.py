"""What a node extension (the own Ralph loops, the reproduction scheduler) may use of the node, and
what it offers back: ``NodeView`` and ``Extension``, typed, so an extension never reaches into the
daemon's other attributes (node/daemon.py is the composition root that satisfies ``NodeView``).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Protocol, Sequence

if TYPE_CHECKING:
    from protocol import Envelope, Identity
    from store import Replica

    from node.corpus import ReplicaCorpus, TaskBook
    from node.net.peers import PeerTable
    from node.settings import NodeSettings
    from node.slots import DeviceSlots
    from node.telemetry import Telemetry
    from trainer.tasks import Task


class Extension(Protocol):
    async def start(self, node: "NodeView") -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> str: ...  # one startup line

    def on_accepted(self, envelopes: list) -> None: ...  # new messages stored (from gossip or our own)

    @property
    def busy(self) -> bool:
        """Work of this extension is under way (an own-loop step): reproduction keeps to its share."""
        ...


class NodeView(Protocol):
    settings: "NodeSettings"  # home, task, run_untrusted, verify_share, budget_scale, ralph
    identity: "Identity"
    replica: "Replica"
    tasks: "TaskBook"  # task id -> Task: built-ins and the corpus's task messages
    corpus: "ReplicaCorpus"  # ralph's CorpusView, and claim sources
    slots: "DeviceSlots"
    telemetry: "Telemetry"  # counters, activity per device, events
    peers: "PeerTable"  # read only: who this node reaches (the console's peer lines)
    extensions: Sequence[Extension]

    async def publish(self, kind: str, body: dict) -> "Envelope": ...

    async def own_task(self) -> "Task": ...  # the task of --task: built-in or from the corpus

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task: ...
