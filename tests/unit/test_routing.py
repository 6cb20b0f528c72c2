"""Routing: pins, tiers, price, and the privacy line that no route may cross."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from steps.definition import EXTRACT, Prompt, Sensitivity, Step, Tier
from steps.errors import ConfigError
from steps.privacy import StepPrivacy
from steps.routing import Route, choose_route
from steps.settings import Settings
from tests.catalogs import use_catalog


class In(BaseModel):
    text: str


class Out(BaseModel):
    value: str


def step(**overrides: object) -> Step[In, Out]:
    fields: dict[str, object] = {
        "name": "s",
        "kind": EXTRACT,
        "prompt": Prompt(system="x", user="$text"),
        "input_model": In,
        "output_model": Out,
    }
    fields.update(overrides)
    return Step(**fields)  # type: ignore[arg-type]


def routed(chosen: Step[In, Out], settings: Settings, **options: object) -> Route:
    """``choose_route`` for a step judged on its own declaration (no workflow around it)."""
    return choose_route(chosen, settings, privacy=StepPrivacy.alone(chosen), **options)  # type: ignore[arg-type]


CATALOG = """
[providers.local]
kind = "embedded"
private = true
[providers.vpc]
kind = "openai_compatible"
base_url = "http://127.0.0.1:9/v1"
private = true
[providers.cloud]
kind = "openai"
api_key_env = "PUBLIC_KEY"
[providers.nokey]
kind = "anthropic"
api_key_env = "UNSET_KEY_FOR_TEST"

[models.tiny]
provider = "local"
model = "t"
tier = "cheap"
structured_mode = "json_schema"
[models.private-big]
provider = "vpc"
model = "b"
tier = "capable"
input_price = 1.0
[models.cloud-small]
provider = "cloud"
model = "s"
tier = "cheap"
input_price = 0.1
[models.cloud-big]
provider = "cloud"
model = "B"
tier = "capable"
input_price = 0.5
[models.unkeyed]
provider = "nokey"
model = "c"
tier = "frontier"
"""


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.delenv("UNSET_KEY_FOR_TEST", raising=False)
    return use_catalog(monkeypatch, tmp_path, CATALOG, PUBLIC_KEY="k")


def test_cheapest_model_meeting_the_tier(settings: Settings) -> None:
    assert routed(step(tier=Tier.CHEAP), settings).model_id == "tiny"
    route = routed(step(tier=Tier.CAPABLE), settings)
    assert route.model_id == "cloud-big"
    assert "tier >= capable" in route.reason


def test_pii_steps_only_reach_private_models(settings: Settings) -> None:
    route = routed(step(tier=Tier.CAPABLE, sensitivity=Sensitivity.PII), settings)
    assert route.model_id == "private-big"
    assert "private" in route.reason


def test_models_without_their_key_are_skipped(settings: Settings) -> None:
    route = routed(step(tier=Tier.FRONTIER), settings)
    assert route.model_id != "unkeyed"
    assert "no available model reaches tier frontier" in route.reason


def test_pinned_public_model_is_refused_for_pii(settings: Settings) -> None:
    with pytest.raises(
        ConfigError,
        match=r"may use private models only \(the step is declared pii\) but pins model 'cloud-small'",
    ):
        routed(step(model="cloud-small", sensitivity=Sensitivity.PII), settings)


def test_pinned_unknown_model_names_the_catalog(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="not in the catalog"):
        routed(step(model="gpt-99"), settings)


def test_pii_with_no_private_model_fails_closed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    public_only = use_catalog(
        monkeypatch,
        tmp_path,
        '[providers.cloud]\nkind = "openai"\napi_key_env = "PUBLIC_KEY"\n'
        '[models.m]\nprovider = "cloud"\nmodel = "m"\n',
        PUBLIC_KEY="k",
    )
    with pytest.raises(ConfigError, match="needs a private provider"):
        routed(step(sensitivity=Sensitivity.PII), public_only)


def test_keyless_default_catalog_routes_everything_to_the_embedded_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from steps.settings import load_settings

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("STEPLINE_CONFIG", raising=False)
    monkeypatch.chdir("/")
    defaults = load_settings()
    for tier in Tier:
        assert routed(step(tier=tier), defaults).model_id == "smollm2"


def test_fastest_policy_uses_observed_latency(settings: Settings) -> None:
    from steps.definition import RoutePolicy

    observed = {"tiny": 900.0, "cloud-small": 120.0}
    route = routed(step(policy=RoutePolicy.FASTEST), settings, latency=observed)
    assert route.model_id == "cloud-small"
    assert "120 ms median" in route.reason
    assert routed(step(), settings, latency=observed).model_id == "tiny"  # cheapest by default


def test_latency_budget_and_cost_cap_exclude_models(settings: Settings) -> None:
    observed = {"tiny": 900.0}
    assert routed(step(latency_budget_ms=500), settings, latency=observed).model_id == "cloud-small"
    capped = step(tier=Tier.CAPABLE, max_cost_usd=0.0001)
    route = routed(capped, settings, prompt_chars=3_000)  # ~1,000 tokens in
    assert route.model_id in {"tiny", "cloud-small"}  # both capable models would cost more
    assert "no available model reaches tier capable" in route.reason


def test_unknown_fallback_model_is_named(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="step 's' names model 'gpt-99', which is not in the catalog"):
        routed(step(fallbacks=("gpt-99",)), settings)
