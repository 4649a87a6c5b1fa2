"""The Ralph loop: seed choice, dedupe, run, keep/discard, publish (negatives and crashes too), memory.
The trainer is a deterministic stand-in (test_ralph_support.ToyRunner); proposers are real (offline,
or Anthropic through the real SDK and tests/fake_anthropic.py).
Run: .venv/bin/python -m pytest tests/ralph/test_ralph_loop.py"""
from __future__ import annotations

import random

import pytest

from tests.fake_anthropic import FakeAnthropic, text_reply
from protocol.schemas import validate_claim
from ralph.context import pick_seed
from ralph.corpus import InMemoryCorpus
from ralph.loop import RalphLoop, memory_path
from ralph.memory import Memory
from ralph.proposers import AnthropicConfig, AnthropicProposer, OfflineProposer, Proposal
from ralph.proposers.retry import RetryPolicy
from ralph.settings import RalphSettings
from tests.ralph.test_ralph_support import SCRIPT, ToyRunner, ToyTask, toy_bpb, toy_result
from trainer.patches import apply_patch, make_patch, source_sha256


class ListProposer:
    """Hands out prepared sources in order: the test decides *what* is proposed, the loop the rest."""

    description = "proposer: scripted (test)"

    def __init__(self, *sources: str) -> None:
        self.sources = list(sources)
        self.seen: list = []
        self.sources_given = list(sources)

    def propose(self, context):
        self.seen.append(context)
        src = self.sources.pop(0)
        return Proposal(src, "scripted change")


def lr(value: str, source: str = SCRIPT) -> str:
    return source.replace("MATRIX_LR = 0.02", f"MATRIX_LR = {value}")


def make_loop(tmp_path, proposer, *, corpus=None, task=None, runner=None, **settings):
    task = task or ToyTask()
    corpus = corpus if corpus is not None else InMemoryCorpus()
    s = RalphSettings(**{"exploration": 0.0, **settings})
    memory = Memory.load(memory_path(tmp_path, task.id), s.memory_type, s.memory_depth)
    runner = runner or ToyRunner()

    async def publish(body):
        validate_claim(body)  # the node would reject anything else
        return corpus.add(body, apply_patch(await _parent_source(corpus, task, body), body["patch"]))

    loop = RalphLoop(task, corpus, proposer, s, memory, publish, runner, random.Random(0))
    return loop, corpus, runner


async def _parent_source(corpus, task, body):
    return task.body["source"] if body["parent"] is None else await corpus.source_of(body["parent"])


def steps(corpus) -> list[dict]:
    """The claims the loop's steps published, without the task's baseline claim (its first full
    measurement of the baseline puts one in a corpus that has none: protocol/SPEC.md 5.9)."""
    return [b for b in corpus.bodies if not (b["parent"] is None and b["patch"] == "")]


async def test_first_step_measures_baseline_and_publishes_a_valid_claim(tmp_path):
    loop, corpus, runner = make_loop(tmp_path, ListProposer(lr("0.03"), lr("0.031")))
    report = await loop.step()
    base_sha = source_sha256(SCRIPT)
    assert runner.calls == [(base_sha, 1.0), (source_sha256(lr("0.03")), 1.0)]
    (body,) = steps(corpus)
    assert body["parent"] is None and body["task"] == ToyTask().id
    (base,) = [b for b in corpus.bodies if b not in steps(corpus)]  # the baseline claim, published once
    assert base["source_sha256"] == base_sha and base["result"]["val_bpb"] == f"{toy_bpb(SCRIPT):.6f}"
    await loop.step()
    assert len([b for b in corpus.bodies if b["patch"] == ""]) == 1
    assert apply_patch(SCRIPT, body["patch"]) == lr("0.03") and body["source_sha256"] == source_sha256(lr("0.03"))
    assert report.status == "published" and report.outcome == body["outcome"] == "improved"
    assert report.val_bpb == pytest.approx(toy_bpb(lr("0.03")), abs=1e-6) and report.claim_id
    assert "improved val_bpb" in report.line()


@pytest.mark.parametrize("other_tokens, published", [(500, True), (1000, False)])
async def test_the_baseline_claim_is_published_at_the_nodes_own_budget(tmp_path, other_tokens, published):
    # A baseline run at another budget measures something else: it is no reference for claims at ours
    # (protocol/SPEC.md 5.9), so the loop publishes its own; one at our budget is enough.
    corpus = InMemoryCorpus()
    other = {**toy_result(toy_bpb(SCRIPT) + 0.1), "tokens": other_tokens}
    corpus.add({"task": ToyTask().id, "parent": None, "patch": "", "source_sha256": source_sha256(SCRIPT),
                "note": "a baseline run elsewhere", "outcome": "improved", "result": other}, SCRIPT, own=False,
               verified=False)  # a baseline claim is never a seed (its state is `baseline`)
    loop, corpus, _ = make_loop(tmp_path, ListProposer(lr("0.03")), corpus=corpus)
    await loop.step()
    bases = [b for b in corpus.bodies if b["patch"] == "" and b["parent"] is None]
    assert [b["result"]["tokens"] for b in bases] == [other_tokens] + ([1000] if published else [])


