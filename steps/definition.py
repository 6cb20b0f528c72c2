"""How a workflow author declares an AI step.

A step is data: a prompt, an input model, an output model and routing
hints. Sampling lives here (from the step's kind, optionally overridden),
never in the prompt text, so that the values actually sent are a reviewable
part of the step's configuration and are recorded on every attempt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from string import Template
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from steps.errors import DefinitionError
from steps.retry import RetryPolicy

__all__ = [
    "ASSESS",
    "CLASSIFY",
    "EXTRACT",
    "GENERATE",
    "Prompt",
    "RoutePolicy",
    "Sampling",
    "Sensitivity",
    "Step",
    "StepKind",
    "Tier",
]

InT = TypeVar("InT", bound=BaseModel)
OutT = TypeVar("OutT", bound=BaseModel)

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class Sensitivity(StrEnum):
    """What data a step sees; ``pii`` steps may only reach private models."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PII = "pii"


class Tier(StrEnum):
    """How capable a model a step needs; ordered cheap < capable < frontier."""

    CHEAP = "cheap"
    CAPABLE = "capable"
    FRONTIER = "frontier"

    @property
    def rank(self) -> int:
        return _TIER_RANK[self]


_TIER_RANK = {Tier.CHEAP: 0, Tier.CAPABLE: 1, Tier.FRONTIER: 2}


class RoutePolicy(StrEnum):
    """How the router picks among eligible models (pin ``model`` for an explicit choice)."""

    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    """Lowest median latency observed in persisted attempts (unobserved models last)."""


class Sampling(BaseModel):
    """Sampling parameters sent with a request; ``None`` means "use the kind's default"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Randomness of token choice; near 0 for extraction and classification."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling mass; 1.0 disables it."""
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    """Upper bound on the answer's length; a hit is a ``truncated`` failure."""
    seed: int | None = None
    """Seed for providers that support reproducible sampling."""

    def over(self, base: Sampling) -> Sampling:
        """These values where set, ``base``'s elsewhere."""
        merged = base.model_dump()
        merged.update(self.model_dump(exclude_none=True))
        return Sampling(**merged)


@dataclass(frozen=True)
class StepKind:
    """A family of steps sharing sampling defaults; create your own for new families."""

    name: str
    defaults: Sampling
    registry: ClassVar[dict[str, StepKind]] = {}

    def __post_init__(self) -> None:
        if self.defaults.temperature is None or self.defaults.top_p is None:
            raise DefinitionError(f"step kind {self.name!r}: defaults must set temperature and top_p")
        StepKind.registry[self.name] = self


EXTRACT = StepKind("extract", Sampling(temperature=0.0, top_p=1.0, max_tokens=1024))
CLASSIFY = StepKind("classify", Sampling(temperature=0.0, top_p=1.0, max_tokens=256))
ASSESS = StepKind("assess", Sampling(temperature=0.1, top_p=1.0, max_tokens=512))
GENERATE = StepKind("generate", Sampling(temperature=0.4, top_p=0.9, max_tokens=1024))


