"""`stepline probe`: which structured modes a model serves, through the real SDKs over HTTP.

Against the loopback OpenAI and Anthropic servers (json_schema and tools work), a server that
answers json_schema with HTTP 500 as llama.cpp's does, and llama.cpp's own server running the
embedded SmolLM2 GGUF. Every case runs the real `stepline` in a subprocess; no Prefect is needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from steps.settings import default_gguf_path
from tests.cli.conftest import ROOT, Cli, no_traceback
from tests.servers import AnthropicServer, OpenAIServer, Reply, error

LLAMA_500 = "1 validation error: Input should be 'text' or 'json_object'"


def rejects_json_schema(server: OpenAIServer) -> None:
    """Answer `response_format` json_schema as llama.cpp's server does: HTTP 500."""

    def reply(body: dict[str, Any]) -> Reply:
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            return error(500, message=LLAMA_500, body_type="internal_server_error")
        return server.auto_reply(body)

    server.default = reply


def catalog(openai_url: str, anthropic_url: str, strict_url: str) -> str:
    return f"""# the team's catalog: comments and order survive --write
[providers.cloud]
kind = "openai"
base_url = "{openai_url}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 5.0

[providers.claude]
kind = "anthropic"
base_url = "{anthropic_url}"
api_key_env = "STEPLINE_TEST_ANTHROPIC_KEY"
timeout_s = 5.0

[providers.llama]
kind = "openai_compatible"
base_url = "{strict_url}"
private = true
timeout_s = 5.0

[providers.nowhere]
kind = "openai_compatible"
base_url = "http://127.0.0.1:9/v1"   # nothing listens on the discard port
private = true

[models.gpt]
provider = "cloud"
model = "gpt-small"
tier = "cheap"

[models.sonnet]
provider = "claude"
model = "claude-test"
tier = "capable"
structured_mode = "tools"

[models.local]
provider = "llama"
model = "smollm2"
structured_mode = "json_schema"   # what the team believed
tier = "cheap"

[models.gone]
provider = "nowhere"
model = "x"
"""


@pytest.fixture
def probe_cli(tmp_path: Path) -> Iterator[tuple[Cli, OpenAIServer, AnthropicServer, OpenAIServer]]:
    with OpenAIServer() as cloud, AnthropicServer() as claude, OpenAIServer() as strict:
        rejects_json_schema(strict)
        (tmp_path / "stepline.toml").write_text(catalog(cloud.base_url, claude.base_url, strict.base_url))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STEPLINE_", "PREFECT_"))}
        env.update(
            STEPLINE_TEST_OPENAI_KEY="sk-test-cli-0123456789",
            STEPLINE_TEST_ANTHROPIC_KEY="sk-ant-test-0123456789",
            STEPLINE_HOME=str(tmp_path / "home"),
            PYTHONPATH=str(ROOT),
        )
        yield Cli(tmp_path, env), cloud, claude, strict


def modes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["mode"]: row for row in report["modes"]}


