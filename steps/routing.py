"""Which catalog models serve a step, in what order, and why.

The privacy rule is enforced here, at call time, for every route including
fallbacks: a step its ``StepPrivacy`` keeps private (it renders something that
may be personal, or is declared pii: ``steps.privacy``) is only ever given a
model whose provider is marked private. Every function takes that decision as a
required argument, so no caller can route a step without it. ``check_step``
applies the same rules when a workflow is loaded, so a chain that could cross
the line is rejected before anything runs.

Tier is a preference: when no available model reaches the step's tier, the
most capable eligible one is used and the reason says so (a keyless machine
runs every step on the embedded model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steps.definition import RoutePolicy, Sensitivity, Step
from steps.errors import ConfigError
from steps.privacy import StepPrivacy
from steps.settings import ModelConfig, Settings

__all__ = ["Route", "check_step", "choose_route", "escalation_route", "fallback_chain", "ineligibility"]

_CHARS_PER_TOKEN = 3  # a conservative estimate for the context-size check


@dataclass(frozen=True)
class Route:
    model_id: str
    model: ModelConfig
    reason: str


def worst_case_cost(step: Step[Any, Any], model: ModelConfig, prompt_chars: int) -> float:
    """USD if the prompt is as long as estimated and the answer uses all of max_tokens."""
    return model.cost(prompt_chars // _CHARS_PER_TOKEN, step.effective_sampling.max_tokens or 0)


def ineligibility(
    step: Step[Any, Any],
    model_id: str,
    settings: Settings,
    prompt_chars: int = 0,
    latency: Mapping[str, float] | None = None,
    *,
    privacy: StepPrivacy,
) -> str | None:
    """Why ``model_id`` may not serve ``step`` now, or ``None`` when it may."""
    model = settings.models.get(model_id)
    if model is None:
        return f"{model_id!r} is not in the catalog (known: {sorted(settings.models)})"
    provider = settings.providers[model.provider]
    if privacy.private_only and not provider.private:
        return (
            f"{model_id!r} is on provider {model.provider!r}, which is not private, and step "
            f"{step.name!r} may use private models only ({privacy.private_reason})"
        )
    if not provider.available:
        return f"{model_id!r} needs the environment variable {provider.api_key_env}"
    needed = prompt_chars // _CHARS_PER_TOKEN + (step.effective_sampling.max_tokens or 0)
    if needed > model.context_window:
        return f"{model_id!r} has a context window of {model.context_window} tokens; the step needs ~{needed}"
    if step.max_cost_usd is not None and worst_case_cost(step, model, prompt_chars) > step.max_cost_usd:
        return f"{model_id!r} could cost more than the step's max_cost_usd ({step.max_cost_usd})"
    observed = (latency or {}).get(model_id)
    if step.latency_budget_ms is not None and observed is not None and observed > step.latency_budget_ms:
        return (
            f"{model_id!r} answers in ~{observed:.0f} ms, "
            f"over the step's {step.latency_budget_ms:.0f} ms budget"
        )
    return None


def check_step(step: Step[Any, Any], settings: Settings, *, privacy: StepPrivacy) -> None:
    """Reject, at load time, a pinned model or fallback chain that breaks the catalog or privacy rule."""
    named = [(step.model, "pins")] if step.model else []
    for model_id, role in [*named, *((m, "falls back to") for m in step.fallbacks)]:
        model = settings.models.get(model_id)
        if model is None:
            raise ConfigError(
                f"step {step.name!r} names model {model_id!r}, which is not in the catalog "
                f"(known: {sorted(settings.models)})"
            )
        if privacy.private_only and not settings.is_private(model_id):
            fix = "name a private model there"
            if step.sensitivity is not Sensitivity.PII:
                fix += ", or give the step only fields that cannot carry free text or Declassified text"
            raise ConfigError(
                f"step {step.name!r} may use private models only ({privacy.private_reason}) but "
                f"{role} model {model_id!r} on provider {model.provider!r}, which is not private; {fix}"
            )


def choose_route(
    step: Step[Any, Any],
    settings: Settings,
    prompt_chars: int = 0,
    latency: Mapping[str, float] | None = None,
    *,
    privacy: StepPrivacy,
) -> Route:
    """Pick the first model for ``step``: pinned, else the best eligible one by the step's policy."""
    check_step(step, settings, privacy=privacy)
    private_only = privacy.private_only
    if step.model is not None:
        problem = ineligibility(step, step.model, settings, prompt_chars, latency, privacy=privacy)
        if problem:
            raise ConfigError(f"step {step.name!r} pins a model it cannot use now: {problem}")
        return Route(step.model, settings.models[step.model], f"pinned by step {step.name!r}")

    eligible = [
        (model_id, model)
        for model_id, model in settings.models.items()
        if ineligibility(step, model_id, settings, prompt_chars, latency, privacy=privacy) is None
    ]
    if not eligible:
        need = f"a private provider ({privacy.private_reason})" if private_only else "an available provider"
        limits = " within its cost and latency limits" if step.max_cost_usd or step.latency_budget_ms else ""
        raise ConfigError(
            f"no catalog model can serve step {step.name!r}{limits}: it needs {need}; add one to "
            "the catalog or set the API key variable of an existing one"
        )
    observed = latency or {}

    def rank(item: tuple[str, ModelConfig]) -> tuple[float, float, int]:
        model_id, model = item
        price = model.input_price + model.output_price
        if step.policy is RoutePolicy.FASTEST:
            return (observed.get(model_id, math.inf), price, model.tier.rank)
        return (price, observed.get(model_id, math.inf), model.tier.rank)

    capable = [(i, m) for i, m in eligible if m.tier.rank >= step.tier.rank]
    scope = " private" if private_only else ""
    if capable:
        model_id, model = min(capable, key=rank)
        if step.policy is RoutePolicy.FASTEST:
            seen = observed.get(model_id)
            speed = f"{seen:.0f} ms median" if seen is not None else "no latency observed yet"
            why = f"fastest available{scope} model of tier >= {step.tier.value} ({speed})"
        else:
            why = f"cheapest available{scope} model of tier >= {step.tier.value}"
        return Route(model_id, model, why)
    model_id, model = max(eligible, key=lambda im: im[1].tier.rank)
    return Route(
        model_id,
        model,
        f"no available{scope} model reaches tier {step.tier.value}; "
        f"using the most capable one ({model.tier.value})",
    )


