"""Ralph meta-parameters.  Run: .venv/bin/python -m pytest tests/ralph/test_ralph_settings.py"""
from __future__ import annotations

import pytest

from ralph.settings import DEFAULT_MODEL, RalphSettings, SettingsError


def test_defaults_are_valid_and_documented_names():
    s = RalphSettings()
    assert s.experiment_budget == 1.0 and s.memory_type == "full" and s.model == DEFAULT_MODEL
    assert set(s.to_dict()) >= {"experiment_budget", "memory_type", "memory_depth", "agent_count", "boldness",
                                "exploration", "coordinator_frequency", "keep_threshold", "top_k", "model",
                                "daily_spend_usd"}


def test_default_model_is_a_literal_of_the_installed_sdk():
    import typing

    from anthropic.types.model_param import ModelParam
    literals = typing.get_args(typing.get_args(ModelParam)[0])
    assert DEFAULT_MODEL in literals and "sonnet" in DEFAULT_MODEL


def test_keep_threshold_never_below_task_tolerance():
    s = RalphSettings(keep_threshold=0.001)
    assert s.effective_keep_threshold(0.01) == 0.01
    assert RalphSettings(keep_threshold=0.05).effective_keep_threshold(0.01) == 0.05


def test_config_then_flags_precedence_and_string_coercion():
    s = RalphSettings.from_sources({"boldness": 0.5, "memory_type": "strategy", "top_k": 3},
                                   {"boldness": "0.7", "top_k": None, "experiment_budget": "0.25"})
    assert (s.boldness, s.memory_type, s.top_k, s.experiment_budget) == (0.7, "strategy", 3, 0.25)


@pytest.mark.parametrize("data, fragment", [
    ({"memory_type": "diary"}, "memory_type must be one of full|strategy"),
    ({"experiment_budget": 0}, "experiment_budget must be in (0, 1]"),
    ({"exploration": 1.5}, "exploration must be in [0, 1]"),
    ({"top_k": "many"}, "top_k must be an integer"),
    ({"top_k": 2.5}, "top_k must be an integer"),
    ({"boldnes": 0.3}, "unknown ralph setting 'boldnes'"),
    ({"model": "two words"}, "model must be a model name"),
    ({"daily_spend_usd": -1}, "daily_spend_usd must be in"),
    ({"agent_count": True}, "agent_count must be an integer"),
    ({"proposer": "bayes"}, "proposer must be one of mutate|tpe|cmaes|llm|hybrid"),
    ({"llm_share": 1.5}, "llm_share must be in [0, 1]"),
    ({"llm_api": "router"}, "llm_api must be one of anthropic|openai"),
    ({"edit_format": "patch"}, "edit_format must be one of auto|diff|whole"),
    ({"llm_base_url": "ftp://x"}, "llm_base_url must be an http(s) URL"),
    ({"llm_base_url": "http://a b"}, "llm_base_url must be an http(s) URL"),
    ({"islands": -1}, "islands must be in [0, 100]"),
])
def test_bad_values_raise_one_line_settings_error(data, fragment):
    with pytest.raises(SettingsError) as info:
        RalphSettings.from_dict(data)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_section_must_be_an_object():
    with pytest.raises(SettingsError, match='"ralph" must be an object'):
        RalphSettings.from_dict(["boldness"])