def test_json_schema_and_tools_work_on_both_wire_formats(
    probe_cli: tuple[Cli, OpenAIServer, AnthropicServer, OpenAIServer],
) -> None:
    cli, cloud, claude, _ = probe_cli
    for model, server in (("gpt", cloud), ("sonnet", claude)):
        result = cli("probe", model, "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        found = modes(report)
        assert found["json_schema"]["outcome"] == "works"
        assert found["tools"]["outcome"] == "works"
        assert found["json_schema"]["latency_ms"] > 0
        assert report["recommended"] == "json_schema"
        assert report["written"] is False
        bodies = [request.body for request in server.requests]
        assert len(bodies) == 3  # one request per mode, no retries or re-asks
        assert all(body["max_tokens"] == 64 for body in bodies)
        constrained = bodies[0]
        if model == "gpt":
            assert constrained["response_format"]["type"] == "json_schema"
        else:
            assert constrained["output_config"]["format"]["type"] == "json_schema"
        assert "tools" not in constrained
        assert "tools" in bodies[1]

    table = cli("probe", "sonnet")
    assert table.returncode == 0, table.stderr
    assert "recommended: json_schema (configured: tools)" in table.stdout
    assert "stepline probe sonnet --write" in table.stderr


def test_a_server_that_rejects_json_schema_gets_tools_written_and_validate_stops_warning(
    probe_cli: tuple[Cli, OpenAIServer, AnthropicServer, OpenAIServer],
) -> None:
    cli, _, _, strict = probe_cli
    before = cli("validate")
    no_traceback(before)
    for model in ("gpt", "sonnet", "local", "gone"):
        assert f"model {model} has never been probed" in before.stderr

    result = cli("probe", "local", "--json", "--write")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    found = modes(report)
    assert found["json_schema"]["outcome"] == "error"
    assert found["json_schema"]["failure"] == "unavailable"
    assert found["json_schema"]["message"] == LLAMA_500  # the provider's own words
    assert found["tools"]["outcome"] == "works"
    assert report["recommended"] == "tools"
    assert report["written"] is True
    assert len(strict.requests) == 3  # the 500 was not retried

    text = (cli.folder / "stepline.toml").read_text()
    assert 'structured_mode = "tools"   # what the team believed' in text
    assert text.startswith("# the team's catalog: comments and order survive --write\n")
    assert "# nothing listens on the discard port" in text

    after = cli("validate")
    assert "model local has never been probed" not in after.stderr
    assert "model local:" not in after.stderr
    assert "model gpt has never been probed" in after.stderr
    log = json.loads((cli.folder / "home" / "probes.json").read_text())
    assert log["models"]["local"]["recommended"] == "tools"

    # The catalog changed back by hand: validate says the configured mode failed when probed.
    (cli.folder / "stepline.toml").write_text(text.replace('"tools"   # what', '"json_schema"   # what'))
    stale = cli("validate")
    assert "model local: structured_mode json_schema did not work when probed" in stale.stderr
    assert "stepline probe local --write" in stale.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("probe", "gtp"), "no model 'gtp' in the catalog; did you mean 'gpt'?"),
        (("probe", "gone"), "cannot probe gone at http://127.0.0.1:9/v1: connection"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    probe_cli: tuple[Cli, OpenAIServer, AnthropicServer, OpenAIServer], args: tuple[str, ...], says: str
) -> None:
    cli = probe_cli[0]
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    no_traceback(result)
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (cli.folder / "home" / "probes.json").exists()


def test_write_refuses_the_built_in_catalog(
    probe_cli: tuple[Cli, OpenAIServer, AnthropicServer, OpenAIServer],
) -> None:
    cli = probe_cli[0]
    (cli.folder / "stepline.toml").unlink()  # the built-in catalog: the embedded model only
    result = cli("probe", "smollm2", "--write")
    assert result.returncode == 2, result.stderr
    no_traceback(result)
    assert "the built-in catalog is in use" in result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server on the embedded SmolLM2 GGUF (extra `[server]`)."""
    port = free_port()
    log = (tmp_path / "llama-server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(default_gguf_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",  # the machine is shared; SmolLM2 answers a probe in well under a second anyway
            "--verbose",
            "False",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "llama-server.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "llama.cpp's server did not start within 60 s"
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.embedded
def test_llama_cpp_server_fails_json_schema_and_serves_tools(
    probe_cli: tuple[Cli, OpenAIServer, AnthropicServer, OpenAIServer], llama_server: str
) -> None:
    cli = probe_cli[0]
    path = cli.folder / "stepline.toml"
    # A real model on a shared machine: give it time (SmolLM2 on one thread answers a probe in ~1 s
    # when the machine is quiet, and took over 5 s while both cores were compiling).
    text = path.read_text().replace(probe_cli[3].base_url, llama_server)
    path.write_text(
        text.replace(
            f'base_url = "{llama_server}"\nprivate = true\ntimeout_s = 5.0',
            f'base_url = "{llama_server}"\nprivate = true\ntimeout_s = 120.0',
        )
    )
    assert "timeout_s = 120.0" in path.read_text()

    result = cli("probe", "local", "--json", "--write")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    found = modes(report)
    assert found["json_schema"]["outcome"] == "error", report
    assert found["json_schema"]["failure"] == "unavailable"  # HTTP 500
    assert "json_object" in found["json_schema"]["message"]
    assert found["tools"]["outcome"] == "works", report
    assert report["recommended"] == "tools"
    assert 'structured_mode = "tools"' in path.read_text()
