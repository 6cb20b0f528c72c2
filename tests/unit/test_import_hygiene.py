"""Dependencies flow one way, and heavy libraries stay off paths that do not need them.

Each import runs in a fresh interpreter so that nothing this test process
already loaded can hide a leak (the pattern harlequin uses for its UI-free core).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SDKS = {"openai", "anthropic", "instructor", "llama_cpp"}


def loaded_after(statement: str) -> set[str]:
    """Every module loaded by ``statement`` in a fresh interpreter, and each one's top-level package."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    return modules | {m.split(".")[0] for m in modules}


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        # The step runtime: no UI, no Prefect, no storage; SDKs load only when a client is built.
        # Of the command line's package it uses only the one error tree (stepline.errors).
        (
            "import steps, steps.runtime, steps.settings, steps.routing, steps.classify, steps.providers",
            {"textual", "tui", "prefect", "storage", "flows", "stepline.cli", *SDKS},
        ),
        # Storage depends on nothing else in Stepline but the one error tree.
        (
            "import storage.db, storage.store, storage.models",
            {"textual", "tui", "prefect", "steps", "flows", "stepline.cli", *SDKS},
        ),
        # Flows never reach the UI.
        ("import flows.engine, flows.registry", {"textual", "tui"}),
        # A run of a team's workflow does not build the shipped ones (flows/registry.py).
        (
            "import flows.instances, flows.registry",
            {"flows.contract_review", "flows.customer_intake", "textual", "tui"},
        ),
        # The TUI starts fast: storage and the UI-free diagnosis, never Prefect or an SDK.
        (
            "import tui.app, tui.screens.instance, tui.screens.attempt",
            {"prefect", "flows", *SDKS},
        ),
        # `stepline tui` paints its first rows before SQLAlchemy, the settings or Prefect load
        # (tests/tui/test_first_paint.py checks the running app at its first paint).
        (
            "import tui.app, tui.start, tui.screens.instances, storage.quick_read, storage.states",
            {"sqlalchemy", "sqlmodel", "alembic", "pydantic_settings", "prefect", "steps", "flows", *SDKS},
        ),
        # What a terminal must not obey is defined once, below everything that prints.
        (
            "import stepline.untrusted",
            {"rich", "textual", "tui", "prefect", "steps", "storage", "flows", "stepline.cli", *SDKS},
        ),
        # The command line starts fast: Prefect and the SDKs load only inside `run`.
        ("import stepline.cli", {"prefect", "textual", *SDKS}),
    ],
)
def test_layering(statement: str, forbidden: set[str]) -> None:
    assert loaded_after(statement) & forbidden == set()
