"""Two real Ralph steps on the built-in tiny task: the offline proposer, the real trainer (sandboxed
training + evaluation) at a small budget scale, claims checked by protocol's validator.
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_real_step.py"""
from __future__ import annotations

import random

import pytest

from protocol.schemas import validate_claim
from ralph.corpus import InMemoryCorpus
from ralph.loop import RalphLoop, memory_path, threaded_runner
from ralph.memory import Memory
from ralph.proposers import OfflineProposer
from ralph.settings import RalphSettings

experiment = pytest.importorskip("trainer.experiment", reason="trainer.experiment not built yet")
pytestmark = pytest.mark.slow


async def test_two_real_steps_on_tiny(tmp_path):
    from trainer.patches import apply_patch, source_sha256
    from trainer.tasks import builtin_tasks

    task = builtin_tasks()["tiny"]
    corpus = InMemoryCorpus()
    published = []

    async def publish(body):
        validate_claim(body)
        parent = task.body["source"] if body["parent"] is None else await corpus.source_of(body["parent"])
        published.append(body)
        return corpus.add(body, apply_patch(parent, body["patch"]))

    settings = RalphSettings(exploration=0.0, boldness=0.5)
    memory = Memory.load(memory_path(tmp_path, task.id), settings.memory_type, settings.memory_depth)
    run = threaded_runner(device="cpu", cache_dir=tmp_path / "cache", timeout_s=240)
    scaled = lambda t, source, *, seed, budget_scale: run(t, source, seed=seed, budget_scale=budget_scale * 0.05)  # noqa: E731
    loop = RalphLoop(task, corpus, OfflineProposer(settings.boldness, seed=4), settings, memory, publish, scaled,
                     random.Random(0))
    reports = [await loop.step(), await loop.step()]
    assert all(r.status in ("published", "skipped") for r in reports), [r.line() for r in reports]
    assert published, [r.line() for r in reports]
    for body in published:
        assert body["outcome"] in ("improved", "worse", "crashed") and body["task"] == task.id
        if body["outcome"] != "crashed":
            assert 0 < float(body["result"]["val_bpb"]) < 9
    baseline_bpb = memory.measurement(source_sha256(task.body["source"]), 1.0)
    assert baseline_bpb is not None and 0 < baseline_bpb < 9
    assert len(Memory.load(memory.path).records) == 2
