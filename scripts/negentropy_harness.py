#!/usr/bin/env python3
"""Line-protocol adapter for hoytech/negentropy's conformance tests (test/fuzz.pl, test/cpp/harness.cpp).

Reads stdin lines:  item,<timestamp>,<hex id> | seal | initiate | msg,<hex>
Writes stdout lines: msg,<hex> | have,<hex id> | need,<hex id> | done
FRAMESIZELIMIT in the environment sets the frame size limit (as the reference harness does).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.net.negentropy import Negentropy, Storage  # noqa: E402


def main() -> int:
    limit = int(os.environ.get("FRAMESIZELIMIT", "0"))
    items: list[tuple[int, bytes]] = []
    ne: Negentropy | None = None
    initiator = False
    for line in sys.stdin:
        fields = line.strip().split(",")
        cmd = fields[0]
        if not cmd:
            continue
        if cmd == "item":
            items.append((int(fields[1]), bytes.fromhex(fields[2])))
        elif cmd == "seal":
            ne = Negentropy(Storage(items), limit)
        elif cmd == "initiate":
            initiator = True
            print(f"msg,{ne.initiate().hex()}", flush=True)
        elif cmd == "msg":
            query = bytes.fromhex(fields[1] if len(fields) > 1 else "")
            if initiator:
                out, have, need = ne.reconcile_client(query)
                lines = [f"have,{i.hex()}" for i in have] + [f"need,{i.hex()}" for i in need]
                lines.append("done" if out is None else f"msg,{out.hex()}")
                print("\n".join(lines), flush=True)
            else:
                print(f"msg,{ne.reconcile(query).hex()}", flush=True)
        else:
            print(f"unknown cmd: {cmd}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
