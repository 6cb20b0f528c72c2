"""Which structured-output modes a catalog model really serves, measured with tiny requests.

A model's ``structured_mode`` is declared by hand, and a wrong declaration only shows as a
failure mid-run (llama.cpp's own server answers ``json_schema`` with HTTP 500, say). The probe
sends one small request per mode the provider kind allows, through the same step executor a
workflow uses (so the same Instructor modes, request arguments and failure classes), with no
retries and no re-asks: one request tells whether the mode works. It recommends the first mode
that works of json_schema (constrained decoding), tools, json.

``ProbeLog`` keeps the last probe of each model in a small JSON file in the user's Stepline
data folder, so that ``stepline validate`` can warn about models never probed there, and
``write_structured_mode`` sets the recommended mode in the user's catalog, keeping the rest of
the file as it was. This module prints nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from steps.classify import provider_message
from steps.definition import EXTRACT, Prompt, Sampling, Sensitivity, Step
from steps.errors import ConfigError, FailureClass, InputError, StepFailed
from steps.retry import RetryPolicy
from steps.settings import (
    DEFAULT_CATALOG,
    SUPPORTED_MODES,
    ModelConfig,
    ProviderConfig,
    Settings,
    StructuredMode,
)

if TYPE_CHECKING:
    from steps.runtime import AttemptRecord

__all__ = [
    "PREFERENCE",
    "ModeResult",
    "Outcome",
    "ProbeLog",
    "ProbeReport",
    "check_model_id",
    "check_writable",
    "probe_model",
    "write_structured_mode",
]

PREFERENCE = (StructuredMode.JSON_SCHEMA, StructuredMode.TOOLS, StructuredMode.JSON)
"""The recommended mode is the first of these that works: constrained decoding over tool calls
over JSON instructions in the prompt."""

_ENDPOINT_FAILURES = frozenset({FailureClass.CONNECTION, FailureClass.AUTH, FailureClass.QUOTA})
"""Failures that say nothing about a mode (the server is not there, the key or the account is
refused): the probe stops at the first, as every mode would fail the same way."""


class Outcome(StrEnum):
    WORKS = "works"
    """The answer validated against the probe's output model."""
    ERROR = "error"
    """The request failed or its answer did not validate (``failure`` says how)."""
    UNSUPPORTED = "unsupported"
    """The provider kind has no such mode in Stepline; nothing was sent."""


class _Subject(BaseModel):
    text: str


# The probe's output model: tiny, so that a request costs a few dozen tokens. No docstring: it
# would become the schema's description, sent with every request.
class ProbeAnswer(BaseModel):
    word: str = Field(max_length=20)
    number: int


_PROBE_STEP: Step[_Subject, ProbeAnswer] = Step(
    name="structured-output-probe",
    kind=EXTRACT,
    sampling=Sampling(max_tokens=64),
    prompt=Prompt(system="Answer in JSON.", user="$text"),
    input_model=_Subject,
    output_model=ProbeAnswer,
    sensitivity=Sensitivity.PUBLIC,
    max_reasks=0,  # one request per mode: a re-ask or a retry would hide what the mode does
    retry=RetryPolicy(retries={}),
)
_QUESTION = _Subject(text="Reply with the word 'ok' and the number 7.")


@dataclass(frozen=True)
class ModeResult:
    mode: StructuredMode
    outcome: Outcome
    latency_ms: float | None = None
    """From sending the request to its answer (None when nothing was sent)."""
    failure: FailureClass | None = None
    message: str | None = None
    """What went wrong, in one short line: the provider's own words when it sent an error."""

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "outcome": self.outcome.value,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "failure": self.failure.value if self.failure else None,
            "message": self.message,
        }