@pytest.mark.parametrize("keep_threshold, tolerance, outcome", [
    (0.0, 0.01, "worse"),     # gain ~0.0069 is inside the task's tolerance: luck, not progress
    (0.0, 0.001, "improved"),
    (0.05, 0.001, "worse"),   # the operator's stricter threshold binds
])
async def test_keep_threshold_respected(tmp_path, keep_threshold, tolerance, outcome):
    gain = toy_bpb(SCRIPT) - toy_bpb(lr("0.0201"))
    assert 0.005 < gain < 0.01
    loop, corpus, _ = make_loop(tmp_path, ListProposer(lr("0.0201")), task=ToyTask(tolerance=tolerance),
                                keep_threshold=keep_threshold)
    report = await loop.step()
    assert report.outcome == outcome and steps(corpus)[0]["outcome"] == outcome


async def test_negatives_and_crashes_are_published(tmp_path):
    crash = SCRIPT.replace("SEED = 1337", "SEED = 1337\nCRASH = 1")
    loop, corpus, _ = make_loop(tmp_path, ListProposer(lr("0.002"), crash))
    worse, crashed = await loop.step(), await loop.step()
    assert worse.outcome == "worse" and steps(corpus)[0]["result"]["val_bpb"] == f"{toy_bpb(lr('0.002')):.6f}"
    assert crashed.outcome == "crashed" and steps(corpus)[1]["result"] is None
    assert steps(corpus)[1]["note"] == "scripted change [crashed: RuntimeError: boom]"
    negatives = await corpus.recent_negatives(ToyTask().id, 5)
    assert [n.outcome for n in negatives] == ["crashed", "worse"]
    assert "[crashed]" in loop.memory.render() and "[worse]" in loop.memory.render()


async def test_duplicate_source_is_skipped_not_run_not_published(tmp_path):
    loop, corpus, runner = make_loop(tmp_path, ListProposer(lr("0.002"), lr("0.002"), SCRIPT, lr("0.03"), SCRIPT))
    await loop.step()  # a negative result: the seed stays the baseline
    calls = len(runner.calls)
    dup = await loop.step()
    itself = await loop.step()
    assert dup.status == "skipped" and "already in the corpus" in dup.reason
    assert itself.status == "skipped" and "is the seed itself" in itself.reason
    assert len(runner.calls) == calls and len(steps(corpus)) == 1
    await loop.step()  # an improvement: from now on greedy seeds from it
    baseline = await loop.step()  # the baseline's result is known without being a claim
    assert baseline.seed.claim_id is not None and "is the task baseline" in baseline.reason
    assert [r.outcome for r in loop.memory.records] == ["worse", "skipped", "skipped", "improved", "skipped"]


async def test_patch_that_does_not_apply_is_never_run_or_published(tmp_path):
    bad = make_patch(SCRIPT, lr("0.03")).replace("-MATRIX_LR = 0.02", "-MATRIX_LR = 0.07")
    with FakeAnthropic() as server:
        server.script(text_reply(f"Note: try it\n```diff\n{bad}```"))
        proposer = AnthropicProposer(AnthropicConfig("claude-sonnet-5-5", 1.0, retry=RetryPolicy(attempts=1)),
                                     api_key="sk-test", ledger_dir=tmp_path / "spend", base_url=server.base_url)
        loop, corpus, runner = make_loop(tmp_path, proposer)
        report = await loop.step()
    assert report.status == "proposal_failed" and "patch does not apply" in report.reason
    assert steps(corpus) == [] and runner.calls == [(source_sha256(SCRIPT), 1.0)]  # only the baseline


async def test_seeds_from_the_best_verified_entry_and_patches_against_it(tmp_path):
    corpus = InMemoryCorpus()
    task = ToyTask()
    better = lr("0.035")
    other = corpus.add({"task": task.id, "parent": None, "patch": make_patch(SCRIPT, better),
                        "source_sha256": source_sha256(better), "note": "someone else's",
                        "outcome": "improved", "result": toy_result(toy_bpb(better))}, better, own=False)
    proposer = ListProposer(better.replace("EMBED_LR = 0.1", "EMBED_LR = 0.11"))
    loop, corpus, runner = make_loop(tmp_path, proposer, corpus=corpus, task=task)
    report = await loop.step()
    assert report.seed.claim_id == other and report.seed.origin == "top"
    assert proposer.seen[0].seed.source == better
    assert runner.calls == [(source_sha256(proposer.sources_given[0]), 1.0)]  # seed bpb known: no baseline run
    assert steps(corpus)[1]["parent"] == other
    assert apply_patch(better, steps(corpus)[1]["patch"]) == better.replace("EMBED_LR = 0.1", "EMBED_LR = 0.11")
    assert [e.claim_id for e in proposer.seen[0].top] == [other]


