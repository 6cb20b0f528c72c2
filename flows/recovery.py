"""Telling a dead worker's instances from running ones, and handing them back.

Every process that runs instances holds a lease on each: the instance row
names the worker (``host:pid:nonce``) and a heartbeat thread renews
``heartbeat_at``. A worker killed with SIGKILL, a crashed container or a lost
machine stops renewing; its instances are then *lost*:

- at once, when the worker ran on this host and its process id is gone;
- otherwise when the lease is older than ``[workers] lease_s``.

``recover`` pauses a lost instance with failure class ``worker_lost`` (its
unfinished step run fails, its request in flight is marked) and tells the
owner; ``flows.instances.replay`` then resumes it from that step, reusing
every completed step's output without calling a provider again.

Written by hand: Prefect marks a dead worker's flow runs as crashed, but
Stepline's instances live in Stepline's store (a replay may run in another
process, or from the TUI), so their ownership has to be recorded there too.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from flows.notify import notify_owner
from steps.errors import FailureClass
from steps.settings import Settings
from storage.models import WorkflowInstance, as_utc
from storage.store import Store

__all__ = ["THIS_WORKER", "Heartbeat", "LostInstance", "find_lost", "is_lost", "recover"]

_log = logging.getLogger("stepline")

THIS_WORKER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
"""This process as instance rows name it; the nonce tells a reused process id apart."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _worker_gone(worker: str) -> bool:
    """Whether ``worker`` was a process on this host that no longer exists."""
    host, _, rest = worker.partition(":")
    pid, _, _nonce = rest.partition(":")
    if worker == THIS_WORKER or host != socket.gethostname() or not pid.isdigit():
        return False
    return not _pid_alive(int(pid))


@dataclass(frozen=True)
class LostInstance:
    instance: WorkflowInstance
    reason: str


def is_lost(instance: WorkflowInstance, lease_s: float, now: datetime | None = None) -> str | None:
    """Why this running instance's worker is judged dead, or None while it may be alive."""
    worker = instance.worker
    if worker is None:  # written before leases existed, or by a process without them
        beat = instance.updated_at
    else:
        if _worker_gone(worker):
            return f"its process no longer exists on this host ({worker})"
        beat = instance.heartbeat_at or instance.updated_at
    age = ((now or datetime.now(UTC)) - as_utc(beat)).total_seconds()
    if age > lease_s:
        who = worker or "(unrecorded)"
        return f"its worker {who} last renewed its lease {age:.0f} s ago (lease {lease_s:g} s)"
    return None


def find_lost(store: Store, settings: Settings) -> list[LostInstance]:
    """Running instances whose worker is judged dead."""
    now = datetime.now(UTC)
    found = []
    for instance in store.running_instances():
        reason = is_lost(instance, settings.workers.lease_s, now)
        if reason is not None:
            found.append(LostInstance(instance, reason))
    return found


def recover(store: Store, settings: Settings, lost: LostInstance) -> bool:
    """Pause a lost instance so that a replay resumes it; False if it moved on meanwhile."""
    instance = lost.instance
    recovered = store.recover_lost(
        instance.id,
        fence=instance.fence,
        heartbeat_at=instance.heartbeat_at,
        failure_class=FailureClass.WORKER_LOST.value,
        error=f"{lost.reason}; `stepline replay {instance.id[:12]}` "
        + ("runs it from the start" if instance.status == "queued" else "resumes from the step it was on"),
    )
    if recovered:
        notify_owner(
            store,
            settings.notify,
            instance_id=instance.id,
            owner=instance.owner,
            event="paused",
            title=f"[stepline] {instance.workflow} {instance.id[:12]} paused: its worker was lost",
            body=json.dumps(
                {
                    "instance": instance.id,
                    "workflow": instance.workflow,
                    "status": "paused",
                    "failure_class": FailureClass.WORKER_LOST.value,
                    "next": f"stepline replay {instance.id[:12]}",
                },
                indent=2,
            ),
        )
    return recovered


class Heartbeat:
    """Renews this process's lease on the instances it runs, from a daemon thread.

    A thread rather than a hook on each step: a single model call (a slow
    local model, a long retry-after) can outlast the lease. Each beat reads
    back which leases were renewed: one that was not was handed on (this
    process was judged dead, say after a freeze), and the run holding it stops
    before its next step; its writes are refused anyway (``storage.fencing``).
    """

    def __init__(
        self,
        store: Store,
        interval_s: float,
        worker: str = THIS_WORKER,
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.worker = worker
        self._held: dict[str, int] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, instance_id: str, token: int) -> None:
        """Renew the lease on ``instance_id`` under ``token`` until ``release``."""
        with self._lock:
            self._held[instance_id] = token
            self._lost.discard(instance_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stepline-heartbeat", daemon=True)
                self._thread.start()

    def release(self, instance_id: str) -> None:
        with self._lock:
            self._held.pop(instance_id, None)
            self._lost.discard(instance_id)

    def is_lost(self, instance_id: str) -> bool:
        """Whether a beat found this lease handed on."""
        return instance_id in self._lost

    def beat(self) -> int:
        """Renew every lease held now; how many the store still grants (the rest are lost)."""
        with self._lock:
            held = dict(self._held)
        renewed = self.store.heartbeat(self.worker, held)
        lost = set(held) - renewed
        if lost:
            with self._lock:
                self._lost |= lost & set(self._held)
            _log.warning(
                "lost the lease on %d instance(s) (%s): they were handed on; stopping work on them",
                len(lost),
                ", ".join(sorted(i[:12] for i in lost)),
            )
        return len(renewed)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception as exc:  # a database blip must not kill the thread; the next beat retries
                _log.warning("could not renew the lease on running instances: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
