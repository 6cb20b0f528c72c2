"""Write a catalog TOML file and point STEPLINE_CONFIG at it, as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.settings import Settings, load_settings


def use_catalog(monkeypatch: pytest.MonkeyPatch, folder: Path, text: str, **env: str) -> Settings:
    path = folder / "stepline.toml"
    path.write_text(text)
    monkeypatch.setenv("STEPLINE_CONFIG", str(path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()
