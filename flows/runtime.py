"""What every flow in a process shares: settings, the store, the step executor, the lease heartbeat.

``Runtime.open`` builds them from the catalog and the configured database;
one runtime serves every instance a command, a worker or a TUI action runs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flows.recovery import Heartbeat
from steps.providers import ProviderPool
from steps.runtime import StepExecutor
from steps.settings import Settings, load_settings
from storage.db import open_engine
from storage.store import StorageError, Store

__all__ = ["Runtime"]

_log = logging.getLogger("stepline")


def _prefect_heartbeat(seconds: int | None) -> None:
    """Set Prefect's flow-run heartbeat for this process (``[workers] prefect_heartbeat_s``).

    Only None turns it off, and an environment variable cannot carry None (it must parse as an
    integer), so it is set in code, on the process-wide settings: worker threads do not see
    ``temporary_settings``. Off, Prefect's UI still shows each flow run's state as the engine
    reports it; a flow run whose process was killed stays Running there, while Stepline's
    leases find its instances (``stepline recover``).
    """
    from prefect.settings import get_current_settings

    get_current_settings().flows.heartbeat_frequency = seconds


@dataclass
class Runtime:
    """Settings, storage and the step executor shared by every flow in a process."""

    settings: Settings
    store: Store
    executor: StepExecutor
    heartbeat: Heartbeat

    @property
    def worker(self) -> str:
        """This process, as the instances it runs name it."""
        return self.heartbeat.worker

    @classmethod
    def open(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or load_settings()
        _prefect_heartbeat(settings.workers.prefect_heartbeat_s)
        store = Store(open_engine(settings.database_url))
        pool = None
        if settings.shared_limits:
            from flows.local_server import ensure_prefect_api
            from flows.shared_limits import PrefectGate, ensure_shared_limits

            ensure_prefect_api()
            ensure_shared_limits(settings)
            pool = ProviderPool(settings.providers, settings.models, gate_factory=PrefectGate)
        return cls(
            settings,
            store,
            StepExecutor(settings, pool, latency=_Cached(store.median_latency_by_model)),
            Heartbeat(store, settings.workers.heartbeat_s),
        )

    def apply_prefect_settings(self) -> None:
        """Set Prefect's flow-run heartbeat again: ensuring the local server can refresh Prefect's
        settings (``flows.local_server``), which brings back its default. Every instance calls it."""
        _prefect_heartbeat(self.settings.workers.prefect_heartbeat_s)

    def close(self) -> None:
        """Stop renewing leases; release provider connections and this process's shared engine."""
        self.heartbeat.stop()
        self.executor.close()
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _Cached:
    """A store query re-run at most every ``ttl`` seconds (routing reads it per step)."""

    def __init__(self, query: Callable[[], dict[str, float]], ttl: float = 30.0) -> None:
        self._query = query
        self._ttl = ttl
        self._value: dict[str, float] = {}
        self._at = -math.inf
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, float]:
        with self._lock:
            if time.monotonic() - self._at > self._ttl:
                try:
                    self._value = self._query()
                except StorageError as exc:  # routing then goes on what it knew: not worth a stop
                    _log.warning("could not read observed latencies: %s", exc)
                self._at = time.monotonic()
            return self._value
