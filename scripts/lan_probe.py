"""Run one LanDiscovery and print what it sees as JSON lines; used by tests/node/test_discovery_lan.py.

    ip netns exec NS .venv/bin/python scripts/lan_probe.py --swarm lab --pubkey HEX64 \
        --port 8001 --interface-addr 10.201.1.1 --seconds 20

Lines on stdout (one JSON object each, flushed at once so a reader sees them live):
  {"event": "started"}
  {"event": "peer", "address": "http://10.201.1.2:8002", "pubkey": "..."}
  {"event": "ignored", "name": "<service name>", "reason": "ignored: other swarm"}
  {"event": "stopped", "leaked_tasks": 0}
Stops after --seconds, or at once on SIGTERM/SIGINT, always through LanDiscovery.stop().

`--announce NAME PORT TXT_JSON` (repeatable) switches to a raw announcer instead: it registers
those services with plain zeroconf, whatever their TXT says (so tests can put malformed records on
the wire), and reads commands from stdin: `port NAME N` re-announces NAME with port N (a service
update, as browsers see it). It prints {"event": "started"} and {"event": "updated", "name": NAME}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from any cwd

from zeroconf import IPVersion  # noqa: E402
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf  # noqa: E402

from node.net.lan import SERVICE_TYPE, LanDiscovery  # noqa: E402


def emit(**fields: object) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


async def probe(args: argparse.Namespace) -> int:
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)

    async def on_peer(address: str, pubkey: str) -> None:
        emit(event="peer", address=address, pubkey=pubkey)

    disco = LanDiscovery(
        swarm=args.swarm,
        pubkey=args.pubkey,
        port=args.port,
        interface_addr=args.interface_addr,
        on_peer=on_peer,
        instance_name=args.instance,
        on_ignored=lambda name, reason: emit(event="ignored", name=name, reason=reason),
    )
    await disco.start()
    emit(event="started")
    try:
        await asyncio.wait_for(done.wait(), timeout=args.seconds)
    except TimeoutError:
        pass
    finally:
        await disco.stop()
    # stop() promises no leaked tasks: everything but this coroutine must be gone.
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    emit(event="stopped", leaked_tasks=len(leaked))
    return 0


async def announce(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: None)  # exit via stdin EOF or --seconds, not mid-write
    azc = AsyncZeroconf(interfaces=[args.interface_addr], ip_version=IPVersion.V4Only)
    infos: dict[str, AsyncServiceInfo] = {}
    try:
        for name, port, txt in args.announce:
            info = AsyncServiceInfo(
                SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=int(port),
                properties=json.loads(txt), parsed_addresses=[args.interface_addr],
            )
            await azc.async_register_service(info)
            infos[name] = info
        emit(event="started")
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        async with asyncio.timeout(args.seconds):
            while line := (await reader.readline()).decode().split():
                if line[0] == "port":
                    old = infos[line[1]]
                    new = AsyncServiceInfo(
                        SERVICE_TYPE, old.name, port=int(line[2]), properties=old.properties,
                        server=old.server, parsed_addresses=[args.interface_addr],
                    )
                    await (await azc.async_update_service(new))
                    infos[line[1]] = new
                    emit(event="updated", name=line[1])
    except TimeoutError:
        pass
    finally:
        await azc.async_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swarm")
    parser.add_argument("--pubkey", help="64 hex characters")
    parser.add_argument("--port", type=int, help="the HTTP port to announce")
    parser.add_argument("--interface-addr", default=None, help="bind mDNS to this IPv4 address only")
    parser.add_argument("--instance", default=None, help="service instance name")
    parser.add_argument("--seconds", type=float, default=20.0, help="exit after this long")
    parser.add_argument("--announce", nargs=3, action="append", metavar=("NAME", "PORT", "TXT_JSON"),
                        help="raw announcer mode (see above); repeatable")
    args = parser.parse_args(argv)
    if args.announce:
        if args.interface_addr is None:
            parser.error("--announce needs --interface-addr")
        return asyncio.run(announce(args))
    if args.swarm is None or args.pubkey is None or args.port is None:
        parser.error("--swarm, --pubkey and --port are required")
    return asyncio.run(probe(args))


if __name__ == "__main__":
    sys.exit(main())
