"""Every key of every screen has an id and a tooltip, and the README's key table lists it."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

MODULES = [
    "tui.app",
    "tui.screens.instances",
    "tui.screens.instance",
    "tui.screens.attempt",
    "tui.screens.reviews",
    "tui.screens.prompts",
    "tui.screens.replays",
    "tui.screens.notifications",
    "tui.screens.confirm",
    "tui.screens.error",
]
SHOWN = {"question_mark": "?", "slash": "/", "left_square_bracket": "[", "right_square_bracket": "]"}


def bindings() -> list[tuple[str, Binding]]:
    found: list[tuple[str, Binding]] = []
    for name in MODULES:
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == name and issubclass(cls, (Screen, App)):
                for binding in cls.__dict__.get("BINDINGS", []):
                    assert isinstance(binding, Binding), f"{cls.__name__}: {binding!r} is not a Binding"
                    found.append((cls.__name__, binding))
    return found


@pytest.mark.parametrize(("screen", "binding"), bindings(), ids=lambda v: getattr(v, "key", v))
def test_every_binding_has_an_id_and_a_tooltip(screen: str, binding: Binding) -> None:
    assert binding.id, f"{screen}: {binding.key} has no id"
    assert binding.tooltip, f"{screen}: {binding.key} has no tooltip"


def test_the_readme_lists_every_key() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## The operator TUI", 1)[1].split("\n## ", 1)[0]
    table = section.split("### Keys", 1)[1]
    listed = set(re.findall(r"`([^`]+)`", table))
    missing = [
        f"{screen}: {key}"
        for screen, binding in bindings()
        for key in binding.key.split(",")
        if SHOWN.get(key, key) not in listed
    ]
    assert not missing, f"keys not in the README's key table: {missing}"
