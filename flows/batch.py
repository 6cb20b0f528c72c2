"""Many instances of one workflow, from a folder of JSON files or a JSONL file, run concurrently.

Every item stands alone: a file that is not JSON, is too large or too deeply
nested (the limits of ``flows.inputs``), or does not match the workflow's input
model fails with a message naming it, and the rest of the batch goes on. Used
by ``stepline run --input <folder|file.jsonl>`` and by the scheduled runs of
``stepline serve``.

Stopping (``cancel`` set, or Ctrl-C in the calling thread) starts no new
item; instances already running pause before their next step, so each ends
completed, needs_review or paused, and a replay resumes the paused ones.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from flows import orchestrator
from flows.inputs import (
    MAX_INPUT_BYTES,
    is_utf8_name,
    jsonl_lines,
    parse_json,
    read_file,
    shown_path,
    too_large,
)
from flows.instances import RunResult, check_workflow, interrupt, parse_input, run_workflow
from flows.local_server import ensure_prefect_api
from flows.results import discard_failure_result
from flows.running import orchestrator_down
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.errors import InputError, StepLineError

__all__ = [
    "MAX_ITEM_BYTES",
    "BatchItem",
    "BatchReport",
    "ItemOutcome",
    "parse_item",
    "read_items",
    "run_batch",
]

_log = logging.getLogger("stepline")

BATCH_RUN_FLOW = "stepline-run"
"""The flow of an ad hoc batch's one flow run (``stepline run`` on a folder or JSONL); a
scheduled batch's instances run inside its own ``stepline-batch`` flow run instead."""

MAX_ITEM_BYTES = MAX_INPUT_BYTES
"""The largest single input: the same for a batch item as for a single file or stdin."""

REJECTED = "rejected"
"""An item that never became an instance: unreadable, not JSON, too large, or the wrong shape."""
SKIPPED = "skipped"
"""An item whose exact bytes already have an instance of this workflow (``skip_seen``)."""
NOT_STARTED = "not_started"
"""An item the batch did not reach because it was stopped."""
CRASHED = "crashed"
"""An instance whose workflow raised (recorded on the instance as failed)."""
SUPERSEDED = "superseded"
"""An instance this process lost mid-run (judged dead and handed on): it stopped writing."""


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch, read but not yet validated."""

    source: str
    """Where it came from: the file, or ``file.jsonl:LINE``."""
    payload: Any = None
    error: str | None = None
    """Why it cannot run (unreadable, not JSON, too large); ``None`` when it was read."""
    digest: str | None = None
    """SHA-256 of its bytes, recorded on the instance; a watched folder skips digests it has run."""


@dataclass(frozen=True)
class ItemOutcome:
    item: BatchItem
    status: str
    """An instance status (completed, needs_review, paused, failed), or rejected / skipped /
    not_started / crashed."""
    instance_id: str | None = None
    failed_step: str | None = None
    failure_class: str | None = None
    message: str | None = None
    review_id: str | None = None

    @property
    def needs_attention(self) -> bool:
        return self.status not in ("completed", SKIPPED)


@dataclass
class BatchReport:
    outcomes: list[ItemOutcome] = field(default_factory=list)
    interrupted: bool = False

    def counts(self) -> Counter[str]:
        return Counter(outcome.status for outcome in self.outcomes)

    def needing_attention(self) -> list[ItemOutcome]:
        return [outcome for outcome in self.outcomes if outcome.needs_attention]


def parse_item(workflow: Workflow, item: BatchItem) -> BaseModel | ItemOutcome:
    """The item as the workflow's input model, or why it is rejected (unreadable, wrong shape)."""
    if item.error is not None:
        return ItemOutcome(item, REJECTED, message=item.error)
    try:
        return parse_input(workflow, item.payload, item.source)
    except InputError as exc:
        return ItemOutcome(item, REJECTED, message=exc.message)


def read_items(path: Path) -> list[BatchItem]:
    """The inputs in a folder (each file one JSON input; ``.jsonl`` files one per line) or JSONL file.

    Hidden files and subfolders of a folder are left alone, so processed or
    rejected files can be moved into a subfolder. Every item is read with the
    limits of ``flows.inputs``; one that breaks them, or whose file name is not
    UTF-8 (it could not be recorded), is an item with an error, not a failed batch.
    """
    if not is_utf8_name(path):
        raise InputError(
            f"{shown_path(path)} has a name that is not UTF-8; names are recorded as text: rename it"
        )
    try:
        if path.is_dir():
            return _read_folder(path)
        if not path.exists():
            raise InputError(
                f"input {shown_path(path)} does not exist; pass a folder of JSON files or a JSONL file"
            )
    except OSError as exc:
        raise InputError(f"cannot read {shown_path(path)}: {exc.strerror or exc}; check the path") from None
    return _read_jsonl(path)


