"""What a workflow is to Stepline: a Prefect flow plus its typed input, output and steps.

Building one judges where each of its steps may run (``steps.privacy``): the
analysis is fixed here, before any instance starts, and ``stepline workflows``
and ``stepline validate`` show it per step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prefect import Flow
from pydantic import BaseModel

from steps.declassifiers import Declassifier
from steps.definition import Step
from steps.errors import DefinitionError
from steps.privacy import WorkflowPrivacy, analyse_workflow

__all__ = ["Workflow"]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Workflow:
    """A registered workflow; ``flow`` is a plain Prefect ``@flow`` calling ``run_step``."""

    name: str
    description: str
    flow: Flow[..., Any]
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    steps: tuple[Step[Any, Any], ...]
    declassifiers: tuple[Declassifier, ...] = ()
    """The declassifiers its flow may use (``steps.declassifiers``): text one of them cleared
    reaches a public model only if it is named here."""
    privacy: WorkflowPrivacy = field(init=False, compare=False, repr=False)
    """Where each step may run, judged from types and data flow when the workflow is built."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DefinitionError(f"workflow name {self.name!r} must be lowercase words joined by '-'")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise DefinitionError(f"workflow {self.name!r} lists a step twice: {names}")
        declassifiers = [d.name for d in self.declassifiers]
        if len(set(declassifiers)) != len(declassifiers):
            raise DefinitionError(f"workflow {self.name!r} names a declassifier twice: {declassifiers}")
        object.__setattr__(self, "privacy", analyse_workflow(self.name, self.input_model, self.steps))
