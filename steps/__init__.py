"""Typed AI steps: definitions, catalog settings, routing, providers and the runtime.

This package never imports Prefect, the storage layer or the TUI: it calls a
model through Instructor and reports attempts to an ``AttemptSink``.
"""

from steps.declassifiers import Placeholders, declassifier
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
from steps.privacy import Code, Declassified, Personal

__all__ = [
    "ASSESS",
    "CLASSIFY",
    "EXTRACT",
    "GENERATE",
    "Code",
    "Declassified",
    "FailureClass",
    "Personal",
    "Placeholders",
    "Prompt",
    "Sampling",
    "Sensitivity",
    "Step",
    "StepFailed",
    "StepKind",
    "Tier",
    "declassifier",
]
