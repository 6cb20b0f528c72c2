"""What `stepline validate` says from the probe log, and how `--write` edits a catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from steps.errors import ConfigError, FailureClass
from steps.probe import ModeResult, Outcome, ProbeLog, ProbeReport, endpoint_of, write_structured_mode
from steps.settings import DEFAULT_CATALOG, StructuredMode
from tests.catalogs import use_catalog

CATALOG = """# ours
[providers.llama]
kind = "openai_compatible"
base_url = "http://127.0.0.1:8080/v1"  # the GPU box
private = true

[models.a]
provider = "llama"
model = "a"
structured_mode = "json_schema"

[models.b]
provider = "llama"
model = "b"
"""


def report(model_id: str, json_schema: Outcome) -> ProbeReport:
    endpoint = {
        "kind": "openai_compatible",
        "base_url": "http://127.0.0.1:8080/v1",
        "provider_model": model_id,
    }
    return ProbeReport(
        model_id=model_id,
        endpoint={**endpoint, "gguf_path": None},
        configured=StructuredMode.JSON_SCHEMA,
        results=(
            ModeResult(
                StructuredMode.JSON_SCHEMA,
                json_schema,
                3.0,
                FailureClass.UNAVAILABLE if json_schema is Outcome.ERROR else None,
            ),
            ModeResult(StructuredMode.TOOLS, Outcome.WORKS, 2.0),
            ModeResult(StructuredMode.JSON, Outcome.WORKS, 2.0),
        ),
        probed_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_warnings_name_unprobed_changed_and_failing_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = use_catalog(monkeypatch, tmp_path, CATALOG)
    log = ProbeLog(tmp_path / "home" / "probes.json")
    assert log.warnings(settings) == [
        "model a has never been probed: `stepline probe a` checks which structured modes it serves",
        "model b has never been probed: `stepline probe b` checks which structured modes it serves",
    ]

    failing = report("a", Outcome.ERROR)
    assert failing.recommended is StructuredMode.TOOLS
    assert failing.endpoint == endpoint_of(settings.provider_of("a"), settings.models["a"])
    log.record(failing)
    log.record(report("b", Outcome.WORKS))
    assert log.warnings(settings) == [
        "model a: structured_mode json_schema did not work when probed on 2026-12-01 (unavailable); "
        "it recommended tools: `stepline probe a --write`",
        # b is configured for tools (the default), which worked
    ]

    moved = use_catalog(monkeypatch, tmp_path, CATALOG.replace("8080", "8081"))
    assert log.warnings(moved)[0] == (
        "model a changed (provider, base_url or model name) since it was probed on 2026-12-01: "
        "`stepline probe a`"
    )

    (tmp_path / "home" / "probes.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the probe log"):
        log.warnings(settings)


def test_write_changes_one_value_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_catalog(monkeypatch, tmp_path, CATALOG)
    path = tmp_path / "stepline.toml"
    write_structured_mode(path, "a", StructuredMode.TOOLS)
    write_structured_mode(path, "b", StructuredMode.JSON)  # not set before: added to its table
    text = path.read_text()
    assert text == CATALOG.replace('structured_mode = "json_schema"', 'structured_mode = "tools"').replace(
        'model = "b"\n', 'model = "b"\nstructured_mode = "json"\n'
    )

    with pytest.raises(ConfigError, match=r"has no \[models.c\] table"):
        write_structured_mode(path, "c", StructuredMode.TOOLS)
    with pytest.raises(ConfigError, match="the built-in catalog is in use"):
        write_structured_mode(DEFAULT_CATALOG, "smollm2", StructuredMode.JSON_SCHEMA)
