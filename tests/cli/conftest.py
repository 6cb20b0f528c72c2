"""The `stepline` command as a user runs it: a subprocess in a fresh folder, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.databases import sqlite_rows
from tests.servers import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "contracts" / "mutual-nda.json"


@dataclass
class Cli:
    folder: Path
    env: dict[str, str]

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stepline", *args],
            cwd=self.folder,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    @property
    def database(self) -> Path:
        return self.folder / "stepline.db"

    def instance_count(self) -> int:
        if not self.database.exists():
            return 0
        return int(sqlite_rows(self.database, "select count(*) from workflow_instance")[0][0])


@pytest.fixture
def cli(tmp_path: Path, openai_server: OpenAIServer, prefect_harness: None) -> Cli:
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "stepline.toml").write_text(
        f"""
[providers.cloud]
kind = "openai"
base_url = "{openai_server.base_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 5.0

[models.small]
provider = "cloud"
model = "gpt-small"
tier = "cheap"
input_price = 0.1
output_price = 0.4

[models.big]
provider = "cloud"
model = "gpt-big"
tier = "capable"
input_price = 2.0
output_price = 8.0
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
    env.update(
        STEPLINE_TEST_OPENAI_KEY="sk-test-cli-0123456789",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return Cli(tmp_path, env)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