def _read_folder(path: Path) -> list[BatchItem]:
    items: list[BatchItem] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith(".") or not child.is_file():
            continue
        if not is_utf8_name(child):
            shown = shown_path(child)
            error = f"file {shown} has a name that is not UTF-8; names are recorded as text: rename it"
            items.append(BatchItem(shown, error=error))
        elif child.suffix.lower() == ".jsonl":
            try:
                items.extend(_read_jsonl(child))
            except InputError as exc:  # this file fails alone
                items.append(BatchItem(str(child), error=exc.message))
        else:
            items.append(_read_file(child))
    return items


def _read_file(path: Path) -> BatchItem:
    source, where = str(path), f"file {shown_path(path)}"
    try:
        data = read_file(path, where, hint="it was moved while the batch was read")
    except InputError as exc:
        return BatchItem(source, error=exc.message)
    return _parse(source, where, data)


def _read_jsonl(path: Path) -> list[BatchItem]:
    items: list[BatchItem] = []
    try:
        with path.open("rb") as handle:
            for number, line, size in jsonl_lines(handle):
                source, where = f"{path}:{number}", f"line {number} of {shown_path(path)}"
                if line is None:
                    items.append(BatchItem(source, error=too_large(where, size).message))
                elif line.strip():
                    items.append(_parse(source, where, line.strip()))
    except OSError as exc:
        raise InputError(
            f"cannot read {shown_path(path)}: {exc.strerror or exc}; check that it is a readable file"
        ) from None
    return items


def _parse(source: str, where: str, data: bytes) -> BatchItem:
    digest = hashlib.sha256(data).hexdigest()
    try:
        return BatchItem(source, payload=parse_json(data, where), digest=digest)
    except InputError as exc:
        return BatchItem(source, error=exc.message, digest=digest)


