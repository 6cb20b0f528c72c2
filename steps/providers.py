"""Authenticated Instructor clients, one per catalog model, built once per process.

Every client has its SDK's own retries disabled (``max_retries=0``): Stepline
records each request as an attempt and decides retries itself, so the SDKs'
hidden retries would both stack and go unrecorded.

The HTTP response body of every request is captured byte-for-byte (an httpx
response hook) into the caller's ``capture_bodies()`` list, so that a failed
attempt can be stored exactly as the provider sent it.

Write-ahead is enforced where the request leaves the process: an httpx
request hook (and the embedded model's ``create``) asks the caller's
``write_ahead()`` check first, which refuses unless the attempt about to be
sent was recorded. Instructor swallows exceptions raised in its own hooks,
so a failed record there could not stop the request; this can.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steps.errors import ConfigError
from steps.limits import Gate, ModelGate
from steps.settings import ModelConfig, ProviderConfig, ProviderKind, StructuredMode, default_gguf_path

if TYPE_CHECKING:
    import httpx2
    import instructor

__all__ = ["ModelClient", "ProviderPool", "anthropic_output_schema", "capture_bodies", "write_ahead"]

_BODIES: ContextVar[list[bytes] | None] = ContextVar("stepline_raw_bodies", default=None)
_WRITE_AHEAD: ContextVar[Callable[[bytes | None], None] | None] = ContextVar(
    "stepline_write_ahead", default=None
)


@contextmanager
def write_ahead(check: Callable[[bytes | None], None]) -> Iterator[None]:
    """Call ``check(body)`` before each request sent in this context; an exception it raises stops it.

    ``body`` is the exact request body about to leave, or None for the embedded model, whose
    requests never leave the process.
    """
    token = _WRITE_AHEAD.set(check)
    try:
        yield
    finally:
        _WRITE_AHEAD.reset(token)


def _check_write_ahead(request: httpx2.Request | None = None) -> None:
    check = _WRITE_AHEAD.get()
    if check is not None:
        check(request.content if request is not None else None)


@contextmanager
def capture_bodies() -> Iterator[list[bytes]]:
    """Collect the raw HTTP response bodies received in this context."""
    bodies: list[bytes] = []
    token = _BODIES.set(bodies)
    try:
        yield bodies
    finally:
        _BODIES.reset(token)


def _record_body(response: httpx2.Response) -> None:
    bodies = _BODIES.get()
    if bodies is not None:
        response.read()
        bodies.append(response.content)


@dataclass(frozen=True)
class ModelClient:
    """An Instructor client bound to one catalog model, plus how to call it."""

    model_id: str
    config: ModelConfig
    provider_id: str
    provider: ProviderConfig
    client: instructor.Instructor
    gate: Gate

    def request_kwargs(
        self, sampling: dict[str, Any], schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Model name, the sampling values this provider's API accepts, and any structured-output
        argument Instructor does not send itself.

        Anthropic's Messages API (SDK 2.x) takes no temperature, top_p or seed;
        only max_tokens (required) is sent there. Each attempt records the
        values actually sent, so the difference is visible, not hidden.

        Anthropic in ``json_schema`` mode gets ``output_config.format`` built from ``schema`` (the
        output model's JSON schema) here, because Instructor 1.17 cannot send it: its Anthropic
        JSON_SCHEMA handler sends the beta ``output_format`` argument, which SDK 2.x's
        ``messages.create()`` no longer has, so it warns and falls back to instructions in the
        prompt. The client runs Instructor's ``ANTHROPIC_JSON`` mode instead (``_modes``), which
        reads the JSON from the text block the constrained answer arrives in, and re-asks with it;
        it also puts the schema in the system prompt, redundant under constrained decoding but
        harmless, and kept rather than a handler of our own.
        """
        kwargs: dict[str, Any] = {"model": self.config.model}
        if self.provider.kind is ProviderKind.ANTHROPIC:
            kwargs["max_tokens"] = sampling.get("max_tokens") or 1024
            if self.config.structured_mode is StructuredMode.JSON_SCHEMA and schema is not None:
                kwargs["output_config"] = {
                    "format": {"type": "json_schema", "schema": anthropic_output_schema(schema)}
                }
            return kwargs
        for name in ("temperature", "top_p", "max_tokens", "seed"):
            if sampling.get(name) is not None:
                kwargs[name] = sampling[name]
        return kwargs


