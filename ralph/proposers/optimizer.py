"""The optimizer proposers: Optuna's TPE or CMA-ES over the seed script's constants (ralph/space.py).

Its trial history is the swarm's corpus: every claim of the task whose source has the seed's
*skeleton* (the same code, constants aside; for the task baseline's skeleton, every claim that
differs from the baseline only in constants) and was measured at this loop's token budget is a
completed trial, whoever ran it. So the nodes of a swarm optimize together: a node's TPE models
every node's results; its CMA-ES counts them towards the current generation (injected solutions).
A crashed claim, or one over the compute cap, is a trial at the worst value seen.

Each proposal is one ``study.ask()``: a point that breaks a divisibility constraint, whose
estimated cost per token exceeds ``compute_cap`` x the baseline's, that changes nothing, or that
was tried already (same normalized source) is told as failed (or with the known value) and the
sampler asks again, up to ``MAX_ASKS`` times. The asked trial stays running until its claim shows
up among the observations (the loop published it: its value is told) or the next proposal finds it
absent (the loop did not run it: told as failed).

The study lives in a journal file in the node home (one per agent and sampler, one study per
skeleton in it), so a CMA-ES generation survives a restart. It is a cache of the corpus plus the
sampler's state: a file that does not load is moved aside (``<name>.corrupt-<time>``) with one
line, and the next proposal starts afresh from the corpus.
"""
from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..hyperparams import diff_constants, set_constants
from ..space import Knob, Space, cost_per_token, skeleton_key, source_key, within_cap
from .base import Proposal, ProposalError, Usage

if TYPE_CHECKING:
    from ..context import Context
    from ..corpus import Observation

log = logging.getLogger("ralph.optimizer")
SAMPLERS = ("tpe", "cmaes")
MAX_ASKS = 64
TPE_STARTUP = 8  # points near the seed before TPE models the history (observations count towards them)
CMA_SIGMA0 = 0.15  # initial step in the [0, 1]-scaled space: about a factor 1.4 on a rate's log range


def _distribution(k: Knob) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    if k.kind in ("pow2", "int"):
        return IntDistribution(int(k.low), int(k.high))
    return FloatDistribution(k.low, k.high, log=k.kind in ("log", "one_minus_log"))


def usable(obs: "Observation", tokens: int | None) -> bool:
    """An observation counts as a trial at this budget (crashes count at any budget: they crash)."""
    if obs.outcome == "crashed":
        return True
    return obs.val_bpb is not None and (tokens is None or obs.tokens == tokens)


