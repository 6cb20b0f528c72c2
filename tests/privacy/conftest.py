"""A runtime on a fresh SQLite file and the privacy catalog (``tests.privacy.common``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.runtime import Runtime
from steps.settings import load_settings
from tests.privacy.common import catalog
from tests.servers import FakeLLMServer, OpenAIServer


@pytest.fixture
def public_server(openai_server: OpenAIServer) -> FakeLLMServer:
    """The public model's server: OpenAI's wire format unless a test module says otherwise."""
    return openai_server


@pytest.fixture
def runtime(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    public_server: FakeLLMServer,
    private_server: OpenAIServer,
) -> Iterator[Runtime]:
    kind = "openai" if isinstance(public_server, OpenAIServer) else "anthropic"
    path = tmp_path / "stepline.toml"
    path.write_text(catalog(kind, public_server.base_url, private_server.base_url))
    monkeypatch.setenv("STEPLINE_CONFIG", str(path))
    monkeypatch.setenv("STEPLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'stepline.db'}")
    monkeypatch.setenv("STEPLINE_TEST_PUBLIC_KEY", "sk-test-public-0123456789")
    with Runtime.open(load_settings()) as opened:
        yield opened