class ProviderPool:
    """Builds and caches one client per model id; thread-safe."""

    def __init__(
        self,
        providers: dict[str, ProviderConfig],
        models: dict[str, ModelConfig],
        gate_factory: Callable[[str, ModelConfig], Gate] | None = None,
    ) -> None:
        self._providers = providers
        self._models = models
        self._gate_factory = gate_factory or _local_gate
        self._clients: dict[str, ModelClient] = {}
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._closed = False
        """Set by ``close``: a ``prepare`` still queued then builds nothing."""

    def close(self) -> None:
        """Close every SDK client's connection pool (idempotent)."""
        with self._lock:
            self._closed = True
            for close in self._closers:
                close()
            self._closers.clear()
            self._clients.clear()

    def prepare(self, model_id: str) -> None:
        """Build ``model_id``'s client in the background, while this process waits on something else.

        Building one imports the SDK and Instructor (2-3 s from a cold start, about half of a
        command's time to its first request) or loads the embedded model; a command starts this
        before it waits on Prefect's API to create its flow run, and the step's ``get`` then
        finds the client built, or waits on the lock for the rest. Errors are left for ``get``.
        """
        if model_id in self._clients or model_id not in self._models:
            return

        def build() -> None:
            with self._lock, contextlib.suppress(Exception):
                if not self._closed and model_id not in self._clients:
                    self._clients[model_id] = self._build(model_id)

        threading.Thread(target=build, name=f"prepare-{model_id}", daemon=True).start()

    def built(self, model_id: str) -> bool:
        """Whether ``model_id``'s client is ready (built by a step, or by ``prepare``)."""
        return model_id in self._clients

    def get(self, model_id: str) -> ModelClient:
        client = self._clients.get(model_id)
        if client is None:
            with self._lock:
                client = self._clients.get(model_id)
                if client is None:
                    client = self._build(model_id)
                    self._clients[model_id] = client
        return client

    def _build(self, model_id: str) -> ModelClient:
        import instructor

        config = self._models[model_id]
        provider = self._providers[config.provider]
        mode = _modes()[provider.kind][config.structured_mode]  # checked at config load
        key = provider.api_key()
        if provider.api_key_env and not key:
            raise ConfigError(
                f"models.{model_id} needs an API key: set the environment variable {provider.api_key_env}"
            )
        client: instructor.Instructor
        if provider.kind is ProviderKind.ANTHROPIC:
            import anthropic

            sdk_anthropic = anthropic.Anthropic(
                api_key=key or "unused",
                base_url=provider.base_url,
                max_retries=0,
                timeout=provider.timeout_s,
                http_client=anthropic.DefaultHttpxClient(event_hooks=_HOOKS),
            )
            self._closers.append(sdk_anthropic.close)
            client = instructor.from_anthropic(sdk_anthropic, mode=mode)
        elif provider.kind is ProviderKind.EMBEDDED:
            create = _llama_create(config, self._closers)
            client = instructor.Instructor(
                client=None,
                create=instructor.patch(create=create, mode=mode),
                mode=mode,
            )
        else:
            import openai

            sdk_openai = openai.OpenAI(
                api_key=key or "unused",
                base_url=provider.base_url,
                max_retries=0,
                timeout=provider.timeout_s,
                http_client=openai.DefaultHttpxClient(event_hooks=_HOOKS),
            )
            self._closers.append(sdk_openai.close)
            client = instructor.from_openai(sdk_openai, mode=mode)
        return ModelClient(
            model_id=model_id,
            config=config,
            provider_id=config.provider,
            provider=provider,
            client=client,
            gate=self._gate_factory(model_id, config),
        )


_HOOKS: dict[str, list[Callable[..., Any]]] = {"request": [_check_write_ahead], "response": [_record_body]}


def _local_gate(_model_id: str, config: ModelConfig) -> Gate:
    return ModelGate(max_concurrency=config.max_concurrency, rpm=config.rpm, tpm=config.tpm)


