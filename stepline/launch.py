"""The ``stepline`` console script: ``stepline tui`` starts without typer, the rest through it.

Typer and click cost 30-40 ms to import and typer's parsing builds every command's parameters
(through pydantic) before any command runs, about 0.2 s in all; the TUI's first paint is timed
against a bare Textual app (``bench/tui_first_paint.py``), so its start path skips them.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    if sys.argv[1:] == ["tui"]:
        from tui.start import run

        sys.exit(run())
    from stepline.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
