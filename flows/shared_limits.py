"""Per-model limits shared by every worker, held by Prefect's global concurrency limits.

``steps.limits.ModelGate`` counts inside one process; two workers would each
allow a model's full ``rpm``. With ``STEPLINE_SHARED_LIMITS=true`` each model's
limits live on the Prefect server instead, as global concurrency limits that
every worker asks before a request:

- ``stepline-<model>-concurrent``: ``max_concurrency`` slots, held around a call
  (leased, so a killed worker's slots come back when the lease runs out);
- ``stepline-<model>-rpm``: one slot that decays at ``rpm / 60`` per second, so
  requests from all workers together are spaced ``60 / rpm`` seconds apart;
- ``stepline-<model>-tpm``: ``tpm`` slots decaying at ``tpm / 60`` per second,
  occupied by a request's estimated tokens.

A provider's ``retry-after`` still pauses only this worker's callers: Prefect's
limits count requests, they cannot hold a pause. Each worker that meets a 429
waits it out on its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from steps.limits import ModelGate
from steps.settings import ModelConfig, Settings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["PrefectGate", "ensure_shared_limits", "limit_names"]


def limit_names(model_id: str) -> dict[str, str]:
    return {kind: f"stepline-{model_id}-{kind}" for kind in ("concurrent", "rpm", "tpm")}


def ensure_shared_limits(settings: Settings) -> list[str]:
    """Create or update the Prefect limits of every model that has one; their names."""
    from prefect.client.orchestration import get_client

    made = []
    with get_client(sync_client=True) as client:
        for model_id, config in settings.models.items():
            names = limit_names(model_id)
            wanted: list[tuple[str, int, float | None]] = []
            if config.max_concurrency:
                wanted.append((names["concurrent"], config.max_concurrency, None))
            if config.rpm:
                wanted.append((names["rpm"], 1, config.rpm / 60.0))
            if config.tpm:
                wanted.append((names["tpm"], config.tpm, config.tpm / 60.0))
            for name, limit, decay in wanted:
                _upsert(client, name, limit, decay)
                made.append(name)
    return made


def _upsert(client: SyncPrefectClient, name: str, limit: int, decay: float | None) -> None:
    from prefect.exceptions import ObjectAlreadyExists

    try:
        client.upsert_global_concurrency_limit_by_name(name, limit, slot_decay_per_second=decay)
    except ObjectAlreadyExists:
        # Another worker's flow run created it between Prefect's read and create (two
        # workers starting together): it exists now, so the same call updates it.
        client.upsert_global_concurrency_limit_by_name(name, limit, slot_decay_per_second=decay)


class PrefectGate:
    """A ``Gate`` whose counts live on the Prefect server (see the module docstring)."""

    def __init__(self, model_id: str, config: ModelConfig) -> None:
        self.config = config
        self.names = limit_names(model_id)
        self._local = ModelGate()  # only for pauses a retry-after imposes

    def slot(self) -> AbstractContextManager[None]:
        if not self.config.max_concurrency:
            return nullcontext()
        return self._held()

    @contextmanager
    def _held(self) -> Iterator[None]:
        from prefect.concurrency.sync import concurrency

        with concurrency(self.names["concurrent"], occupy=1, strict=True):
            yield

    def wait_turn(self, tokens: int = 0) -> float:
        from prefect.concurrency.sync import rate_limit

        started = time.monotonic()
        self._local.wait_turn()
        if self.config.rpm:
            rate_limit(self.names["rpm"], occupy=1, strict=True)
        if self.config.tpm and tokens:
            rate_limit(self.names["tpm"], occupy=min(tokens, self.config.tpm), strict=True)
        return time.monotonic() - started

    def pause(self, seconds: float) -> None:
        self._local.pause(seconds)

    def trip(self, reason: str, seconds: float) -> None:
        self._local.trip(reason, seconds)  # per worker: each learns of a spent quota on its own

    def tripped(self) -> str | None:
        return self._local.tripped()