def _modes() -> dict[ProviderKind, dict[StructuredMode, Any]]:
    from instructor import Mode

    openai_modes = {
        StructuredMode.TOOLS: Mode.TOOLS,
        StructuredMode.JSON_SCHEMA: Mode.JSON_SCHEMA,
        StructuredMode.JSON: Mode.JSON,
    }
    return {
        ProviderKind.OPENAI: openai_modes,
        ProviderKind.OPENAI_COMPATIBLE: openai_modes,
        ProviderKind.ANTHROPIC: {
            StructuredMode.TOOLS: Mode.ANTHROPIC_TOOLS,
            # Not Mode.JSON_SCHEMA: Instructor's handler for it sends the beta `output_format`, gone
            # from SDK 2.x. ANTHROPIC_JSON parses the text answer; `output_config` is added by
            # ModelClient.request_kwargs.
            StructuredMode.JSON_SCHEMA: Mode.ANTHROPIC_JSON,
            StructuredMode.JSON: Mode.ANTHROPIC_JSON,
        },
        # llama.cpp decodes under a grammar built from the JSON schema.
        ProviderKind.EMBEDDED: {StructuredMode.JSON_SCHEMA: Mode.JSON_SCHEMA},
    }


def anthropic_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` in the subset Anthropic's ``output_config.format`` accepts.

    The API compiles the schema into a grammar and refuses what the grammar cannot express:
    every object needs ``additionalProperties: false``, and numeric bounds, string lengths,
    ``maxItems``, a ``minItems`` other than 0 or 1 and string formats outside a short list are
    rejected. The SDK's own ``transform_schema`` makes exactly these changes (dropped keywords
    move into the description, as hints); Pydantic still validates the answer against the full
    schema.
    """
    import anthropic

    transformed: dict[str, Any] = anthropic.transform_schema(schema)
    return transformed


_GRAMMAR_MAX_LENGTH = 512


def _grammar_safe(schema: Any) -> Any:
    """The schema with string ``maxLength`` capped for llama.cpp's grammar compiler.

    llama.cpp expands ``{0,n}`` into n nested rules and, past a few hundred,
    rejects the grammar and crashes the process (SIGSEGV with llama-cpp-python
    0.3.36). Capping only narrows what the model may write; Pydantic still
    validates the output against the real schema.
    """
    if isinstance(schema, dict):
        safe = {key: _grammar_safe(value) for key, value in schema.items()}
        if isinstance(safe.get("maxLength"), int) and safe["maxLength"] > _GRAMMAR_MAX_LENGTH:
            safe["maxLength"] = _GRAMMAR_MAX_LENGTH
        return safe
    if isinstance(schema, list):
        return [_grammar_safe(item) for item in schema]
    return schema


def _llama_create(config: ModelConfig, closers: list[Callable[[], None]]) -> Callable[..., Any]:
    """An OpenAI-shaped ``create`` over an in-process llama.cpp model.

    Written by hand because Instructor has no llama-cpp-python provider: it
    translates the OpenAI ``response_format`` Instructor sends into
    llama.cpp's ``json_object`` + ``schema`` (grammar-constrained decoding)
    and returns an OpenAI ``ChatCompletion``. llama.cpp contexts are not
    thread-safe, so calls are serialised by a lock.
    """
    from llama_cpp import Llama
    from openai.types.chat import ChatCompletion

    path = config.gguf_path or default_gguf_path()
    if not path.is_file():
        raise ConfigError(f"embedded model file {path} does not exist; fix gguf_path in the catalog")
    llama = Llama(
        model_path=str(path),
        n_ctx=config.context_window,
        n_threads=max(1, os.cpu_count() or 1),
        verbose=False,
    )
    lock = threading.Lock()
    closers.append(llama.close)

    def create(**kwargs: Any) -> ChatCompletion:
        _check_write_ahead()
        response_format = kwargs.pop("response_format", None)
        if response_format and response_format.get("type") == "json_schema":
            schema = _grammar_safe(response_format["json_schema"]["schema"])
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        kwargs.pop("model", None)
        kwargs.pop("timeout", None)
        with lock:
            result = llama.create_chat_completion(**kwargs)
        completion = ChatCompletion.model_validate(result)
        bodies = _BODIES.get()
        if bodies is not None:
            bodies.append(json.dumps(result, ensure_ascii=False).encode())
        return completion

    return create
