"""The states stored as plain strings: instances, step runs, review items.

Apart from ``storage.models`` so that a reader that needs only the names (the TUI's first
screen, before SQLAlchemy is loaded) can have them; ``storage.models`` exports them too.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["REPLAYABLE", "InstanceStatus", "ReviewStatus", "StepRunStatus"]


class InstanceStatus(StrEnum):
    QUEUED = "queued"
    """Submitted to a work pool (``stepline submit``) and not started yet: written before any
    flow run exists, so an input never lives only in a flow run's parameters."""
    RUNNING = "running"
    COMPLETED = "completed"
    NEEDS_REVIEW = "needs_review"
    """A step's output failed validation (or was refused/truncated): a human decides."""
    PAUSED = "paused"
    """Retries and fallbacks ran out (or the provider refused our credentials, or an operator
    stopped the run): replay later."""
    FAILED = "failed"
    """The workflow itself crashed, or a reviewer rejected the output."""


REPLAYABLE = frozenset({InstanceStatus.PAUSED, InstanceStatus.NEEDS_REVIEW, InstanceStatus.FAILED})


class StepRunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    """A completed run that a later replay chose to redo (``--from``)."""


class ReviewStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    """Closed by a replay started before anyone decided."""
