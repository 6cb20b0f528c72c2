"""The workflows Stepline ships, by name."""

from __future__ import annotations

import difflib

from flows import contract_review, customer_intake
from flows.workflow import Workflow
from steps.errors import DefinitionError, InputError

__all__ = ["WORKFLOWS", "get_workflow", "register"]

WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (contract_review.WORKFLOW, customer_intake.WORKFLOW)}


def register(workflow: Workflow) -> Workflow:
    """Make ``workflow`` runnable by name (``stepline run``, replays, reviews)."""
    existing = WORKFLOWS.get(workflow.name)
    if existing is not None and existing is not workflow:
        raise DefinitionError(f"a different workflow is already registered as {workflow.name!r}")
    WORKFLOWS[workflow.name] = workflow
    return workflow


def get_workflow(name: str) -> Workflow:
    """The workflow called ``name``, or an error suggesting the closest name."""
    found = WORKFLOWS.get(name)
    if found is not None:
        return found
    close = difflib.get_close_matches(name, WORKFLOWS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InputError(f"unknown workflow {name!r}; {hint}known: {', '.join(sorted(WORKFLOWS))}")
