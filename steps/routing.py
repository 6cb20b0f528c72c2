"""Which catalog model serves a step, and why.

The privacy rule is enforced here, at call time, for every route: a ``pii``
step is only ever given a model whose provider is marked private. Tier is a
preference: when no available model reaches the step's tier, the most capable
eligible one is used and the reason says so (a keyless machine runs every
step on the embedded model).
"""

from __future__ import annotations

from dataclasses import dataclass

from steps.definition import Sensitivity, Step
from steps.errors import ConfigError
from steps.settings import ModelConfig, Settings

__all__ = ["Route", "choose_route"]


@dataclass(frozen=True)
class Route:
    model_id: str
    model: ModelConfig
    reason: str


def choose_route(step: Step, settings: Settings) -> Route:  # type: ignore[type-arg]
    """Pick the model for ``step`` (pinned, else cheapest eligible of sufficient tier)."""
    private_only = step.sensitivity is Sensitivity.PII
    if step.model is not None:
        model = settings.models.get(step.model)
        if model is None:
            raise ConfigError(
                f"step {step.name!r} pins model {step.model!r}, which is not in the catalog "
                f"(known: {sorted(settings.models)})"
            )
        provider = settings.providers[model.provider]
        if private_only and not provider.private:
            raise ConfigError(
                f"step {step.name!r} is pii but pins model {step.model!r} on provider "
                f"{model.provider!r}, which is not private; pin a private model"
            )
        return Route(step.model, model, f"pinned by step {step.name!r}")

    eligible = [
        (model_id, model)
        for model_id, model in settings.models.items()
        if settings.providers[model.provider].available
        and (settings.providers[model.provider].private or not private_only)
    ]
    if not eligible:
        need = "a private provider" if private_only else "an available provider"
        raise ConfigError(
            f"no catalog model can serve step {step.name!r}: it needs {need}; add one to "
            "the catalog or set the API key variable of an existing one"
        )
    capable = [(i, m) for i, m in eligible if m.tier.rank >= step.tier.rank]
    scope = " private" if private_only else ""
    if capable:
        model_id, model = min(
            capable, key=lambda im: (im[1].input_price + im[1].output_price, im[1].tier.rank)
        )
        return Route(model_id, model, f"cheapest available{scope} model of tier >= {step.tier.value}")
    model_id, model = max(eligible, key=lambda im: im[1].tier.rank)
    return Route(
        model_id,
        model,
        f"no available{scope} model reaches tier {step.tier.value}; "
        f"using the most capable one ({model.tier.value})",
    )
