"""The workflow registry: the shipped workflows load on first need, and their names stay theirs."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from flows.registry import BUILTIN_MODULES, get_workflow, known_workflows, register
from steps.errors import DefinitionError
from tests.flows.pipeline import PIPELINE


def test_every_shipped_workflow_is_known_and_found_by_name() -> None:
    known = known_workflows()
    for name in BUILTIN_MODULES:
        assert known[name] is get_workflow(name)
        assert known[name].name == name


def test_a_team_workflow_cannot_take_a_shipped_workflows_name() -> None:
    with pytest.raises(DefinitionError, match="already registered as 'contract-review'"):
        register(replace(PIPELINE, name="contract-review"))


def test_the_name_is_refused_before_the_shipped_workflow_was_ever_loaded() -> None:
    """The check cannot depend on whether something happened to import the shipped one first."""
    code = (
        "import sys\n"
        "from dataclasses import replace\n"
        "from flows.registry import register\n"
        "from steps.errors import DefinitionError\n"
        "from tests.flows.pipeline import PIPELINE\n"
        "assert 'flows.customer_intake' not in sys.modules\n"
        "try:\n"
        "    register(replace(PIPELINE, name='customer-intake'))\n"
        "except DefinitionError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "refused: a different workflow is already registered as 'customer-intake'" in done.stdout
