"""Running instances on a team's work pool: submit them, let workers run them, find the stranded.

    stepline submit ──> queued (in the store) ──> flow run of stepline-queued/submitted
                                                   (N instances each, in Prefect)
    a worker's flow run: lease all N ──> run each: queued ──> running ──> ...

``stepline submit`` writes every instance as ``queued`` before it asks
Prefect for a flow run, so an input never lives only in a flow run's
parameters. A flow run leases all its instances as it starts, and its
heartbeat renews them, so a killed worker's instances, started or not, are
recovered like any lost worker's (``flows.recovery``). Queued instances no
flow run has leased are judged by their flow run's state in Prefect
(``find_stranded``): still scheduled means another worker will take it;
ended, or stuck pending/running past the lease, means no one will.
"""

from __future__ import annotations

import inspect
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger

from flows.batch import BatchItem, ItemOutcome, parse_item
from flows.instances import check_workflow, run_queued
from flows.recovery import LostInstance, find_lost, recover
from flows.results import discard_failure_result
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.errors import InputError
from steps.settings import Settings
from storage.models import WorkflowInstance, as_utc
from storage.store import Fence, Store

__all__ = [
    "QUEUED_DEPLOYMENT",
    "QUEUED_ENTRYPOINT",
    "QUEUED_FLOW",
    "Submission",
    "find_stranded",
    "queued_flow",
    "recover_peers",
    "submit",
]

QUEUED_FLOW = "stepline-queued"
QUEUED_DEPLOYMENT = "submitted"
"""``stepline submit`` creates flow runs of ``stepline-queued/submitted`` by default."""
QUEUED_ENTRYPOINT = "flows/team.py:queued_flow"
"""The flow as ``prefect deploy`` finds it, relative to the project root."""

_TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
_STARTED = {"PENDING", "RUNNING"}


@flow(name=QUEUED_FLOW, persist_result=False, on_failure=[discard_failure_result])
def queued_flow(instance_ids: list[str], concurrency: int = 4) -> dict[str, int]:
    """Run queued instances on this worker: lease them all, then run ``concurrency`` at a time.

    Stopped (Prefect cancels the run, or the worker is stopped), it starts no
    new instance and pauses the running ones before their next step; the rest
    stay leased to this process, so once it is gone they are recovered.
    """
    logger = get_run_logger()
    with Runtime.open() as runtime:
        # Lease first: if anything below fails, these are still judged by this process's life.
        held = runtime.store.lease_queued(instance_ids, runtime.worker)
        for instance_id, token in held.items():
            runtime.heartbeat.hold(instance_id, token)
        try:
            recovered = recover_peers(runtime.store, runtime.settings)
        except Exception as exc:  # best effort: `stepline recover` or the next flow run does it
            logger.warning("could not recover lost workers' instances: %s: %s", type(exc).__name__, exc)
            recovered = 0
        if recovered:
            logger.warning(
                "recovered %d instance(s) of lost workers; `stepline recover --replay` resumes them",
                recovered,
            )
        counts: Counter[str] = Counter({"not_held": len(instance_ids) - len(held)})
        cancel = threading.Event()

        def one(instance_id: str) -> str:
            try:
                if cancel.is_set():
                    return "not_started"
                result = run_queued(Fence(instance_id, held[instance_id]), runtime, cancel=cancel)
                if result is None:
                    return "not_held"
                return "superseded" if result.superseded else result.status.value
            finally:
                runtime.heartbeat.release(instance_id)

        pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="stepline")
        try:
            for status in pool.map(one, held):
                counts[status] += 1
        except BaseException:  # Prefect's termination signal, Ctrl-C: stop, do not drain the queue
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    found = {k: v for k, v in sorted(counts.items()) if v}
    logger.info("%d instance(s): %s", len(instance_ids), found)
    return found


def recover_peers(store: Store, settings: Settings) -> int:
    """Pause the instances of dead workers and stranded flow runs; how many were recovered."""
    lost = find_lost(store, settings) + find_stranded(store, settings)
    return sum(recover(store, settings, item) for item in lost)


def find_stranded(store: Store, settings: Settings, now: datetime | None = None) -> list[LostInstance]:
    """Queued instances no flow run will start: their flow run ended, vanished or died.

    Asks the Prefect API (``PREFECT_API_URL``) about their flow runs; without
    one configured there is nothing to ask, and nothing is judged.
    """
    from prefect.settings import PREFECT_API_URL

    waiting = store.unleased_queued()
    if not waiting or not PREFECT_API_URL.value():
        return []
    now = now or datetime.now(UTC)
    lease_s = settings.workers.lease_s
    runs = _flow_runs({i.flow_run_id for i in waiting if i.flow_run_id})
    found = []
    for instance in waiting:
        reason = _stranded_because(instance, runs, now, lease_s)
        if reason is not None:
            found.append(LostInstance(instance, reason))
    return found