async def test_epsilon_greedy_explores_all_candidates():
    corpus, task = InMemoryCorpus(), ToyTask()
    for v in ("0.03", "0.035"):
        corpus.add({"task": task.id, "parent": None, "patch": "", "source_sha256": source_sha256(lr(v)), "note": v,
                    "outcome": "improved", "result": toy_result(toy_bpb(lr(v)))}, lr(v), own=False)
    top = await corpus.top_entries(task.id, 5)
    rng = random.Random(1)
    greedy = {(await pick_seed(task, corpus, top, rng, 0.0, 1.98)).note for _ in range(20)}
    explore = {(await pick_seed(task, corpus, top, rng, 1.0, 1.98)).note for _ in range(60)}
    assert greedy == {"0.035"} and explore == {"0.03", "0.035", "task baseline"}


async def test_screening_runs_full_budget_only_for_promising(tmp_path):
    loop, corpus, runner = make_loop(tmp_path, ListProposer(lr("0.002"), lr("0.03")), experiment_budget=0.25)
    bad = await loop.step()
    good = await loop.step()
    base = source_sha256(SCRIPT)
    assert runner.calls == [(base, 1.0), (base, 0.25), (source_sha256(lr("0.002")), 0.25),
                            (source_sha256(lr("0.03")), 0.25), (source_sha256(lr("0.03")), 1.0)]
    assert bad.screened_out and bad.outcome == "worse" and "[screened out at 0.25 of the budget]" in bad.note
    assert not good.screened_out and good.outcome == "improved"


async def test_memory_survives_restart(tmp_path):
    loop, corpus, runner = make_loop(tmp_path, OfflineProposer(seed=3))
    for _ in range(3):
        await loop.step()
    first_notes = [r.note for r in loop.memory.records]
    runner2 = ToyRunner()
    loop2, _, _ = make_loop(tmp_path, ListProposer(lr("0.05")), corpus=corpus, runner=runner2)
    await loop2.step()
    assert (source_sha256(SCRIPT), 1.0) not in runner2.calls  # the baseline measurement was remembered
    context = loop2.proposer.seen[0]
    assert all(note in context.memory for note in first_notes)
    assert [r.step for r in loop2.memory.records] == [1, 2, 3, 4]


async def test_strategy_note_rewritten_by_anthropic_every_n(tmp_path):
    with FakeAnthropic() as server:
        diff1 = make_patch(SCRIPT, lr("0.03"))
        diff2 = make_patch(lr("0.03"), lr("0.03").replace("EMBED_LR = 0.1", "EMBED_LR = 0.3"))  # greedy: seed = step 1
        server.script(text_reply(f"Note: lr up\n```diff\n{diff1}```"), text_reply(f"Note: embed up\n```diff\n{diff2}```"),
                      text_reply("- MATRIX_LR up helped\n- EMBED_LR up hurt"))
        proposer = AnthropicProposer(AnthropicConfig("claude-sonnet-5-5", 1.0, retry=RetryPolicy(attempts=1)),
                                     api_key="sk-test", ledger_dir=tmp_path / "spend", base_url=server.base_url)
        loop, corpus, _ = make_loop(tmp_path, proposer, memory_type="strategy", coordinator_frequency=2)
        r1, r2 = await loop.step(), await loop.step()
        assert len(server.requests) == 3
    assert loop.memory.strategy == "- MATRIX_LR up helped\n- EMBED_LR up hurt"
    assert r2.usage.input_tokens == 2400  # proposal + summary, both recorded
    assert loop.memory.records[0].cost_usd == pytest.approx(r1.usage.cost_usd) and r1.usage.cost_usd > 0
    assert Memory.load(loop.memory.path, "strategy").strategy == loop.memory.strategy


async def test_strategy_note_offline_is_the_deterministic_summary(tmp_path):
    loop, _, _ = make_loop(tmp_path, OfflineProposer(seed=1), memory_type="strategy", coordinator_frequency=3)
    for _ in range(3):
        await loop.step()
    assert loop.memory.strategy.startswith("3 experiments,") and loop.memory.since_rewrite == 0


