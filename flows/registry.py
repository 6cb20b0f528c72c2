"""The workflows Stepline can run, by name: the ones it ships and a team's own.

A team's workflows live in their own modules, named in ``workflow_modules``;
each calls ``register`` at import. They are imported on first need, so the
CLI, the TUI and a worker's flow runs all know the same workflows.

The shipped workflows are imported on first need too: each defines its output
models and a Prefect flow (20-25 ms together), which a ``stepline run`` of a
team's workflow would otherwise pay before its first request.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import threading
import traceback

from flows.workflow import Workflow
from steps.errors import ConfigError, DefinitionError, InputError, StepLineError
from steps.settings import load_settings

__all__ = [
    "BUILTIN_MODULES",
    "WORKFLOWS",
    "get_workflow",
    "known_workflows",
    "load_workflow_modules",
    "register",
]

WORKFLOWS: dict[str, Workflow] = {}
"""The workflows imported so far, by name; ``known_workflows`` imports the rest."""

BUILTIN_MODULES = {"contract-review": "flows.contract_review", "customer-intake": "flows.customer_intake"}
"""The shipped workflows' names and the modules defining them (as ``WORKFLOW``)."""

_loaded: set[str] = set()
_lock = threading.Lock()


def register(workflow: Workflow) -> Workflow:
    """Make ``workflow`` runnable by name (``stepline run``, replays, reviews, workers)."""
    existing = _builtin(workflow.name) if workflow.name in BUILTIN_MODULES else WORKFLOWS.get(workflow.name)
    if existing is not None and existing is not workflow:
        raise DefinitionError(f"a different workflow is already registered as {workflow.name!r}")
    WORKFLOWS[workflow.name] = workflow
    return workflow


def _builtin(name: str) -> Workflow:
    """The shipped workflow ``name``, imported (and listed in ``WORKFLOWS``) on first need."""
    found = WORKFLOWS.get(name)
    if found is None:
        module = importlib.import_module(BUILTIN_MODULES[name])
        found = WORKFLOWS[name] = module.WORKFLOW
    return found


def load_workflow_modules(modules: tuple[str, ...] | None = None) -> None:
    """Import the configured workflow modules (each once); a ``ConfigError`` naming a bad one."""
    if modules is None:
        modules = load_settings().workflow_modules
    with _lock:
        for name in modules:
            if name in _loaded:
                continue
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(
                    f"workflow_modules: cannot import {name!r} ({exc}); install it in this "
                    "environment or run from the folder that holds it"
                ) from None
            except StepLineError as exc:  # a step, workflow or declassifier declared wrongly there
                raise ConfigError(
                    f"workflow_modules: {name!r}{_where(name, exc)} declares something wrongly: {exc.message}"
                ) from None
            _loaded.add(name)


def _where(module: str, exc: BaseException) -> str:
    """`` at <file>:<line>``: the module's own line the error came from, when it can be told."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == origin]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def known_workflows() -> dict[str, Workflow]:
    """Every workflow this process can run, the configured modules' included."""
    for name in BUILTIN_MODULES:
        _builtin(name)
    load_workflow_modules()
    return WORKFLOWS


def get_workflow(name: str) -> Workflow:
    """The workflow called ``name``, or an error suggesting the closest name."""
    if name in BUILTIN_MODULES:
        return _builtin(name)
    found = WORKFLOWS.get(name) or known_workflows().get(name)
    if found is not None:
        return found
    close = difflib.get_close_matches(name, WORKFLOWS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InputError(
        f"unknown workflow {name!r}; {hint}known: {', '.join(sorted(WORKFLOWS))} "
        "(a team's own workflows are found through workflow_modules in the Stepline config)"
    )
