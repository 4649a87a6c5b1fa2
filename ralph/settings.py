"""The outer loop's meta-parameters (docs/design.md, "The outer loop").

These are the seeds' knobs made first-class: a node reads them from the ``"ralph"`` section of its
config file, then lets CLI flags override single values. Validation raises ``SettingsError`` with one
line a user can act on; the CLI edge turns it into its own error message.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

DEFAULT_MODEL = "claude-sonnet-5-5"  # a current Sonnet among anthropic 2.12.0's ModelParam literals
MEMORY_TYPES = ("full", "strategy")
PROPOSERS = ("mutate", "tpe", "cmaes", "llm", "hybrid")
# Without a key. scripts/bench/search --proposer mutate,tpe,cmaes --experiments 50 --repeats 3
# --budget-scale 0.25 (tiny, CPU; the baseline 3.0143, the entropy rate 1.9045): median best val_bpb after
# 10/20/30/40/50 experiments tpe 2.433/2.211/2.211/2.211/2.211, cmaes 2.982/2.711/2.711/2.402/2.316,
# mutate 2.844/2.605/2.605/2.605/2.558; share of the gap closed per repeat tpe 72.7% 61.4% 72.4% (median
# 72.4%), cmaes 64.5% 62.9% 55.2% (62.9%), mutate 28.4% 66.1% 41.1% (41.1%). TPE leads from the 10th
# experiment on (its startup points are near the seed, ralph/proposers/optimizer.py).
# (At 0.05 of the budget no config came near the floor: the best of 513 runs closed 19% there.)
DEFAULT_PROPOSER = "tpe"
LLM_APIS = ("anthropic", "openai")
EDIT_FORMATS = ("auto", "diff", "whole")


class SettingsError(ValueError):
    """A meta-parameter has an unusable value; the message is one line naming the setting."""


@dataclass(frozen=True)
class RalphSettings:
    experiment_budget: float = 1.0  # screening fraction of the task budget; 1.0 = no screening run
    memory_type: str = "full"  # "full": history of experiments; "strategy": a rewritten strategy note
    memory_depth: int = 20  # how many past experiments (or note lines) reach the context
    agent_count: int = 1  # concurrent Ralph loops the node runs
    boldness: float = 0.3  # mutation scale: sigma of the log-normal step for float constants
    exploration: float = 0.2  # epsilon of the epsilon-greedy seed choice
    coordinator_frequency: int = 5  # rewrite the strategy note every N experiments
    keep_threshold: float = 0.0  # required improvement in val_bpb; raised to the task tolerance
    top_k: int = 5  # top entries shown to the proposer and eligible as seeds
    islands: int = 4  # lineages kept as seeds besides the baseline (ralph/islands.py); 0: epsilon-greedy over top_k
    model: str = DEFAULT_MODEL  # Anthropic model when ANTHROPIC_API_KEY is set
    daily_spend_usd: float = 5.0  # Anthropic spend cap per UTC day; 0 disables the API proposer
    train_seed: int = 0  # the training seed, fixed so differences come from the change, not the draw
    # "" = hybrid with an LLM key, else DEFAULT_PROPOSER; mutate | tpe | cmaes | llm | hybrid
    proposer: str = ""
    llm_share: float = 0.3  # hybrid: share of proposals the LLM makes (code changes) instead of the optimizer
    llm_api: str = "anthropic"  # anthropic (Messages API) | openai (Chat Completions, any compatible server)
    llm_base_url: str = ""  # the LLM server; "" = ANTHROPIC_BASE_URL / OPENAI_BASE_URL, else the vendor's
    edit_format: str = "auto"  # diff | whole | auto (diff for Claude and GPT models, whole files for others)

    def __post_init__(self) -> None:
        validate(self)

    def effective_keep_threshold(self, task_tolerance: float) -> float:
        """Never keep an improvement smaller than the task's noise tolerance: luck is not progress."""
        return max(float(self.keep_threshold), float(task_tolerance))

    def merged(self, overrides: Mapping[str, Any]) -> "RalphSettings":
        """A copy with ``overrides`` applied (None values mean "not given", as from unset CLI flags)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        _check_names(given)
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in given.items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "RalphSettings":
        """From the config file's ``"ralph"`` section; unknown keys are an error, not silently ignored."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise SettingsError('config section "ralph" must be an object')
        return cls().merged(data)

    @classmethod
    def from_sources(cls, config: Mapping[str, Any] | None, flags: Mapping[str, Any] | None = None) -> "RalphSettings":
        """Defaults, then the config section, then CLI flags (highest precedence)."""
        return cls.from_dict(config).merged(flags or {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TYPES = {f.name: f.type for f in fields(RalphSettings)}


def _check_names(data: Mapping[str, Any]) -> None:
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise SettingsError(f"unknown ralph setting {unknown[0]!r} (known: {', '.join(sorted(_TYPES))})")


def _coerce(name: str, value: Any) -> Any:
    """Accept the strings a CLI flag or a hand-edited config produces, with a clear error otherwise."""
    kind = _TYPES[name]
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"ralph setting {name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}") from None
    if not isinstance(value, str):
        raise SettingsError(f"ralph setting {name} must be a string, got {value!r}")
    return value


def validate(s: RalphSettings) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise SettingsError("ralph setting " + message)

    for name, kind in _TYPES.items():
        value = getattr(s, name)
        ok = isinstance(value, str) if kind == "str" else (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and (kind == "float" or isinstance(value, int))
        )
        need(ok, f"{name} has the wrong type ({type(value).__name__})")
    need(0.0 < s.experiment_budget <= 1.0, f"experiment_budget must be in (0, 1], got {s.experiment_budget}")
    need(s.memory_type in MEMORY_TYPES, f"memory_type must be one of {'|'.join(MEMORY_TYPES)}, got {s.memory_type!r}")
    need(1 <= s.memory_depth <= 1000, f"memory_depth must be in [1, 1000], got {s.memory_depth}")
    need(1 <= s.agent_count <= 64, f"agent_count must be in [1, 64], got {s.agent_count}")
    need(0.0 < s.boldness <= 3.0, f"boldness must be in (0, 3], got {s.boldness}")
    need(0.0 <= s.exploration <= 1.0, f"exploration must be in [0, 1], got {s.exploration}")
    need(1 <= s.coordinator_frequency <= 10_000, f"coordinator_frequency must be >= 1, got {s.coordinator_frequency}")
    need(0.0 <= s.keep_threshold < 10.0, f"keep_threshold must be in [0, 10), got {s.keep_threshold}")
    need(1 <= s.top_k <= 100, f"top_k must be in [1, 100], got {s.top_k}")
    need(0 <= s.islands <= 100, f"islands must be in [0, 100], got {s.islands}")
    need(bool(s.model.strip()) and len(s.model) <= 128 and not any(c.isspace() for c in s.model),
         f"model must be a model name like {DEFAULT_MODEL!r}, got {s.model!r}")
    need(0.0 <= s.daily_spend_usd <= 100_000.0, f"daily_spend_usd must be in [0, 100000], got {s.daily_spend_usd}")
    need(0 <= s.train_seed < 2**31, f"train_seed must be in [0, 2^31), got {s.train_seed}")
    need(s.proposer in ("", *PROPOSERS), f"proposer must be one of {'|'.join(PROPOSERS)}, got {s.proposer!r}")
    need(0.0 <= s.llm_share <= 1.0, f"llm_share must be in [0, 1], got {s.llm_share}")
    need(s.llm_api in LLM_APIS, f"llm_api must be one of {'|'.join(LLM_APIS)}, got {s.llm_api!r}")
    need(s.edit_format in EDIT_FORMATS, f"edit_format must be one of {'|'.join(EDIT_FORMATS)}, got {s.edit_format!r}")
    need(s.llm_base_url == "" or (len(s.llm_base_url) <= 2048 and s.llm_base_url.startswith(("http://", "https://"))
                                  and not any(c.isspace() for c in s.llm_base_url)),
         f"llm_base_url must be an http(s) URL, got {s.llm_base_url!r}")