class OptimizerProposer:
    """``propose(context)`` for ``sampler`` in SAMPLERS; ``study_path`` None keeps the study in memory."""

    def __init__(self, sampler: str = "tpe", *, seed: int = 0, study_path: Path | None = None) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sampler_name = sampler
        self.seed = seed
        self.study_path = Path(study_path) if study_path is not None else None
        self.description = f"proposer: {'TPE' if sampler == 'tpe' else 'CMA-ES'} over the script's constants (optuna)"
        self._storage: Any = None
        self._studies: dict[str, tuple[Any, Space, dict]] = {}  # skeleton -> (study, space, distributions)
        self._keys: dict[str, str] = {}  # claim id -> source_key
        self._skeletons: dict[str, str] = {}  # claim id -> skeleton_key
        self._lock = threading.Lock()  # agents call propose from worker threads; one study, one writer

    # -- storage -----------------------------------------------------------------------------------

    def _open_storage(self) -> Any:
        if self._storage is not None:
            return self._storage
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if self.study_path is None:
            self._storage = optuna.storages.InMemoryStorage()
            return self._storage
        self.study_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _check_journal(self.study_path)  # before optuna opens it: optuna may append to a broken file
            storage = JournalStorage(JournalFileBackend(str(self.study_path)))
            storage.get_all_studies()  # replays the journal: a corrupt file fails here
        except Exception as e:  # noqa: BLE001 - any failure to read the cache: set it aside, start afresh
            self._set_aside(e)
        self._storage = storage
        return storage

    def _set_aside(self, error: Exception) -> None:
        assert self.study_path is not None
        aside = self.study_path.with_name(f"{self.study_path.name}.corrupt-{int(time.time())}")
        try:
            self.study_path.rename(aside)
        except OSError:
            aside = None  # type: ignore[assignment]
        self._storage = None
        self._studies.clear()
        where = f"moved aside to {aside.name}" if aside is not None else "could not move it aside"
        raise ProposalError(f"optimizer study file {self.study_path.name} is unreadable "
                            f"({type(error).__name__}); {where}; the next proposal starts afresh from the corpus")

    def _study(self, skeleton: str, seed_source: str) -> tuple[Any, Space, dict]:
        if skeleton in self._studies:
            return self._studies[skeleton]
        import optuna

        storage = self._open_storage()
        name = f"{skeleton[:16]}-{self.sampler_name}"
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=None)
            source = study.user_attrs.get("source")
            if not isinstance(source, str):
                raise ValueError("study without its source")
        except KeyError:  # no such study yet
            study, source = None, seed_source
        except Exception as e:  # noqa: BLE001
            if self.study_path is None:
                raise
            self._set_aside(e)
        space = Space.of(source)
        if not space.knobs:
            raise ProposalError("no hyperparameter constants (NAME = number) to optimize in the seed source")
        dists = {k.name: _distribution(k) for k in space.knobs}
        sampler = self._sampler(space, seed_source)
        try:
            if study is None:
                study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="minimize",
                                            load_if_exists=True)
                study.set_user_attr("source", source)
            else:
                study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        except Exception as e:  # noqa: BLE001
            if self.study_path is None:
                raise
            self._set_aside(e)
        self._studies[skeleton] = (study, space, dists)
        return self._studies[skeleton]

    def _sampler(self, space: Space, seed_source: str) -> Any:
        import optuna

        if self.sampler_name == "tpe":
            return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=TPE_STARTUP, multivariate=True,
                                              constant_liar=True)
        x0 = space.coordinates(seed_source) or {}
        with warnings.catch_warnings():  # x0 and sigma0 are deprecated since optuna 4.9 (still there in 5)
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.CmaEsSampler(x0=x0 or None, sigma0=CMA_SIGMA0 if x0 else None, seed=self.seed,
                                                n_startup_trials=0, warn_independent_sampling=False)

    # -- history -----------------------------------------------------------------------------------

    def _skeleton(self, obs: "Observation") -> str:
        key = self._skeletons.get(obs.claim_id)
        if key is None:
            key = self._skeletons[obs.claim_id] = skeleton_key(obs.source)
        return key

    def _key(self, obs: "Observation") -> str:
        key = self._keys.get(obs.claim_id)
        if key is None:
            key = self._keys[obs.claim_id] = source_key(obs.source)
        return key

    def _sync(self, study: Any, space: Space, dists: dict, skeleton: str,
              context: "Context") -> tuple[dict[str, float], set[str]]:
        """Add the corpus' new observations of this skeleton as trials, settle our asked trials;
        returns the value at this budget of every source key measured at it, and every tried key."""
        from optuna.trial import TrialState, create_trial

        tried = {self._key(o) for o in context.observations}

        observations = [o for o in context.observations if usable(o, context.tokens)]
        finite = [o.val_bpb for o in observations if o.val_bpb is not None and o.outcome != "crashed"
                  and not o.over_budget and math.isfinite(o.val_bpb)]
        penalty = max(finite) if finite else (context.seed.val_bpb or 0.0) + 1.0
        trials = study.get_trials(deepcopy=False)
        seen = {t.user_attrs.get("claim") for t in trials}
        pending = {t.user_attrs.get("key"): t for t in trials if t.state == TrialState.RUNNING}
        generation = self._generation(trials)
        known: dict[str, float] = {}
        for obs in observations:
            value = penalty if obs.outcome == "crashed" or obs.over_budget or obs.val_bpb is None else obs.val_bpb
            key = self._key(obs)
            known.setdefault(key, value)
            if obs.claim_id in seen or self._skeleton(obs) != skeleton:
                continue
            mine = pending.pop(key, None)
            if mine is not None:  # our own proposal, run and published: complete the asked trial
                study._storage.set_trial_user_attr(mine._trial_id, "claim", obs.claim_id)
                study.tell(mine.number, value)
                continue
            coords = space.coordinates(obs.source)
            if coords is None:
                continue
            attrs = {"claim": obs.claim_id, "key": key}
            system = {} if generation is None else {"cma:generation": generation}
            study.add_trial(create_trial(value=value, params={n: _param(dists[n], u) for n, u in coords.items()},
                                         distributions=dists, user_attrs=attrs, system_attrs=system))
        for trial in pending.values():  # asked before, never run (duplicate, refused, screened out)
            study.tell(trial.number, state=TrialState.FAIL)
        return known, tried

    def _generation(self, trials: list) -> int | None:
        """CMA-ES's current generation, read from its latest asked trial (observations join it)."""
        if self.sampler_name != "cmaes":
            return None
        gens = [t.system_attrs["cma:generation"] for t in trials if "cma:generation" in t.system_attrs]
        return max(gens) if gens else 0

    # -- proposing ---------------------------------------------------------------------------------

    def propose(self, context: "Context") -> Proposal:
        with self._lock:
            try:
                return self._propose(context)
            except ProposalError:
                raise
            except Exception as e:  # noqa: BLE001 - a sampler or storage failure is one line, not a crash
                if self.study_path is not None and self.study_path.exists():
                    self._set_aside(e)
                raise ProposalError(f"optimizer failed: {type(e).__name__}: {str(e)[:200]}") from None

    def _propose(self, context: "Context") -> Proposal:
        from optuna.trial import TrialState

        seed_source = context.seed.source
        skeleton = skeleton_key(seed_source)
        study, space, dists = self._study(skeleton, seed_source)
        known, tried = self._sync(study, space, dists, skeleton, context)
        tried |= set(context.tried)
        baseline = Space.of(context.baseline_source).centre if context.baseline_source else space.centre
        seed_values = space.values(space.coordinates(seed_source) or {})
        refused: dict[str, int] = {}
        for _ in range(MAX_ASKS):
            self._start_near_seed(study, space, dists, seed_source)
            trial = study.ask(dists)
            values = space.values(trial.params)
            ok, ratio = within_cap(values, baseline, context.compute_cap)
            why = ("constraint" if not space.feasible(values) else "over the compute cap" if not ok
                   else "no change" if all(values[k.name] == seed_values.get(k.name) for k in space.knobs) else "")
            if why:
                refused[why] = refused.get(why, 0) + 1
                study.tell(trial, state=TrialState.FAIL)
                continue
            literals = {k.name: lit for k, lit in ((k, k.literal(trial.params[k.name])) for k in space.knobs)
                        if (int(lit) if k.is_int else float(lit)) != seed_values.get(k.name)}
            source = set_constants(seed_source, literals)
            key = source_key(source)
            if key in tried:  # tried already: a free observation where its value is known; ask again
                refused["tried"] = refused.get("tried", 0) + 1
                if key in known:
                    study.tell(trial, known[key])
                else:
                    study.tell(trial, state=TrialState.FAIL)
                continue
            study._storage.set_trial_user_attr(trial._trial_id, "key", key)
            changes = diff_constants(seed_source, source)
            cost = "" if ratio is None else f", est. cost {ratio:.2f}x baseline"
            note = ", ".join(f"{n} {a} -> {b}" for n, a, b in changes)
            return Proposal(source, f"{note} ({self.sampler_name}{cost})", Usage())
        detail = ", ".join(f"{n} {why}" for why, n in sorted(refused.items()))
        raise ProposalError(f"the {self.sampler_name} sampler found no new feasible point in {MAX_ASKS} asks ({detail})")

    def _start_near_seed(self, study: Any, space: Space, dists: dict, seed_source: str) -> None:
        """TPE's startup points: until TPE_STARTUP trials are complete, the next ask is the seed with
        every knob moved by a Gaussian step of CMA_SIGMA0 of its range (the spread of CMA-ES's first
        generation), not a uniform draw over the whole space: with a dozen or more knobs a uniform
        point is far from anything that trains well, and TPE then models only bad points."""
        from optuna.trial import TrialState

        if self.sampler_name != "tpe":
            return
        trials = study.get_trials(deepcopy=False)
        if sum(t.state == TrialState.COMPLETE for t in trials) >= TPE_STARTUP:
            return
        centre = space.coordinates(seed_source)
        if centre is None:
            return
        rng = random.Random(f"{self.seed}:{len(trials)}")
        study.enqueue_trial({k.name: near(k, centre[k.name], CMA_SIGMA0, rng) for k in space.knobs},
                            skip_if_exists=False)

    def best_text(self, context: "Context") -> str:
        """The best constants measured so far at this budget among scripts of the seed's skeleton
        (what the hybrid's LLM sees), or "" when there are none."""
        skeleton = skeleton_key(context.seed.source)
        best = None
        for obs in context.observations:
            if (obs.outcome != "crashed" and not obs.over_budget and obs.val_bpb is not None
                    and usable(obs, context.tokens) and self._skeleton(obs) == skeleton
                    and (best is None or obs.val_bpb < best.val_bpb)):
                best = obs
        if best is None:
            return ""
        changes = diff_constants(context.baseline_source or context.seed.source, best.source)
        moved = ", ".join(f"{n} {a} -> {b}" for n, a, b in changes) or "the baseline's constants"
        return f"val_bpb {best.val_bpb:.6f} (claim {best.claim_id[:12]}) with {moved}"


