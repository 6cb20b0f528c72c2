"""The chaos suite's invariants, checked from outside: the database's rows and the server's log.

Everything here works on plain rows read by another connection (or process)
and on what the provider server recorded, never on the runtime's own objects.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.servers import OpenAIServer, Reply, ok

TOKEN = re.compile(r"doc-\d{5}")
STEPS = {"Invoice": "extract-invoice", "Category": "categorize"}

INSTANCE_SQL = "select id, status, failure_class, input, generation from workflow_instance"
STEP_RUN_SQL = 'select instance_id, step, "index", generation, status, finished_at from step_run'
ATTEMPT_SQL = (
    "select a.instance_id, a.step, a.failure_class, a.finished_at, a.request_messages, r.generation, "
    "a.started_at "
    "from attempt a join step_run r on r.id = a.step_run_id"
)


def token_of(text: str) -> str:
    found = TOKEN.search(text)
    assert found is not None, text[:200]
    return found.group(0)


def answer(body: dict[str, Any]) -> Reply:
    """A valid answer for either step; the vendor carries the input's token to the next step."""
    tool = str(body["tools"][0]["function"]["name"])
    if tool == "Invoice":
        return ok({"vendor": token_of(str(body["messages"])), "total": 12.5, "currency": "EUR"})
    return ok({"label": "goods"})


def _when(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass
class Verdict:
    """What the invariants found; ``problems`` must be empty."""

    instances: int = 0
    requests: int = 0
    attempts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    resent: int = 0
    crossed: int = 0
    """Requests a frozen worker had recorded and begun to send before it lost the instance, which
    reached the provider only after it woke (their rows are marked; their answers never applied)."""
    cut_off: int = 0
    """Requests whose process was killed while their body was on the wire: the server got a
    partial body (not JSON) and answered 400, so no model saw them; their rows were written."""
    problems: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(message)


def check(
    server: OpenAIServer,
    instances: list[tuple[Any, ...]],
    step_runs: list[tuple[Any, ...]],
    attempts: list[tuple[Any, ...]],
    expected_inputs: int,
) -> Verdict:
    """Every invariant of the chaos suite, over rows read after the storm and the server's log."""
    verdict = Verdict(instances=len(instances), requests=len(server.requests), attempts=len(attempts))
    token_of_instance: dict[str, str] = {}
    for instance_id, status, _failure, input_, _generation in instances:
        token_of_instance[instance_id] = token_of(str(input_))
        verdict.statuses[status] += 1
    tokens = Counter(token_of_instance.values())
    # 0 lost, none twice: every input became exactly one instance.
    if len(tokens) != expected_inputs:
        verdict.fail(f"{expected_inputs} inputs but {len(tokens)} instances' inputs")
    for token, count in tokens.items():
        if count > 1:
            verdict.fail(f"input {token} has {count} instances")
    # 0 stuck: every instance completed (after the final replays).
    for instance_id, status, failure, _input, _generation in instances:
        if status != "completed":
            verdict.fail(f"instance {instance_id[:12]} is {status} ({failure})")
    # 0 open rows.
    for instance_id, step, _index, _generation, status, _finished in step_runs:
        if status == "running":
            verdict.fail(f"step run {step} of {instance_id[:12]} left running")
    for instance_id, step, _failure, finished, _messages, _generation, _started in attempts:
        if finished is None:
            verdict.fail(f"attempt at {step} of {instance_id[:12]} left in flight")

    # Requests against attempt rows, per (input, step): never a request without its row; a row
    # without a request only where the process died between writing it and sending it.
    requests: dict[tuple[str, str], list[float]] = defaultdict(list)
    for request in server.requests:
        if not isinstance(request.body, dict):
            declared = int(request.headers.get("content-length", "-1"))
            if len(request.raw) < declared:  # the sender died mid-body
                verdict.cut_off += 1
            else:
                verdict.fail(f"a request the server could not read: {request.raw[:80]!r}")
            continue
        step = STEPS[str(request.body["tools"][0]["function"]["name"])]
        requests[(token_of(str(request.body["messages"])), step)].append(request.timestamp)
    rows: Counter[tuple[str, str]] = Counter()
    unanswered: Counter[tuple[str, str]] = Counter()
    lost_per_generation: Counter[tuple[str, int]] = Counter()
    handed_over: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for instance_id, step, failure, _finished, messages, generation, started in attempts:
        key = (token_of_instance.get(instance_id) or token_of(str(messages)), step)
        rows[key] += 1
        if failure in ("worker_lost", "superseded", "storage", "interrupted"):
            unanswered[key] += 1
            lost_per_generation[(instance_id, generation)] += 1
        if failure == "superseded":  # a woken worker's request, answered after the hand-over
            handed_over[(instance_id, step)].append(_when(started))
    for key in set(requests) | set(rows):
        sent, written = len(requests.get(key, [])), rows[key]
        if sent > written:
            verdict.fail(f"{key}: {sent} requests reached the provider but only {written} attempt rows exist")
        if written - sent > unanswered[key]:
            verdict.fail(f"{key}: {written} rows for {sent} requests, {unanswered[key]} of them unanswered")
        verdict.resent += unanswered[key]

    # 0 provider calls for a committed step: no request after its step run was completed.
    runs_by_key: dict[tuple[str, str, int], list[tuple[int, str, datetime | None]]] = defaultdict(list)
    for instance_id, step, index, generation, status, finished in step_runs:
        runs_by_key[(instance_id, step, index)].append(
            (generation, status, _when(finished) if finished is not None else None)
        )
    for (instance_id, step, index), runs in runs_by_key.items():
        done = [when for _g, status, when in runs if status == "completed" and when is not None]
        committed = min(done) if done else None
        if committed is not None:
            token = token_of_instance[instance_id]
            late = [t for t in requests.get((token, step), []) if t > committed.timestamp() + 0.001]
            # A request recorded before the hand-over but still being sent by a frozen worker can
            # arrive after the commit; each such row excuses one late arrival, nothing else does.
            crossing = [w for w in handed_over.get((instance_id, step), []) if w < committed]
            verdict.crossed += min(len(late), len(crossing))
            if len(late) > len(crossing):
                verdict.fail(f"{token} {step}: {len(late)} request(s) after the step was committed")
        # Exactly one completed run per (step, index) of a completed instance.
        if len([r for r in runs if r[1] == "completed"]) != 1:
            verdict.fail(f"{instance_id[:12]} {step}[{index}]: {[r[1] for r in runs]}")
    steps_of: dict[str, set[str]] = defaultdict(set)
    for instance_id, step, _index, _generation, status, _finished in step_runs:
        if status == "completed":
            steps_of[instance_id].add(step)
    for instance_id, status, *_ in instances:
        if status == "completed" and steps_of[instance_id] != set(STEPS.values()):
            verdict.fail(f"{instance_id[:12]} completed with steps {sorted(steps_of[instance_id])}")
    # At most one request re-sent per crash: a run (generation) has one request in flight at a time.
    for (instance_id, generation), lost in lost_per_generation.items():
        if lost > 1:
            verdict.fail(f"{instance_id[:12]} generation {generation}: {lost} unanswered requests")
    return verdict


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s (n={len(ordered)})"
