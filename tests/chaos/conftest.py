"""The chaos suite drives `stepline` as a user would: the same `cli` fixture as tests/cli."""

from tests.cli.conftest import cli

__all__ = ["cli"]