def run_batch(
    workflow: Workflow,
    items: Sequence[BatchItem],
    runtime: Runtime,
    *,
    concurrency: int = 4,
    owner: str | None = None,
    skip_seen: bool = False,
    cancel: threading.Event | None = None,
    on_outcome: Callable[[ItemOutcome], None] | None = None,
    one_flow_run: bool | None = None,
) -> BatchReport:
    """Run every valid item as an instance of ``workflow``, at most ``concurrency`` at once.

    Items are validated first, so a bad one is reported at once and never
    becomes an instance. With ``skip_seen``, items whose bytes already have an
    instance of this workflow are skipped (a watched folder's memory).

    ``one_flow_run`` (default: ``[workers] batch_flow_runs``) runs every instance inside
    one Prefect flow run (the caller's, when it is one, as a scheduled run is; else a
    ``stepline-run`` run), each step still a task run of it; otherwise each instance
    is a flow run of its own, which costs Prefect about 8 API calls and caps a local
    server at a few hundred instances a minute.

    A ``KeyboardInterrupt`` in the calling thread stops the batch as ``cancel``
    does; a second one stops waiting, pauses the instances still running and
    re-raises, for a caller that must exit now.
    """
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, not {concurrency}")
    check_workflow(workflow, runtime)  # a catalog that cannot route fails the batch, not each item
    cancel = cancel or threading.Event()
    report = BatchReport()

    def record(outcome: ItemOutcome) -> None:
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    seen = set()
    if skip_seen:
        seen = runtime.store.seen_digests(workflow.name, [i.digest for i in items if i.digest])
    runnable: list[BatchItem] = []
    for item in items:
        if item.error is None and skip_seen and item.digest in seen:
            record(ItemOutcome(item, SKIPPED, message="an instance of this exact input exists already"))
            continue
        parsed = parse_item(workflow, item)
        if isinstance(parsed, ItemOutcome):
            record(parsed)
            continue
        if item.digest:
            seen.add(item.digest)
        runnable.append(item)

    in_flight: set[str] = set()  # instance ids, for a hard stop
    lock = threading.Lock()

    def run_one(item: BatchItem, *, inline: bool = False) -> ItemOutcome:
        created: list[str] = []

        def on_created(instance_id: str) -> None:
            created.append(instance_id)
            with lock:
                in_flight.add(instance_id)

        try:
            result = run_workflow(
                workflow,
                item.payload,
                runtime,
                owner=owner,
                where=item.source,
                source=item.source,
                source_digest=item.digest,
                cancel=cancel,
                on_created=on_created,
                inline=inline,
            )
        except StepLineError as exc:
            return ItemOutcome(item, CRASHED, instance_id=next(iter(created), None), message=exc.message)
        except Exception as exc:  # run_workflow recorded it on the instance as failed/unknown
            message = f"{type(exc).__name__}: {exc}"
            return ItemOutcome(item, CRASHED, instance_id=next(iter(created), None), message=message)
        finally:
            with lock:
                in_flight.difference_update(created)
        return _outcome(item, result)

    queue = list(reversed(runnable))  # popped from the end: input order
    if not runnable:
        return report
    ensure_prefect_api()
    runtime.apply_prefect_settings()  # before the batch's flow run: its heartbeat setting too
    if one_flow_run is None:
        one_flow_run = runtime.settings.workers.batch_flow_runs == "one"

    def hard_stop() -> None:
        """Start nothing more and pause what still runs, for a caller that must exit now."""
        cancel.set()
        with lock:
            stranded = sorted(in_flight)
        for instance_id in stranded:
            interrupt(runtime, instance_id)

    def interrupted() -> bool:
        """A Ctrl-C met while waiting on another thread: the first stops new work (keep waiting),
        a second stops at once (re-raise)."""
        if cancel.is_set():
            hard_stop()
            return False
        cancel.set()
        return True

    def dispatch(inline: bool) -> None:
        """Run the queue's items ``concurrency`` at a time; Ctrl-C as said above."""
        pending: set[Future[ItemOutcome]] = set()
        executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"batch-{workflow.name}")
        try:
            while queue or pending:
                while queue and len(pending) < concurrency and not cancel.is_set():
                    item = queue.pop()
                    if inline:  # each thread sees this flow run, so the steps are its task runs
                        context = contextvars.copy_context()
                        pending.add(executor.submit(context.run, run_one, item, inline=True))
                    else:
                        pending.add(executor.submit(run_one, item))
                if not pending:
                    break
                try:
                    done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:  # first Ctrl-C: finish what runs, start nothing new
                    if cancel.is_set():
                        raise  # already stopping: stop waiting
                    cancel.set()
                    continue
                for future in done:
                    record(future.result())
        except KeyboardInterrupt:  # second Ctrl-C: stop waiting; what still runs pauses now
            hard_stop()
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        executor.shutdown(wait=True)

    if one_flow_run:
        _in_one_flow_run(workflow.name, len(runnable), dispatch, cancel, interrupted)
    else:
        dispatch(False)
    if cancel.is_set():
        report.interrupted = True
        for item in reversed(queue):
            record(ItemOutcome(item, NOT_STARTED, message="the batch was stopped before this input"))
    return report


def _in_one_flow_run(
    name: str,
    count: int,
    dispatch: Callable[[bool], None],
    cancel: threading.Event,
    interrupted: Callable[[], bool],
) -> None:
    """``dispatch(inline=True)`` inside a flow run: the caller's if it is in one, else a new one.

    If Prefect cannot create the batch's flow run, the instances run as flow runs
    of their own instead, so each one that meets the same failure pauses as
    ``orchestrator`` and a replay resumes it, rather than the batch failing unstarted.
    Once every instance has ended, Prefect gets a grace period to record the flow run's
    end (``flows.orchestrator``): a dead server holds the batch's outcome no longer.
    """
    from prefect import flow
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        dispatch(True)
        return
    started = False
    dispatched = threading.Event()

    def body() -> None:
        nonlocal started
        started = True
        try:
            dispatch(True)
        finally:
            dispatched.set()

    batch = flow(
        name=BATCH_RUN_FLOW,
        flow_run_name=f"{name} x{count}",
        persist_result=False,
        on_failure=[discard_failure_result],
        validate_parameters=False,
    )(body)
    try:
        orchestrator.call(batch, dispatched, stop=cancel, on_interrupt=interrupted)
    except Exception as exc:
        if dispatched.is_set() and (isinstance(exc, orchestrator.Abandoned) or orchestrator_down(exc)):
            orchestrator.LOST.set()  # every instance ended; only Prefect's record of the run failed
            return
        if started or not orchestrator_down(exc):
            raise
        orchestrator.LOST.set()
        _log.warning("Prefect could not start the batch's flow run (%s); one flow run per instance", exc)
        dispatch(False)


def _outcome(item: BatchItem, result: RunResult) -> ItemOutcome:
    return ItemOutcome(
        item,
        SUPERSEDED if result.superseded else result.status.value,
        instance_id=result.instance_id,
        failed_step=result.failed_step,
        failure_class=result.failure_class,
        message=result.error,
        review_id=result.review_id,
    )