def fallback_chain(
    step: Step[Any, Any],
    settings: Settings,
    first: Route,
    prompt_chars: int = 0,
    latency: Mapping[str, float] | None = None,
    *,
    privacy: StepPrivacy,
) -> list[Route]:
    """The routed model, then each eligible fallback; skipped ones are named in the next reason."""
    chain = [first]
    skipped: list[str] = []
    for model_id in step.fallbacks:
        if model_id == first.model_id:
            continue
        problem = ineligibility(step, model_id, settings, prompt_chars, latency, privacy=privacy)
        if problem:
            skipped.append(problem)
            continue
        note = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        chain.append(
            Route(model_id, settings.models[model_id], f"fallback #{len(chain)} of step {step.name!r}{note}")
        )
        skipped = []
    return chain


def escalation_route(
    step: Step[Any, Any], settings: Settings, after: str, prompt_chars: int = 0, *, privacy: StepPrivacy
) -> Route | None:
    """The cheapest eligible model more capable than ``after``, for one retry of a schema failure."""
    floor = settings.models[after].tier.rank
    better = [
        (model_id, model)
        for model_id, model in settings.models.items()
        if model.tier.rank > floor
        and ineligibility(step, model_id, settings, prompt_chars, privacy=privacy) is None
    ]
    if not better:
        return None
    model_id, model = min(better, key=lambda im: (im[1].tier.rank, im[1].input_price + im[1].output_price))
    return Route(
        model_id, model, f"escalated from {after} ({settings.models[after].tier.value}) after schema failures"
    )