def near(k: Knob, u: float, sigma: float, rng: random.Random) -> float | int:
    """A coordinate of ``k`` a Gaussian step of ``sigma`` x its range from ``u`` (in the space the
    sampler sees: log for rates and decays), inside the range; integers rounded."""
    if k.kind in ("log", "one_minus_log"):
        lo, hi, x = math.log(k.low), math.log(k.high), math.log(min(max(u, k.low), k.high))
        return min(max(math.exp(x + rng.gauss(0.0, sigma) * (hi - lo)), k.low), k.high)
    x = min(max(u + rng.gauss(0.0, sigma) * (k.high - k.low), k.low), k.high)
    return int(round(x)) if k.kind in ("pow2", "int") else x


def _check_journal(path: Path) -> None:
    """Every line of an existing journal file is a JSON object (optuna's journal format)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for number, line in enumerate(data.splitlines(), 1):
        if not isinstance(json.loads(line), dict):
            raise ValueError(f"line {number} is not a journal entry")


def _param(dist: Any, u: float) -> float | int:
    from optuna.distributions import IntDistribution

    return int(round(u)) if isinstance(dist, IntDistribution) else float(u)


def estimated_cost(source: str) -> float | None:
    """Estimated FLOPs per token of a script (ralph/space.py cost_per_token)."""
    return cost_per_token(Space.of(source).centre)
