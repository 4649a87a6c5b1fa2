"""A tokenized task through the real harness (slow): the climbmix baseline script, at a tiny shape,
trained and scored in sandboxed processes on made-up parquet shards with a small tokenizer; the same
seed repeats bit for bit; a script that reads the next token is caught by the probes; a model that
returns byte-sized logits on a token task is refused."""
from __future__ import annotations

import hashlib
import math
import random
import shutil
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("rustbpe")
pytest.importorskip("tiktoken")

from trainer import tokens  # noqa: E402
from trainer.experiment import RunSettings, run_experiment  # noqa: E402
from trainer.tasks import CLIMBMIX_BASELINE_PATH, baseline_source, climbmix_manifest, climbmix_task  # noqa: E402

pytestmark = pytest.mark.slow
CONTEXT = 32
VOCAB = 256 + 4 + 30
BUDGET = 6_144  # 12 global batches of 2 x 8 x 32 tokens: one rank and two train the same tokens
SMALL = {"DEPTH": 2, "MODEL_DIM": 64, "N_HEADS": 2, "DEVICE_BATCH_SIZE": 8, "TOTAL_BATCH_SIZE": 512}
WORDS = "the cat sat on a mat while dogs ran far away from home and the sun set over hills".split()


def _docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):  # a little structure to learn: word bigrams from a fixed table
        w = rng.choice(WORDS)
        words = [w]
        for _ in range(rng.randrange(5, 40)):
            w = WORDS[(WORDS.index(w) * 7 + rng.choice((1, 1, 1, 2))) % len(WORDS)]
            words.append(w)
        out.append(" ".join(words) + ".")
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("climbmix")
    hub = root / "hub"
    hub.mkdir()
    names = []
    for i, (n, seed) in enumerate([(400, 1), (400, 2), (120, 3)]):
        name = f"shard_{i:05d}.parquet" if i < 2 else "shard_06542.parquet"
        pq.write_table(pa.table({"text": pa.array(_docs(n, seed), type=pa.string())}), hub / name)
        names.append(name)
    pins = {n: (hashlib.sha256((hub / n).read_bytes()).hexdigest(), (hub / n).stat().st_size) for n in names}
    manifest = climbmix_manifest(pins, "0" * 40, train=names[:2], val=names[2:], vocab=VOCAB)
    docs = (d for n in names[:2] for d in pq.read_table(hub / n).column("text").to_pylist())
    sha = hashlib.sha256(tokens.train_tokenizer(docs, VOCAB)).hexdigest()

    def download(repo, name, revision, dest):
        shutil.copyfile(hub / name, Path(dest) / name)
        return Path(dest) / name

    source = baseline_source(SMALL, CLIMBMIX_BASELINE_PATH)
    t = climbmix_task(manifest, sha, context=CONTEXT, val_windows=48, budget_tokens=BUDGET, source=source,
                      download=download)
    return t, root / "cache"


def _run(task, source, cache, seed=0):
    return run_experiment(task, source, seed=seed, device="cpu", cache_dir=cache,
                          settings=RunSettings(warm_pool=False))


def test_climbmix_baseline_trains_and_scores_in_bits_per_byte(task):
    t, cache = task
    out = _run(t, t.source, cache)
    assert out.outcome_ok, out.reason
    bpb = out.val_bpb
    # Uniform over the vocabulary would be log2(VOCAB) bits per token, over ~4 bytes a token.
    assert 0.2 < bpb < math.log2(VOCAB)
    curve = [float(loss) for _, loss in out.result["curve"]]
    assert curve[-1] < curve[0] - 0.5  # it learned something
    assert out.result["tokens"] == BUDGET
    again = _run(t, t.source, cache)
    assert again.result["val_bpb"] == out.result["val_bpb"]  # same seed, same bits
    assert again.result["curve"] == out.result["curve"]