@dataclass(frozen=True)
class Prompt:
    """A system message and a user-message template with ``$field`` placeholders.

    Rendering is one pass of ``string.Template`` substitution: input values
    are inserted as text and never parsed as template syntax or evaluated,
    so an input containing ``$x`` or ``{{ x }}`` arrives verbatim.
    """

    system: str
    user: str

    @cached_property  # the text never changes: parsed once, not on every step run
    def placeholders(self) -> frozenset[str]:
        template = Template(self.user)
        if not template.is_valid():
            raise DefinitionError(
                f"prompt template has a malformed placeholder: {self.user[:80]!r}; "
                "use $name or ${name}, and $$ for a literal dollar sign"
            )
        return frozenset(template.get_identifiers())

    @cached_property
    def content_hash(self) -> str:
        """Identity of this prompt's text: a new hash means a new PromptVersion."""
        canonical = json.dumps([self.system, self.user], ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def render(self, inputs: BaseModel) -> list[dict[str, str]]:
        """Chat messages for ``inputs``; non-string fields are inserted as JSON."""
        return self.messages(self.values(inputs))

    def values(self, inputs: BaseModel) -> dict[str, str]:
        """Each placeholder's text for ``inputs``, as it is inserted."""
        values: dict[str, str] = {}
        dumped = inputs.model_dump(mode="json")
        for name in self.placeholders:
            value = dumped[name]
            values[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return values

    def messages(self, values: dict[str, str]) -> list[dict[str, str]]:
        """The system message and the user message with ``values`` inserted."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": Template(self.user).substitute(values)},
        ]


@dataclass(frozen=True)
class Step(Generic[InT, OutT]):
    """One typed LLM call: ``input_model`` in, validated ``output_model`` out."""

    name: str
    kind: StepKind
    prompt: Prompt
    input_model: type[InT]
    output_model: type[OutT]
    sensitivity: Sensitivity = Sensitivity.INTERNAL
    tier: Tier = Tier.CHEAP
    sampling: Sampling = field(default_factory=Sampling)
    max_reasks: int = 2
    """How many times Instructor re-asks after a schema failure (each is an attempt)."""
    model: str | None = None
    """Pin a catalog model id; ``None`` lets the router choose."""
    fallbacks: tuple[str, ...] = ()
    """Catalog model ids tried in order when a model's transient retries run out."""
    fallback_on_refusal: bool = False
    """Let a refusal move to the next model; off, so a refusal is never laundered."""
    policy: RoutePolicy = RoutePolicy.CHEAPEST
    """How to choose among eligible models when ``model`` is not pinned."""
    latency_budget_ms: float | None = None
    """Skip models whose observed median latency exceeds this."""
    max_cost_usd: float | None = None
    """Skip models whose worst-case cost for this call (prompt + max_tokens) exceeds this."""
    escalate_on_schema_failure: bool = False
    """After re-asks fail, try once more on a more capable eligible model before review."""
    retry: RetryPolicy | None = None
    """Retry policy for transient failures; ``None`` uses the catalog's ``[retry]``."""
    consistency_threshold: float = 0.9
    """The share of samples that must agree on each field for ``stepline consistency`` to call
    the step consistent (0 < x <= 1): the same input classified one way 80% of the time and
    another 20% is inconsistent at 0.9."""

    def __post_init__(self) -> None:
        where = f"step {self.name!r}"
        if not _NAME.match(self.name):
            raise DefinitionError(f"{where}: name must be lowercase letters, digits, '-' or '_' (max 63)")
        for label, model in (("input_model", self.input_model), ("output_model", self.output_model)):
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise DefinitionError(f"{where}: {label} must be a pydantic BaseModel class")
        missing = self.prompt.placeholders - set(self.input_model.model_fields)
        if missing:
            raise DefinitionError(
                f"{where}: prompt uses {sorted(missing)} but {self.input_model.__name__} "
                f"has only {sorted(self.input_model.model_fields)}"
            )
        if self.max_reasks < 0:
            raise DefinitionError(f"{where}: max_reasks must be >= 0")
        if len(set(self.fallbacks)) != len(self.fallbacks) or self.model in self.fallbacks:
            raise DefinitionError(f"{where}: a model appears twice in its fallback chain")
        if not 0.0 < self.consistency_threshold <= 1.0:
            raise DefinitionError(
                f"{where}: consistency_threshold must be above 0 and at most 1, "
                f"got {self.consistency_threshold!r}"
            )

    @property
    def effective_sampling(self) -> Sampling:
        """The kind's defaults with this step's overrides applied."""
        return self.sampling.over(self.kind.defaults)

    def output_schema(self) -> dict[str, Any]:
        """The output model's JSON schema, built once per model class (about 0.7 ms each time).

        Shared: callers read it and must not change it.
        """
        return _output_schema(self.output_model)


@functools.cache
def _output_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()
