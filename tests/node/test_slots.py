"""Device slots (node/slots.py): devices detected after the node listens (node/daemon.py), so torch's
import is not on the way to catching up; a loop that asks for a slot before waits for it.

    .venv/bin/python -m pytest tests/node/test_slots.py -q
"""
from __future__ import annotations

import asyncio

from node.daemon import Node
from node.settings import NetworkSettings, NodeSettings
from node.slots import DeviceSlots, detect_devices
from protocol import Identity


async def test_a_slot_asked_for_before_the_devices_are_known_waits_for_them():
    slots = DeviceSlots(devices=[])
    got: list[str] = []

    async def loop() -> None:
        async with slots.acquire("reproduce") as device:
            got.append(device)

    task = asyncio.ensure_future(loop())
    await asyncio.sleep(0)
    assert not task.done() and slots.free == 0
    slots.add(["cpu"])
    await asyncio.wait_for(task, 5)
    assert got == ["cpu"] and slots.devices == ["cpu"] and slots.free == 1


async def test_a_node_detects_its_devices_once_it_listens(tmp_path):
    settings = NodeSettings(home=tmp_path / "n", network=NetworkSettings(port=0, lan=False), ralph=False,
                            reproduce=True)
    assert settings.device != "cpu"
    node = Node(settings, Identity.generate(), echo=lambda _: None)
    await node.start()
    try:
        assert node.address is not None  # listening, whether or not the devices are known yet
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120  # torch's import on a busy 2-core machine
        while not node.slots.devices:
            assert loop.time() < deadline, "devices never detected"
            await asyncio.sleep(0.05)
        assert node.slots.devices == detect_devices()
    finally:
        await node.stop()


async def test_a_node_that_runs_no_experiment_has_one_cpu_slot_at_once(tmp_path):
    settings = NodeSettings(home=tmp_path / "n", network=NetworkSettings(port=0, lan=False), ralph=False,
                            reproduce=False)
    node = Node(settings, Identity.generate(), echo=lambda _: None)
    await node.start()
    try:
        assert node.slots.devices == ["cpu"] and node.slots.free == 1
    finally:
        await node.stop()