LOOKAHEAD = '''

_honest_forward = GPT.forward


def _peek(self, idx):  # honest in training; in evaluation, raise the logit of the next input token
    logits = _honest_forward(self, idx)
    if self.training:
        return logits
    nxt = F.one_hot(idx[:, 1:], logits.size(-1)).to(logits.dtype) * 10.0
    return torch.cat([logits[:, :-1] + nxt, logits[:, -1:]], dim=1)


GPT.forward = _peek
'''


def test_a_script_that_reads_the_next_token_is_caught(task):
    t, cache = task
    out = _run(t, t.source + LOOKAHEAD, cache)
    assert not out.outcome_ok and "sees the future" in out.reason, out.reason


BYTE_LOGITS = '''

_honest_build = build_model


def build_model(vocab_size, context):
    return _honest_build(256, context)
'''


def test_logits_of_the_wrong_vocabulary_are_refused(task):
    t, cache = task
    out = _run(t, t.source + BYTE_LOGITS, cache)
    assert not out.outcome_ok
    assert "Embedding" in out.reason or "index" in out.reason or "shape" in out.reason, out.reason


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_climbmix_baseline_on_cuda_compiled_in_the_sandbox(task):
    """The GPU path of a tokenized task: bf16 autocast, the ids on the device, torch.compile and
    FlexAttention inside the sandbox, two model processes on the GPU."""
    t, cache = task
    out = run_experiment(t, t.source, seed=0, device="cuda", cache_dir=cache, settings=RunSettings(warm_pool=False))
    assert out.outcome_ok, out.reason
    assert out.result["device"].startswith("cuda") and 0.2 < out.val_bpb < math.log2(VOCAB)


def test_two_ranks_give_the_val_bpb_of_one(task):
    """gpus_per_experiment = 2 (harness text `gpus=2`): rank 0 starts rank 1 in the same sandbox, each
    trains on its half of every global batch (gloo over the sandbox's loopback on a CPU), gradients
    are averaged before each step; one curve and one result come back, within the task's tolerance
    of the same run on one rank."""
    t, cache = task
    two = climbmix_task(climbmix_manifest_of(t), t.harness.tokenizer, context=CONTEXT, val_windows=48,
                        budget_tokens=BUDGET, source=t.source, download=t.download, gpus=2)
    assert two.harness.gpus == 2 and two.id != t.id and two.harness.text().endswith(" gpus=2")
    one = _run(t, t.source, cache)
    out = _run(two, two.source, cache)
    assert one.outcome_ok and out.outcome_ok, (one.reason, out.reason)
    print(f"val_bpb: one rank {one.val_bpb:.6f}, two ranks {out.val_bpb:.6f}")
    assert abs(out.val_bpb - one.val_bpb) <= t.tolerance, (out.val_bpb, one.val_bpb)
    # One curve, rank 0's: a point per global batch (twice one rank's batch) at the same budget marks.
    two_marks, one_marks = [p[0] for p in out.result["curve"]], [p[0] for p in one.result["curve"]]
    assert set(two_marks) <= set(one_marks) and all(m % 512 == 0 for m in two_marks)
    assert two_marks[-1] == one_marks[-1] == BUDGET
    assert out.result["tokens"] == one.result["tokens"] == BUDGET


def climbmix_manifest_of(task):
    from trainer.shards import Manifest

    return Manifest.parse(task.fetch(None))  # the task's own manifest bytes


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available() or __import__("torch").cuda.device_count() < 2,
                    reason="needs two CUDA devices")
def test_two_ranks_on_two_gpus_with_nccl(task):
    t, cache = task
    two = climbmix_task(climbmix_manifest_of(t), t.harness.tokenizer, context=CONTEXT, val_windows=48,
                        budget_tokens=BUDGET, source=t.source, download=t.download, gpus=2)
    out = run_experiment(two, two.source, seed=0, device="cuda", cache_dir=cache, settings=RunSettings(warm_pool=False))
    assert out.outcome_ok, out.reason
