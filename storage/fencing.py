"""Fencing: a worker's writes for an instance count only while its token is current.

A worker frozen past its lease (SIGSTOP, a long GC pause, a partitioned VM)
is judged dead and its instance handed on; when it wakes it must not send the
same steps again or overwrite its successor's outcome. Every hand-over (lease,
recovery, stop, replay, review decision) adds 1 to ``workflow_instance.fence``,
and every write a worker makes for the instance runs ``guard`` first, in the
same transaction.

Why a guard statement rather than an ``EXISTS`` condition inside each write:
on PostgreSQL (READ COMMITTED) a subquery reads a snapshot and does not wait
for a recovery that is changing the instance row, so the write could land
between the recovery's check and its commit. The guard is an UPDATE of the
instance row itself: it takes the row lock, waits for any hand-over in
progress, and re-reads the token after it (SQLite serialises writers anyway).
It also renews the lease: a worker that writes is alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, update
from sqlmodel import Session, col

from storage.errors import LeaseLost
from storage.models import WorkflowInstance, utcnow
from storage.prepared import execute

__all__ = ["Fence", "current", "guard", "handed_on"]


@dataclass(frozen=True)
class Fence:
    """The token a worker was given for an instance when it took it."""

    instance_id: str
    token: int


_instances = WorkflowInstance.__table__  # type: ignore[attr-defined]
_GUARD = (
    update(_instances)
    .where(_instances.c.id == bindparam("fence_id"), _instances.c.fence == bindparam("fence_token"))
    .values(heartbeat_at=bindparam("fence_now"))
)
"""Built once: this statement runs before every write on every step's path."""


def guard(connection: Session | Connection, fence: Fence) -> None:
    """Lock the instance row and check the token; ``LeaseLost`` if it moved on."""
    result = execute(
        connection, _GUARD, {"fence_id": fence.instance_id, "fence_token": fence.token, "fence_now": utcnow()}
    )
    if result.rowcount != 1:
        raise LeaseLost(fence.instance_id, fence.token)


def handed_on() -> dict[str, Any]:
    """The values that retire every token given out so far (an UPDATE's ``.values``)."""
    return {"fence": WorkflowInstance.fence + 1}


def current(fence: Fence) -> Any:
    """The WHERE condition of a write that is itself the instance's fenced update."""
    return (col(WorkflowInstance.id) == fence.instance_id) & (col(WorkflowInstance.fence) == fence.token)
