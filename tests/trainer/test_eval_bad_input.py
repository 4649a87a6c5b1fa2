"""A model that answers the scorer badly ends the run `crashed` with a one-line reason, and nothing
of the run outlives it: it never answers, answers the wrong shape or dtype, or answers NaN.

Run: .venv/bin/python -m pytest tests/trainer/test_eval_bad_input.py -q
"""
from __future__ import annotations

import pytest

from tests.procs import processes_in
from tests.timing import PROCESS_SLACK_S
from trainer import sandbox, warm
from trainer.experiment import RunSettings, run_experiment
from trainer.patches import apply_patch, make_patch
from trainer.tasks import builtin_tasks, load_data

pytestmark = pytest.mark.slow
TINY = builtin_tasks()["tiny"]
SCALE = 0.05  # 15k tokens: seconds of training
RETURN = "        return SOFTCAP * torch.tanh(logits / SOFTCAP)"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    load_data(TINY, path)
    return path


def _eval_returns(expr: str, before: str = "") -> str:
    """The baseline, whose model answers ``expr`` instead of its logits once in eval mode."""
    new = (f"{before}        if not self.training:\n            return {expr}\n" + RETURN)
    source = TINY.source
    assert RETURN in source
    return apply_patch(source, make_patch(source, source.replace(RETURN, new)))


CASES = {
    "wrong shape": (_eval_returns("logits[:, :-1]"), "logits of shape"),
    "integer dtype": (_eval_returns("logits.long()"), "dtype int64"),
    "not a tensor": (_eval_returns("logits.tolist()"), "logits of shape list"),
    "nan": (_eval_returns("logits * float('nan')"), "non-finite logits"),
    "inf": (_eval_returns("logits.masked_fill(idx[..., None] == idx[0, 0], float('inf'))"), "non-finite logits"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_answer_is_a_one_line_crash(cache, tmp_path, case):
    source, says = CASES[case]
    run = run_experiment(TINY, source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache,
                         work_dir=tmp_path / "work", settings=RunSettings(warm_pool=False))
    assert not run.outcome_ok and says in run.reason, run.reason
    assert "\n" not in run.reason and len(run.reason) <= 400
    assert processes_in(tmp_path) == []


def test_a_model_that_never_answers_times_out_and_leaves_nothing(cache, tmp_path):
    # Its limit counts from its job (given at training's first point): training's limit plus the
    # evaluation's, here 20 + 10 s; the run ends within that plus the kill: the harness gets
    # EXIT_GRACE_S at most to be gone, its pipes PIPE_LINGER_S.
    train_s, eval_s = 20, 10
    source = _eval_returns("logits", before="        if not self.training:\n            import time\n"
                                             "            time.sleep(10**6)\n")
    run = run_experiment(TINY, source, seed=0, budget_scale=SCALE, device="cpu", cache_dir=cache, timeout_s=train_s,
                         work_dir=tmp_path / "work", settings=RunSettings(warm_pool=False, eval_timeout_s=eval_s))
    assert not run.outcome_ok and run.reason.startswith("timeout after"), run.reason
    assert run.wall_s < train_s + eval_s + warm.EXIT_GRACE_S + sandbox.PIPE_LINGER_S + PROCESS_SLACK_S
    assert processes_in(tmp_path) == []
