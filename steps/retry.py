"""How long to wait and how often to retry, per failure class.

One mechanism: tenacity. Instructor's re-asks already run on it, and unlike
Prefect task retries it can wait a different time after each failure, which
honouring a 429's ``retry-after`` needs, and it keeps the retry inside the
step, where each try is recorded as its own attempt.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, field_validator

from steps.errors import FailureClass

__all__ = ["DEFAULT_RETRY", "RetryPolicy"]

_RNG = random.Random()


class RetryPolicy(BaseModel):
    """Retries on the same model; schema failures are Instructor's re-asks instead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retries: dict[FailureClass, int] = Field(
        default_factory=lambda: {
            FailureClass.RATE_LIMITED: 4,
            FailureClass.OVERLOADED: 3,
            FailureClass.UNAVAILABLE: 2,
            FailureClass.TIMEOUT: 2,
            FailureClass.CONNECTION: 2,
        }
    )
    """Retries allowed per failure class after the first try (transient classes only)."""
    base_delay_s: float = Field(default=0.5, ge=0)
    """First backoff; doubles per retry of the same class."""
    max_delay_s: float = Field(default=30.0, ge=0)
    """Cap on the computed backoff (a longer ``retry-after`` is still honoured)."""
    jitter: float = Field(default=0.5, ge=0, le=1)
    """Fraction of the backoff randomised away, so that callers do not retry in step."""
    max_retry_after_s: float = Field(default=120.0, ge=0)
    """A provider asking for a longer wait than this ends the retries on that model."""
    quota_cooldown_s: float = Field(default=3600.0, ge=0)
    """After a quota answer, how long the model is left out for every caller in this process
    (its requests fail as ``quota`` unsent, and steps move on to their fallbacks). Restarting
    the process clears it sooner."""

    @field_validator("retries")
    @classmethod
    def _transient_only(cls, value: dict[FailureClass, int]) -> dict[FailureClass, int]:
        for failure, count in value.items():
            if count < 0:
                raise ValueError(f"retries for {failure.value} must be >= 0")
            if count and failure is FailureClass.SCHEMA_INVALID:
                raise ValueError(
                    f"{failure.value} is not transient; schema failures use the step's max_reasks"
                )
            if count and not failure.behaviour.transient:
                raise ValueError(f"{failure.value} is never retried (it would fail the same way)")
        return value

    def allows(self, failure: FailureClass, retries_so_far: int) -> bool:
        return retries_so_far < self.retries.get(failure, 0)

    def delay(self, retry_number: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based); never less than asked."""
        backoff = min(self.max_delay_s, self.base_delay_s * 2.0 ** (retry_number - 1))
        backoff *= 1 - self.jitter * (rng or _RNG).random()
        return max(backoff, retry_after or 0.0)


DEFAULT_RETRY = RetryPolicy()