@dataclass(frozen=True)
class ProbeReport:
    model_id: str
    endpoint: dict[str, str | None]
    """What was probed (provider kind, base URL, the provider's model name, GGUF file): a later
    change to any of them makes the record stale."""
    configured: StructuredMode
    results: tuple[ModeResult, ...]
    probed_at: datetime

    @property
    def recommended(self) -> StructuredMode | None:
        works = {r.mode for r in self.results if r.outcome is Outcome.WORKS}
        return next((mode for mode in PREFERENCE if mode in works), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            **self.endpoint,
            "probed_at": self.probed_at.isoformat(timespec="seconds"),
            "configured": self.configured.value,
            "recommended": self.recommended.value if self.recommended else None,
            "modes": [result.as_json() for result in self.results],
        }


def endpoint_of(provider: ProviderConfig, model: ModelConfig) -> dict[str, str | None]:
    """The facts a probe result depends on."""
    return {
        "kind": provider.kind.value,
        "base_url": provider.base_url,
        "provider_model": model.model,
        "gguf_path": str(model.gguf_path) if model.gguf_path else None,
    }


def check_model_id(settings: Settings, model_id: str) -> None:
    """Refuse an id that is not in the catalog, with the closest one."""
    if model_id in settings.models:
        return
    import difflib

    close = difflib.get_close_matches(model_id, settings.models, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InputError(
        f"no model {model_id!r} in the catalog; {hint}known: {', '.join(sorted(settings.models)) or 'none'}"
    )


def probe_model(
    settings: Settings,
    model_id: str,
    on_mode: Callable[[StructuredMode], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ProbeReport:
    """Send the probe's request once in each mode ``model_id``'s provider kind allows.

    Raises ``InputError`` for an unknown model, ``ConfigError`` for a missing API key and
    ``StepFailed`` when the provider cannot be reached or refuses the key or the account,
    whatever the mode (``_ENDPOINT_FAILURES``).
    """
    from steps.runtime import Clearance, MemorySink, StepExecutor

    check_model_id(settings, model_id)
    config = settings.models[model_id]
    provider = settings.provider_of(model_id)
    if provider.api_key_env and not provider.api_key():
        raise ConfigError(
            f"models.{model_id} needs an API key: set the environment variable {provider.api_key_env}"
        )
    allowed = SUPPORTED_MODES[provider.kind]
    # One catalog entry per mode, so that each gets a client built for that mode.
    variants = {
        mode: (f"{model_id}@{mode.value}", config.model_copy(update={"structured_mode": mode}))
        for mode in PREFERENCE
        if mode in allowed
    }
    probing = settings.model_copy(update={"models": dict(variants.values())})
    executor = StepExecutor(probing, sleep=lambda _s: None)
    results: list[ModeResult] = []
    try:
        for mode in PREFERENCE:
            if mode not in variants:
                results.append(ModeResult(mode, Outcome.UNSUPPORTED))
                continue
            if on_mode is not None:
                on_mode(mode)
            variant_id = variants[mode][0]
            step = replace(_PROBE_STEP, model=variant_id)
            sink = MemorySink("probe")
            try:
                executor.run(step, _QUESTION, sink, Clearance.alone(step))
            except StepFailed as exc:
                last = sink.finished[-1] if sink.finished else None
                said = provider_message(exc) or _said(last) or exc.message
                if exc.failure in _ENDPOINT_FAILURES:
                    where = provider.base_url or provider.kind.value
                    raise StepFailed(
                        f"cannot probe {model_id} at {where}: {exc.failure.value}: {_one_line(said)}",
                        step=step.name,
                        failure=exc.failure,
                        model_id=model_id,
                    ) from None
                latency = last.latency_ms if last else None
                results.append(ModeResult(mode, Outcome.ERROR, latency, exc.failure, _one_line(said)))
                continue
            latency = sink.finished[-1].latency_ms if sink.finished else None
            results.append(ModeResult(mode, Outcome.WORKS, latency))
    finally:
        executor.close()
    return ProbeReport(
        model_id=model_id,
        endpoint=endpoint_of(provider, config),
        configured=config.structured_mode,
        results=tuple(results),
        probed_at=now(),
    )


def _said(record: AttemptRecord | None) -> str | None:
    """An attempt's failure in short: its validation errors by path, else its error message."""
    if record is None:
        return None
    if record.validation_errors:
        return "; ".join(f"{e['path']}: {e['message']}" for e in record.validation_errors)
    return record.error_message


def _one_line(text: str, limit: int = 200) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ProbeLog:
    """The last probe of each model, in one JSON file (``probes.json`` in the data folder).

    Kept per user and machine, beside Prefect's local server, rather than in the catalog: a
    probe measures an endpoint from where it ran, and the catalog may be the built-in one or a
    file the team shares. Each probe replaces the file whole (write, then rename).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the probe log {self.path}: {exc}; delete it and probe again"
            ) from None
        models = data.get("models") if isinstance(data, dict) else None
        return {k: v for k, v in models.items() if isinstance(v, dict)} if isinstance(models, dict) else {}

    def record(self, report: ProbeReport) -> None:
        models = self.read()
        models[report.model_id] = report.as_json()
        _replace(self.path, json.dumps({"models": models}, indent=2, ensure_ascii=False) + "\n")

    def warnings(self, settings: Settings) -> list[str]:
        """One line per catalog model never probed here, probed under another endpoint, or
        whose configured mode failed its last probe."""
        found = self.read()
        lines = []
        for model_id, model in settings.models.items():
            last = found.get(model_id)
            endpoint = endpoint_of(settings.provider_of(model_id), model)
            if last is None:
                lines.append(
                    f"model {model_id} has never been probed: `stepline probe {model_id}` checks which "
                    "structured modes it serves"
                )
                continue
            when = str(last.get("probed_at", "?"))[:10]
            if any(last.get(key) != value for key, value in endpoint.items()):
                lines.append(
                    f"model {model_id} changed (provider, base_url or model name) since it was probed on "
                    f"{when}: `stepline probe {model_id}`"
                )
                continue
            modes = {m.get("mode"): m for m in last.get("modes", []) if isinstance(m, dict)}
            mine = modes.get(model.structured_mode.value, {})
            if mine.get("outcome") != Outcome.WORKS.value:
                advice = (
                    f"it recommended {last['recommended']}: `stepline probe {model_id} --write`"
                    if last.get("recommended")
                    else "no mode worked"
                )
                lines.append(
                    f"model {model_id}: structured_mode {model.structured_mode.value} did not work when "
                    f"probed on {when} ({mine.get('failure') or mine.get('outcome', 'not tried')}); {advice}"
                )
        return lines


def check_writable(catalog: Path, model_id: str) -> None:
    """Refuse ``--write`` before anything is sent: the built-in catalog, or a file without the model."""
    _open_for_edit(catalog, model_id)


def write_structured_mode(catalog: Path, model_id: str, mode: StructuredMode) -> None:
    """Set ``[models.<model_id>] structured_mode`` in the user's catalog, keeping the rest of the
    file (comments, order, layout) as it was (tomlkit)."""
    import tomlkit

    target, document, entry = _open_for_edit(catalog, model_id)
    entry["structured_mode"] = mode.value
    _replace(target, tomlkit.dumps(document))


def _open_for_edit(catalog: Path, model_id: str) -> tuple[Path, Any, Any]:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    if catalog.resolve() == DEFAULT_CATALOG.resolve():
        raise ConfigError(
            "the built-in catalog is in use, and it is not yours to edit: copy "
            "steps/default_catalog.toml to ./stepline.toml (or set STEPLINE_CONFIG), then probe again "
            "with --write"
        )
    target = catalog.resolve()  # a symlinked catalog is edited where it lives
    try:
        document = tomlkit.parse(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TOMLKitError) as exc:
        raise ConfigError(f"cannot edit {catalog}: {exc}") from None
    models = document.get("models")
    entry = models.get(model_id) if isinstance(models, dict) else None
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{catalog} has no [models.{model_id}] table (is the model set through the environment?); "
            "set structured_mode where it is defined"
        )
    return target, document, entry


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temporary, mode)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
