"""The ``Store``: the database as Stepline uses it, one facade over its aggregates.

    storage/
      base.py       sessions, retries across dropped connections, DatabaseFailed
      fencing.py    the one fencing condition every worker write runs first
      instances.py  instances: create, queue, lease, claim, end, recover, heartbeat, browse
      runs.py       step runs and attempts, written ahead of each request
      reviews.py    review items and notifications
      prompts.py    prompt versions and the one an operator chose
      reports.py    costs and latencies
      consistency.py  consistency probes' results, and a step's stored answers to compare

Every method is one short transaction that commits before it returns. An
attempt's row is written when its request is about to be sent and completed
when it ends: a worker killed mid-request leaves a row that says so, and a
crash loses no attempt, finished or not.
"""

from __future__ import annotations

from sqlalchemy import Engine

from storage.consistency import ConsistencyStore
from storage.errors import DatabaseFailed, LeaseLost, StorageError
from storage.fencing import Fence
from storage.instances import Claim, InstanceDetail, InstanceStore
from storage.prompts import PromptStore
from storage.reports import ReportStore
from storage.reviews import ReviewStore
from storage.runs import LATE_ANSWER, RunStore

__all__ = [
    "LATE_ANSWER",
    "Claim",
    "DatabaseFailed",
    "Fence",
    "InstanceDetail",
    "LeaseLost",
    "StorageError",
    "Store",
]


class Store(InstanceStore, RunStore, ReviewStore, PromptStore, ReportStore, ConsistencyStore):
    """The database as Stepline uses it; safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
