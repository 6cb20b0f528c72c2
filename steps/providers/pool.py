"""Authenticated Instructor clients, one per catalog model, built once per process.

Every client has its SDK's own retries disabled (``max_retries=0``): Stepline
records each request as an attempt and decides retries itself, so the SDKs'
hidden retries would both stack and go unrecorded. What differs per vendor
(the client, its modes, request arguments and response readers) is the
vendor's (``steps.providers.registry``); the pool only caches and closes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steps.errors import ConfigError
from steps.limits import Gate, ModelGate
from steps.providers.base import Vendor
from steps.providers.registry import vendor_for
from steps.settings import ModelConfig, ProviderConfig

if TYPE_CHECKING:
    import instructor

__all__ = ["ModelClient", "ProviderPool"]


@dataclass(frozen=True)
class ModelClient:
    """An Instructor client bound to one catalog model, plus how to call it and read its answers."""

    model_id: str
    config: ModelConfig
    provider_id: str
    provider: ProviderConfig
    client: instructor.Instructor
    gate: Gate
    vendor: Vendor

    def request_kwargs(
        self, sampling: Mapping[str, Any], schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Model name, the sampling values this provider's API accepts, and any structured-output
        argument Instructor does not send itself (``Vendor.request_kwargs``)."""
        return self.vendor.request_kwargs(self.config, sampling, schema)


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
        config = self._models[model_id]
        provider = self._providers[config.provider]
        if provider.api_key_env and not provider.api_key():
            raise ConfigError(
                f"models.{model_id} needs an API key: set the environment variable {provider.api_key_env}"
            )
        vendor = vendor_for(provider.kind)
        return ModelClient(
            model_id=model_id,
            config=config,
            provider_id=config.provider,
            provider=provider,
            client=vendor.build(config, provider, self._closers),  # its mode was checked at config load
            gate=self._gate_factory(model_id, config),
            vendor=vendor,
        )


def _local_gate(_model_id: str, config: ModelConfig) -> Gate:
    return ModelGate(max_concurrency=config.max_concurrency, rpm=config.rpm, tpm=config.tpm)
