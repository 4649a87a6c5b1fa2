"""Messages that wait for another (issue 17 item 2): a vote for a claim the replica does not hold, a claim
whose parent it does not hold. They are not stored (nor relayed) while they wait, in memory, bounded in
count and bytes, the oldest forgotten first; when the message they wait for is stored, they are
stored after it (store/replica.py ``ingest``). Forgotten ones come back by the next sync if a peer
holds them, so a flood of votes for claims that do not exist costs memory up to the bound and
nothing on disk.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class PendingStats:
    held: int = 0  # messages put to wait
    released: int = 0  # stored once what they waited for arrived
    forgotten: int = 0  # dropped to stay within the bounds


class PendingSet:
    def __init__(self, max_messages: int, max_bytes: int):
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # id -> (awaited id, raw), oldest first
        self._by_need: dict[str, set[str]] = {}
        self.bytes = 0
        self.stats = PendingStats()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._items

    def awaited(self, message_id: str) -> str | None:
        """The id a held message waits for; None when it is not held."""
        item = self._items.get(message_id)
        return item[0] if item is not None else None

    def hold(self, message_id: str, need: str, raw: bytes) -> None:
        if message_id in self._items or len(raw) > self.max_bytes:
            return
        self._items[message_id] = (need, raw)
        self._by_need.setdefault(need, set()).add(message_id)
        self.bytes += len(raw)
        self.stats.held += 1
        while len(self._items) > self.max_messages or self.bytes > self.max_bytes:
            old_id, (old_need, old_raw) = self._items.popitem(last=False)
            self._unlink(old_id, old_need, old_raw)
            self.stats.forgotten += 1

    def _unlink(self, message_id: str, need: str, raw: bytes) -> None:
        self.bytes -= len(raw)
        waiting = self._by_need.get(need)
        if waiting is not None:
            waiting.discard(message_id)
            if not waiting:
                del self._by_need[need]

    def release(self, stored_ids) -> list[bytes]:
        """The raw bytes of the messages that waited for any of ``stored_ids`` (now stored), removed."""
        out = []
        for need in stored_ids:
            for message_id in sorted(self._by_need.pop(need, ())):
                item = self._items.pop(message_id, None)
                if item is not None:
                    self.bytes -= len(item[1])
                    out.append(item[1])
        self.stats.released += len(out)
        return out
