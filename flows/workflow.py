"""What a workflow is to Stepline: a Prefect flow plus its typed input, output and steps."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prefect import Flow
from pydantic import BaseModel

from steps.definition import Step
from steps.errors import DefinitionError

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

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DefinitionError(f"workflow name {self.name!r} must be lowercase words joined by '-'")
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise DefinitionError(f"workflow {self.name!r} lists a step twice: {names}")
