"""Shared fixtures: one Prefect test harness per session, loopback provider servers, runtimes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tests.servers import AnthropicServer, OpenAIServer

TEST_KEYS = {
    "STEPLINE_TEST_OPENAI_KEY": "sk-test-openai-0123456789",
    "STEPLINE_TEST_ANTHROPIC_KEY": "sk-ant-test-0123456789",
}


_FIGURES: list[str] = []


@pytest.fixture
def report() -> Callable[[str], None]:
    """Print a line in the run's closing summary (the reliability suite's counts), even under capture."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("Stepline reliability figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """An ephemeral Prefect API for the whole session (it costs ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def private_server() -> Iterator[OpenAIServer]:
    """An OpenAI-compatible server standing for a private deployment (vLLM, Ollama...)."""
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


def loopback_catalog(openai_url: str, anthropic_url: str, private_url: str) -> str:
    """A catalog with one model per provider kind, the API ones on the loopback servers."""
    return f"""
[retry]
base_delay_s = 0.01
max_delay_s = 0.05
max_retry_after_s = 5.0

[providers.openai]
kind = "openai"
base_url = "{openai_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 2.0

[providers.flaky]
kind = "openai"
base_url = "{openai_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 0.5

[providers.compat]
kind = "openai_compatible"
base_url = "{private_url}"
private = true
timeout_s = 2.0

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic_url}"
api_key_env = "STEPLINE_TEST_ANTHROPIC_KEY"
timeout_s = 2.0

[providers.local]
kind = "embedded"
private = true

[models.gpt-test]
provider = "openai"
model = "gpt-4o-mini"
tier = "cheap"
structured_mode = "tools"
input_price = 0.15
output_price = 0.60

[models.gpt-schema]
provider = "openai"
model = "gpt-4o-mini"
tier = "cheap"
structured_mode = "json_schema"
input_price = 0.15
output_price = 0.60

[models.gpt-limited]
provider = "openai"
model = "gpt-limited"
tier = "cheap"
structured_mode = "tools"
rpm = 600
max_concurrency = 2

[providers.patient]
kind = "openai"
base_url = "{openai_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 30.0

[models.gpt-limited-patient]
provider = "patient"
model = "gpt-limited"
tier = "cheap"
structured_mode = "tools"
rpm = 600
max_concurrency = 2

[models.gpt-flaky]
provider = "flaky"
model = "gpt-flaky"
tier = "cheap"
structured_mode = "tools"

[models.compat-test]
provider = "compat"
model = "qwen2.5"
tier = "cheap"
structured_mode = "tools"

[models.compat-big]
provider = "compat"
model = "qwen2.5-72b"
tier = "capable"
structured_mode = "tools"
input_price = 0.5

[models.claude-test]
provider = "anthropic"
model = "claude-test"
tier = "capable"
structured_mode = "tools"
input_price = 3.0
output_price = 15.0

[models.claude-schema]
provider = "anthropic"
model = "claude-test"
tier = "capable"
structured_mode = "json_schema"
input_price = 3.0
output_price = 15.0

[models.smollm2]
provider = "local"
model = "SmolLM2-135M-Instruct"
tier = "cheap"
structured_mode = "json_schema"
context_window = 4096
"""


@pytest.fixture
def make_runtime(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    private_server: OpenAIServer,
) -> Iterator[Callable[..., object]]:
    """Build a Runtime on a fresh SQLite file and the loopback catalog, as `stepline` would."""
    from flows.runtime import Runtime
    from steps.settings import load_settings

    def make(database_url: str | None = None, notify_urls: tuple[str, ...] = ()) -> Runtime:
        catalog = tmp_path / "stepline.toml"
        text = loopback_catalog(openai_server.base_url, anthropic_server.base_url, private_server.base_url)
        if notify_urls:
            text += "\n[notify]\nurls = [" + ", ".join(f'"{url}"' for url in notify_urls) + "]\n"
        catalog.write_text(text)
        monkeypatch.setenv("STEPLINE_CONFIG", str(catalog))
        monkeypatch.setenv("STEPLINE_DATABASE_URL", database_url or f"sqlite:///{tmp_path / 'stepline.db'}")
        for name, value in TEST_KEYS.items():
            monkeypatch.setenv(name, value)
        runtime = Runtime.open(load_settings())
        opened.append(runtime)
        return runtime

    opened: list[Runtime] = []
    yield make
    for runtime in opened:
        runtime.close()
