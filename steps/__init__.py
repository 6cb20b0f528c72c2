"""Typed AI steps: definitions, catalog settings, routing, providers and the runtime.

This package never imports Prefect, the storage layer or the TUI: it calls a
model through Instructor and reports attempts to an ``AttemptSink``.
"""

from steps.definition import (
    ASSESS,
    CLASSIFY,
    EXTRACT,
    GENERATE,
    Prompt,
    Sampling,
    Sensitivity,
    Step,
    StepKind,
    Tier,
)
from steps.errors import FailureClass, StepFailed

__all__ = [
    "ASSESS",
    "CLASSIFY",
    "EXTRACT",
    "GENERATE",
    "FailureClass",
    "Prompt",
    "Sampling",
    "Sensitivity",
    "Step",
    "StepFailed",
    "StepKind",
    "Tier",
]