async def test_run_steps_until_stopped_and_pauses_after_idle_steps(tmp_path):
    import asyncio
    import time
    loop, corpus, _ = make_loop(tmp_path, ListProposer(lr("0.03"), lr("0.03"), lr("0.05")))
    stop = asyncio.Event()
    t0 = time.monotonic()
    reports = await loop.run(stop, max_steps=3, pause_s=0.2)
    assert [r.status for r in reports] == ["published", "skipped", "published"]
    assert time.monotonic() - t0 >= 0.2  # the skipped step paused
    stop.set()
    assert await loop.run(stop) == []


# -- the compute cap ---------------------------------------------------------------------------------

def slow(source: str, factor: int = 3) -> str:
    """The script trains ``factor`` times as long (ToyRunner reads SLOW)."""
    return source.replace("SEED = 1337  # not a knob", f"SEED = 1337  # not a knob\nSLOW = {factor}")


async def test_a_candidate_over_the_compute_cap_is_published_worse_not_improved(tmp_path):
    loop, corpus, runner = make_loop(tmp_path, ListProposer(slow(lr("0.03")), lr("0.035")),
                                     task=ToyTask(compute_cap="2.0"))
    over = await loop.step()
    # the seed measurement is the baseline's run, which also times it; the candidate over the cap
    # runs once more before it is judged over budget
    assert runner.calls == [(source_sha256(SCRIPT), 1.0)] + [(source_sha256(slow(lr("0.03"))), 1.0)] * 2
    assert over.status == "published" and over.outcome == steps(corpus)[0]["outcome"] == "worse"
    assert steps(corpus)[0]["note"] == "scripted change [over budget: 3.000 s vs cap 2.000 s]"
    assert steps(corpus)[0]["result"]["val_bpb"] == f"{toy_bpb(lr('0.03')):.6f}"  # better, but bought with compute
    assert loop.memory.records[0].outcome == "worse" and "[over budget" in loop.memory.render()
    fair = await loop.step()  # within the cap: judged on val_bpb alone
    assert fair.outcome == "improved" and "over budget" not in fair.note
    assert len(runner.calls) == 4


async def test_the_cap_edge_and_a_baseline_timed_after_a_verified_seed(tmp_path):
    task, better = ToyTask(compute_cap="2.0"), lr("0.035")

    def corpus_with_a_verified_seed() -> InMemoryCorpus:
        corpus = InMemoryCorpus()
        corpus.add({"task": task.id, "parent": None, "patch": make_patch(SCRIPT, better),
                    "source_sha256": source_sha256(better), "note": "someone else's", "outcome": "improved",
                    "result": toy_result(toy_bpb(better))}, better, own=False)
        return corpus

    corpus = corpus_with_a_verified_seed()
    edge = slow(lr("0.04"), 2)  # exactly 2x the baseline's time: within the cap
    loop, corpus, runner = make_loop(tmp_path, ListProposer(edge), corpus=corpus, task=task)
    report = await loop.step()
    # the seed's value is known, so the baseline runs only to time it, after the candidate
    assert runner.calls == [(source_sha256(edge), 1.0), (source_sha256(SCRIPT), 1.0)]
    assert report.outcome == "improved" and "over budget" not in report.note

    runner2 = ToyRunner()  # a restart (the same memory file): the baseline's time is remembered
    loop2, _, _ = make_loop(tmp_path, ListProposer(slow(lr("0.04"), 3)), corpus=corpus_with_a_verified_seed(),
                            task=task, runner=runner2)
    report = await loop2.step()
    assert report.outcome == "worse" and "[over budget: 3.000 s vs cap 2.000 s]" in report.note
    assert (source_sha256(SCRIPT), 1.0) not in runner2.calls


async def test_without_a_cap_nothing_is_timed(tmp_path):
    loop, corpus, runner = make_loop(tmp_path, ListProposer(slow(lr("0.03"), 10)))
    assert (await loop.step()).outcome == "improved"  # a task-like object without compute_cap


async def test_a_candidate_slowed_once_is_run_again_and_judged_on_the_lesser_time(tmp_path):
    class FirstRunSlowed(ToyRunner):
        async def __call__(self, task, source, *, seed, budget_scale):
            out = await super().__call__(task, source, seed=seed, budget_scale=budget_scale)
            if source != SCRIPT and self.calls.count(self.calls[-1]) == 1:  # its first run: the machine was busy
                out.result["wall_s"] = "5.000"
            return out

    loop, corpus, runner = make_loop(tmp_path, ListProposer(lr("0.03")), task=ToyTask(compute_cap="2.0"),
                                     runner=FirstRunSlowed())
    report = await loop.step()
    assert report.outcome == "improved" and steps(corpus)[0]["result"]["wall_s"] == "1.000"
    assert runner.calls.count((source_sha256(lr("0.03")), 1.0)) == 2
