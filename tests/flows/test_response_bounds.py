"""Every provider response is bounded: in time, in size as read, in size as stored.

A hostile or broken peer is played by the loopback servers at the wire: a response trickled a
byte at a time (headers included), a gzip body inflating to 1 GiB, a 30 MB answer. The real SDKs
read them through Stepline's bounds (``steps.providers.bounds``); memory is measured in a process
of its own against the same call with a normal answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.instances import run_workflow
from flows.runtime import Runtime
from steps.errors import FailureClass
from steps.settings import load_settings
from storage.models import InstanceStatus
from tests.conftest import TEST_KEYS, loopback_catalog
from tests.flows.helpers import INPUT, VALID, invoice_workflow
from tests.servers import AnthropicServer, OpenAIServer, gzip_bomb, ok, trickle

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024

BOUNDED = """
max_stored_bytes = 65536

[providers.bounded]
kind = "openai"
base_url = "{openai}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 1.0
deadline_s = 3.0

[providers.bounded-anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key_env = "STEPLINE_TEST_ANTHROPIC_KEY"
timeout_s = 1.0
deadline_s = 3.0

[providers.roomy]
kind = "openai"
base_url = "{openai}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"
timeout_s = 10.0
max_response_bytes = 67108864

[models.gpt-bounded]
provider = "bounded"
model = "gpt-4o-mini"
tier = "cheap"

[models.claude-bounded]
provider = "bounded-anthropic"
model = "claude-test"
tier = "capable"

[models.gpt-roomy]
provider = "roomy"
model = "gpt-4o-mini"
tier = "cheap"
"""


@pytest.fixture
def catalog(tmp_path: Path, openai_server: OpenAIServer, anthropic_server: AnthropicServer) -> Path:
    """The loopback catalog plus providers with tight bounds; the top-level key goes first."""
    path = tmp_path / "stepline.toml"
    loopback = loopback_catalog(openai_server.base_url, anthropic_server.base_url, "http://127.0.0.1:9")
    head, _, providers = BOUNDED.partition("\n\n")
    path.write_text(
        head
        + "\n"
        + loopback
        + providers.format(openai=openai_server.base_url, anthropic=anthropic_server.base_url)
    )
    return path


@pytest.fixture
def runtime(catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("STEPLINE_CONFIG", str(catalog))
    monkeypatch.setenv("STEPLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'stepline.db'}")
    for name, value in TEST_KEYS.items():
        monkeypatch.setenv(name, value)
    opened = Runtime.open(load_settings())
    yield opened
    opened.close()


def _run(runtime: Runtime, model: str) -> tuple[object, float]:
    started = time.monotonic()
    result = run_workflow(invoice_workflow(model, max_reasks=0), INPUT, runtime)
    return result, time.monotonic() - started


@pytest.mark.parametrize("model", ["gpt-bounded", "claude-bounded"])
def test_a_trickling_provider_is_cut_at_the_deadline(
    runtime: Runtime,
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    model: str,
) -> None:
    """A byte every 0.2 s never trips the 1 s read timeout; the 3 s deadline still ends it."""
    server = openai_server if model.startswith("gpt") else anthropic_server
    server.default = trickle(0.2, then=ok(VALID))

    result, elapsed = _run(runtime, model)

    assert result.status is InstanceStatus.PAUSED  # type: ignore[attr-defined]
    assert result.failure_class == FailureClass.DEADLINE.value  # type: ignore[attr-defined]
    assert elapsed < 30, f"the run took {elapsed:.1f} s"
    detail = runtime.store.instance_detail(result.instance_id)  # type: ignore[attr-defined]
    assert detail is not None
    assert [a.failure_class for a in detail.attempts] == ["deadline"]  # not retried on this model
    latency = (detail.attempts[0].latency_ms or 0) / 1000
    print(f"{model}: a trickling answer cut at {latency:.2f} s for a 3 s deadline")
    assert 2.9 <= latency <= 3.6, f"the request lasted {latency:.2f} s for a 3 s deadline"
    assert "at the deadline (deadline_s = 3 s)" in (detail.attempts[0].error_message or "")
    assert len(server.requests) == 1


def test_a_gzip_bomb_stops_at_max_response_bytes(runtime: Runtime, openai_server: OpenAIServer) -> None:
    """A 1 MB body inflating to 1 GiB: reading stops past the default 8 MiB, in well under a second."""
    openai_server.default = gzip_bomb(1024 * MIB)

    result, elapsed = _run(runtime, "gpt-bounded")

    assert result.failure_class == FailureClass.TOO_LARGE.value  # type: ignore[attr-defined]
    detail = runtime.store.instance_detail(result.instance_id)  # type: ignore[attr-defined]
    assert detail is not None
    (attempt,) = detail.attempts
    assert attempt.failure_class == "too_large"
    assert "max_response_bytes (8,388,608 bytes" in (attempt.error_message or "")
    assert attempt.raw_response is None  # nothing of it was read whole
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_a_30_mb_answer_is_refused_by_default_and_stored_cut_when_allowed(
    runtime: Runtime, openai_server: OpenAIServer, tmp_path: Path
) -> None:
    huge = json.dumps({**VALID, "vendor": "A" * (30 * MIB)})
    openai_server.default = ok(huge)

    refused, _ = _run(runtime, "gpt-bounded")
    assert refused.failure_class == FailureClass.TOO_LARGE.value  # type: ignore[attr-defined]

    allowed, _ = _run(runtime, "gpt-roomy")  # 64 MiB allowed: read, then too long for the schema
    assert allowed.status is InstanceStatus.NEEDS_REVIEW  # type: ignore[attr-defined]
    detail = runtime.store.instance_detail(allowed.instance_id)  # type: ignore[attr-defined]
    assert detail is not None
    (attempt,) = detail.attempts
    assert attempt.failure_class == "schema_invalid"
    assert len(attempt.raw_output.encode()) <= 65536  # type: ignore[union-attr]
    assert len(attempt.raw_response.encode()) <= 65536  # type: ignore[union-attr]
    assert attempt.truncated["raw_output"] == len(huge)
    assert attempt.truncated["raw_response"] > len(huge)
    assert attempt.raw_output == huge[:65536]
    assert attempt.truncated["validation_errors"] > len(huge)  # the error quoted the 30 MB value
    assert len(json.dumps(attempt.validation_errors)) <= 65536
    (review,) = runtime.store.list_reviews(instance_id=allowed.instance_id)  # type: ignore[attr-defined]
    assert len(review.raw_output or "") <= 65536
    database = tmp_path / "stepline.db"
    stored = sum(p.stat().st_size for p in tmp_path.glob("stepline.db*"))
    assert stored < 5 * MIB, f"{stored / MIB:.1f} MiB stored for two 30 MB answers ({database})"


def _call(model: str, catalog: Path) -> dict[str, Any]:
    env = {**os.environ, "STEPLINE_CONFIG": str(catalog), **TEST_KEYS}
    done = subprocess.run(
        [sys.executable, "-m", "tests.flows.bounded_call", model],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_memory_stays_bounded_whatever_the_body(catalog: Path, openai_server: OpenAIServer) -> None:
    """How far memory rises during one call, against the same call answered normally: at most
    64 MiB more for a 1 GiB gzip bomb or a 30 MB body (seen before the bounds: 7 GB and 1.17 GB)."""
    openai_server.default = ok(VALID)
    baseline = _call("gpt-bounded", catalog)
    assert baseline["outcome"] == "ok"

    openai_server.default = gzip_bomb(1024 * MIB)
    bomb = _call("gpt-bounded", catalog)
    openai_server.default = ok(json.dumps({**VALID, "vendor": "A" * (30 * MIB)}))
    body = _call("gpt-bounded", catalog)

    rise = {name: r["rise_kib"] / 1024 for name, r in (("normal", baseline), ("bomb", bomb), ("body", body))}
    print(f"memory risen during one call, MiB: {rise}")
    assert bomb["outcome"] == body["outcome"] == "too_large"
    assert rise["bomb"] - rise["normal"] < 64, rise
    assert rise["body"] - rise["normal"] < 64, rise
