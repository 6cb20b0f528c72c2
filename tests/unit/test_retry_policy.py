"""The retry policy: capped exponential backoff with jitter, never shorter than retry-after."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from steps.errors import FailureClass
from steps.retry import DEFAULT_RETRY, RetryPolicy


def test_backoff_doubles_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(n, None, rng) for n in range(1, 7)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(5.0, 2 ** (n - 1))
        assert ceiling * 0.5 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jitter: callers do not retry in lockstep


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=1.0)
    assert policy.delay(1, 7.5) == 7.5
    assert policy.delay(1, 0.01) >= 0.05


def test_defaults_retry_only_transient_classes() -> None:
    assert DEFAULT_RETRY.allows(FailureClass.RATE_LIMITED, 0)
    for failure in (
        FailureClass.AUTH,
        FailureClass.BAD_REQUEST,
        FailureClass.REFUSED,
        FailureClass.SCHEMA_INVALID,
    ):
        assert not DEFAULT_RETRY.allows(failure, 0)


@pytest.mark.parametrize(
    ("retries", "message"),
    [
        ({"auth": 2}, "auth is never retried"),
        ({"schema_invalid": 1}, "schema failures use the step's max_reasks"),
        ({"rate_limitd": 1}, "rate_limitd"),
        ({"timeout": -1}, "must be >= 0"),
    ],
)
def test_bad_policies_are_refused(retries: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RetryPolicy.model_validate({"retries": retries})
