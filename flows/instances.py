"""The life of a workflow instance, one module per part of it: this is their one front door.

    running ──> completed
       ├──> needs_review   a step's output failed validation (or was refused or cut off)
       ├──> paused         retries and fallbacks ran out, what runs it failed, or the
       │                   operator stopped it
       └──> failed         the workflow itself crashed, or a reviewer rejected the output

    needs_review / paused / failed ──replay──> running   (exactly one replay wins)
    needs_review ──approve──> (step completed with the correction) ──replay──> running

- ``flows.running``: run an instance (new or queued) and stop it where a person can act;
- ``flows.replays``: replay from the failed (or a named) step, reusing known outputs;
- ``flows.reviews``: approve a corrected output, or reject it.
"""

from __future__ import annotations

from flows.replays import ReplayRefused, StepReplay, replay, replay_step_failures
from flows.reviews import ReviewError, approve_review, reject_review
from flows.running import RunResult, check_workflow, interrupt, parse_input, run_queued, run_workflow

__all__ = [
    "ReplayRefused",
    "ReviewError",
    "RunResult",
    "StepReplay",
    "approve_review",
    "check_workflow",
    "interrupt",
    "parse_input",
    "reject_review",
    "replay",
    "replay_step_failures",
    "run_queued",
    "run_workflow",
]