def _stranded_because(
    instance: WorkflowInstance,
    runs: Mapping[str, tuple[str, datetime | None]],
    now: datetime,
    lease_s: float,
) -> str | None:
    if instance.flow_run_id is None:
        age = (now - as_utc(instance.created_at)).total_seconds()
        if age > lease_s:
            return f"it was submitted {age:.0f} s ago but no flow run was created for it"
        return None
    state = runs.get(instance.flow_run_id)
    if state is None:
        return f"its flow run {instance.flow_run_id} no longer exists in Prefect"
    kind, since = state
    if kind in _TERMINAL:
        return f"its flow run {instance.flow_run_id} ended ({kind.lower()}) without starting it"
    if kind in _STARTED and since is not None:
        age = (now - as_utc(since)).total_seconds()
        if age > lease_s:
            # A live flow run leases all its instances within seconds of starting.
            return (
                f"its flow run {instance.flow_run_id} has been {kind.lower()} for {age:.0f} s "
                f"without taking it (lease {lease_s:g} s): its worker is gone"
            )
    return None


def _flow_runs(ids: set[str]) -> dict[str, tuple[str, datetime | None]]:
    """Each flow run's state type and since when, by id (those Prefect still has)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found: dict[str, tuple[str, datetime | None]] = {}
    chosen = sorted(ids)
    with get_client(sync_client=True) as client:
        for start in range(0, len(chosen), 200):
            batch = [uuid.UUID(i) for i in chosen[start : start + 200]]
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)), limit=len(batch)
            ):
                state = run.state
                found[str(run.id)] = (
                    state.type.value if state is not None else "SCHEDULED",
                    state.timestamp if state is not None else None,
                )
    return found


@dataclass
class Submission:
    """What ``submit`` did: the instances queued, the flow runs asked for, the inputs refused."""

    workflow: str
    deployment: str
    queued: list[str] = field(default_factory=list)
    flow_runs: list[str] = field(default_factory=list)
    rejected: list[ItemOutcome] = field(default_factory=list)


def submit(
    workflow: Workflow,
    items: Sequence[BatchItem],
    runtime: Runtime,
    *,
    deployment: str = f"{QUEUED_FLOW}/{QUEUED_DEPLOYMENT}",
    per_run: int = 10,
    concurrency: int = 4,
    owner: str | None = None,
    on_flow_run: Callable[[str, int], None] | None = None,
) -> Submission:
    """Queue an instance per valid item and ask ``deployment`` for a flow run per ``per_run`` of them.

    Each chunk is written to the store before its flow run is created; if
    Prefect fails halfway, the instances already queued stay in the store
    (``stepline recover`` hands them back once judged stranded) and the
    error says how far the submission got.
    """
    if per_run < 1:
        raise InputError(f"per_run must be at least 1, not {per_run}")
    check_workflow(workflow, runtime)
    _check_deployment(deployment)
    done = Submission(workflow.name, deployment)
    valid: list[tuple[Any, str | None, str | None]] = []
    for item in items:
        parsed = parse_item(workflow, item)
        if isinstance(parsed, ItemOutcome):
            done.rejected.append(parsed)
        else:
            valid.append((parsed.model_dump(mode="json"), item.source, item.digest))
    for start in range(0, len(valid), per_run):
        chunk = runtime.store.create_queued(
            workflow.name, valid[start : start + per_run], owner or runtime.settings.owner
        )
        ids = [instance.id for instance in chunk]
        done.queued.extend(ids)
        try:
            run_id = _create_flow_run(deployment, ids, concurrency, workflow.name)
        except Exception as exc:
            raise InputError(
                f"Prefect refused a flow run of {deployment} after {len(done.flow_runs)} of "
                f"{-(-len(valid) // per_run)}: {type(exc).__name__}: {exc}; {len(ids)} instance(s) "
                "stay queued without one; after [workers] lease_s, `stepline recover --replay` "
                "runs them here"
            ) from exc
        runtime.store.set_queued_flow_run(ids, run_id)
        done.flow_runs.append(run_id)
        if on_flow_run is not None:
            on_flow_run(run_id, len(ids))
    return done


def _check_deployment(name: str) -> None:
    """Fail before anything is written if Prefect has no such deployment."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise InputError(
            "PREFECT_API_URL is not set: `stepline submit` hands instances to the workers of a "
            "Prefect server (see README, Running at team scale); `stepline run` runs them here"
        )
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise InputError(
                f"Prefect at {PREFECT_API_URL.value()} has no deployment {name!r}; deploy it "
                "from the project root with `prefect deploy --all` (prefect.yaml)"
            ) from None
        except (httpx.HTTPError, PrefectHTTPStatusError, RuntimeError) as exc:
            raise InputError(
                f"cannot reach the Prefect server at {PREFECT_API_URL.value()} ({type(exc).__name__}: "
                f"{exc}); start it (deploy/team.sh up) or fix PREFECT_API_URL; nothing was queued"
            ) from None


def _create_flow_run(deployment: str, instance_ids: list[str], concurrency: int, workflow: str) -> str:
    from prefect.deployments import run_deployment

    run = run_deployment(
        name=deployment,
        parameters={"instance_ids": instance_ids, "concurrency": concurrency},
        timeout=0,  # hand it to the work pool; do not wait for it
        tags=["stepline", workflow],
        # A retried submission of the same chunk must not start a second flow run.
        idempotency_key=f"stepline-queued:{instance_ids[0]}",
        as_subflow=False,
    )
    assert not inspect.isawaitable(run)  # called from sync code: never a coroutine
    return str(run.id)
