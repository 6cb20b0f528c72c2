"""Nothing of an instance holding personal data reaches Prefect's records, whatever way it fails.

Each instance runs as a flow run of its own (each step a task run) on the session's Prefect
server, and fails one way: the private model refuses, is cut off, or answers what does not fit
the schema; a public request is blocked; the flow itself raises. Every answer quotes the
record's personal data. Then Prefect's own database is read directly (every text column of
every table: flow and task runs, their states, events, logs, artifacts), after its event and
log workers are drained and its event persister has caught up, together with any result file
Prefect wrote: none of the planted values is anywhere. A control run of the same failure in a
workflow that declares no personal data shows the search finds them when they are there.
"""

from __future__ import annotations

import re
import sqlite3
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from pydantic import BaseModel

from flows.customer_intake import WORKFLOW, IntakeRequest, PersonDetails, extract_contact
from flows.engine import run_step
from flows.registry import WORKFLOWS
from flows.running import run_workflow
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.declassifiers import declassifier
from steps.definition import CLASSIFY, Prompt, Step
from steps.privacy import Declassified
from storage.models import InstanceStatus, WorkflowInstance
from tests.privacy.corpus import Record, forms, personal_records
from tests.servers import OpenAIServer, Reply, ok, refusal, truncated

pytestmark = pytest.mark.usefixtures("prefect_harness")

RECORDS = [r for r in personal_records() if r.style in ("plain", "lowercase")][:4]  # en, ja, pl... in turn


# Prefect's records ----------------------------------------------------------------------------


def prefect_database() -> Path:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url.startswith("sqlite"), url
    return Path(url.split("///", 1)[1])


def prefect_rows() -> list[str]:
    """Every row of every table of Prefect's database, read-only: its text values, joined."""
    connection = sqlite3.connect(f"file:{prefect_database()}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = []
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 (names from the schema)
                texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row]
                found.append("\x1f".join(v for v in texts if isinstance(v, str)))
        return found
    finally:
        connection.close()


def settled(flow_run_id: str, *, before: set[str], timeout: float = 30.0) -> list[str]:
    """The rows Prefect wrote since ``before``, once its workers are drained and the flow run's
    failure events and logs are in its database (the event persister writes them seconds later)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    while True:
        rows = [row for row in prefect_rows() if row not in before]
        if any("prefect.flow-run.Failed" in row and flow_run_id in row for row in rows):
            return rows  # its logs were posted as the workers drained, before it ended
        assert time.monotonic() < deadline, "Prefect did not record the failure in time"
        time.sleep(0.5)


LATIN_WORD = r"(?:(?![\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af])\w)"


def planted_in(rows: list[str], record: Record) -> list[tuple[str, str]]:
    """(kind, form) of every planted value of ``record`` found in ``rows``."""
    texts = [" ".join(unicodedata.normalize("NFKC", r).casefold().split()) for r in rows]
    runs = [re.sub(r"\D", "", run) for t in texts for run in re.findall(r"\d(?:[ .\-/()]*\d)*", t)]
    found = []
    for kind, written in record.planted.items():
        for form in forms(kind, written, record.original[kind]):
            if form.isdigit():
                hit = any(form in run for run in runs)
            elif re.search(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", form):
                hit = len(form) >= 2 and any(form in t for t in texts)
            else:
                pattern = re.compile(rf"(?<!{LATIN_WORD}){re.escape(form)}(?!{LATIN_WORD})")
                hit = len(form) >= 4 and any(pattern.search(t) for t in texts)  # Prefect's own words
            if hit:
                found.append((kind, form))
    return found


def stored_results() -> set[Path]:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    folder = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    return set(folder.rglob("*")) if folder.exists() else set()


# How each run fails ---------------------------------------------------------------------------


def quoting(record: Record) -> str:
    """A model's answer that quotes every planted value of the record."""
    return " / ".join(record.planted.values())


def extract_answers(record: Record, how: str) -> Callable[[dict[str, Any]], Reply]:
    def answer(body: dict[str, Any]) -> Reply:
        if how == "refused":
            return refusal(f"I will not process the personal data of {quoting(record)}.")
        if how == "truncated":
            return truncated('{"name": "' + quoting(record)[:60])
        assert how == "schema_invalid"
        return ok({"name": quoting(record), "email": record.message})  # far past max_length

    return answer


class Greeting(BaseModel):
    customer: Declassified


class Line(BaseModel):
    text: str


@declassifier("first-word", "the first word of the extracted name (a mistake: it is personal)")
def first_word(person: PersonDetails) -> str:
    return (person.name or "").split()[0]


greet: Step[Greeting, Line] = Step(
    name="greet",
    kind=CLASSIFY,
    input_model=Greeting,
    output_model=Line,
    prompt=Prompt(system="Write a one-line greeting.", user="Greet $customer."),
)


def leaky_flow(*, raise_after: bool) -> Workflow:
    """customer-intake's extraction, then a public step given a declassifier's mistake, or a
    flow that raises with the personal data in its message."""

    @flow(name="leaky-intake")
    def leaky(request: IntakeRequest) -> Line:
        person = run_step(extract_contact, request)
        if raise_after:
            raise ValueError(f"cannot file the request of {person.name} ({person.email})")
        return run_step(greet, Greeting(customer=first_word(person)))

    return Workflow(
        "leaky-intake",
        "test",
        leaky,
        IntakeRequest,
        Line,
        (extract_contact, greet),
        declassifiers=(first_word,),
    )


@pytest.mark.parametrize(
    ("how", "record"),
    [
        ("refused", RECORDS[0]),
        ("truncated", RECORDS[1]),
        ("schema_invalid", RECORDS[2]),
        ("pii_blocked", RECORDS[3]),
        ("crashed", RECORDS[0]),
    ],
    ids=lambda value: value if isinstance(value, str) else value.locale,
)
def test_prefect_holds_none_of_it(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    record: Record,
) -> None:
    workflow = WORKFLOW
    if how in ("pii_blocked", "crashed"):
        workflow = leaky_flow(raise_after=how == "crashed")
        monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
        private_server.default = ok(record.person)
    else:
        private_server.default = extract_answers(record, how)
    openai_server.default = ok({"text": "Hello!"})
    stored, before = stored_results(), set(prefect_rows())

    if how == "crashed":  # the workflow's own exception: recorded, then raised to the caller
        with pytest.raises(ValueError, match="cannot file the request"):
            run_workflow(workflow, record.payload, runtime)
        (found,) = runtime.store.list_instances()
        assert (found.status, found.failure_class) == ("failed", "unknown")
        instance: WorkflowInstance | None = found
    else:
        result = run_workflow(workflow, record.payload, runtime)
        expected = {
            "refused": InstanceStatus.NEEDS_REVIEW,
            "truncated": InstanceStatus.NEEDS_REVIEW,
            "schema_invalid": InstanceStatus.NEEDS_REVIEW,
            "pii_blocked": InstanceStatus.PAUSED,
        }[how]
        assert (result.status, result.failure_class) == (expected, how), result.error
        instance = runtime.store.get_instance(result.instance_id)
    assert openai_server.requests == []  # a block is never sent
    # Stepline's own store keeps the whole story.
    assert instance is not None
    assert instance.flow_run_id is not None
    assert instance.error is not None
    assert "stepline show" not in instance.error
    if how == "crashed":
        assert (record.person["name"] or "") in instance.error
    # Prefect's: the class, the step, the attempt; never the text.
    rows = settled(instance.flow_run_id, before=before)
    assert planted_in(rows, record) == []
    assert any(f"failed: {how}" in row or "Withheld" in row for row in rows)  # what Prefect was told
    assert stored_results() == stored  # no result or exception pickled to Prefect's storage


def test_the_search_finds_what_prefect_was_given(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: the same refusal in a workflow that declares no personal data reaches Prefect's
    records as it is, and the search finds it there."""

    class Request(BaseModel):
        channel: str = "email"
        message: str

    plain_extract: Step[Request, PersonDetails] = Step(
        name="extract-plain",
        kind=extract_contact.kind,
        input_model=Request,
        output_model=PersonDetails,
        prompt=extract_contact.prompt,
    )

    @flow(name="plain-intake")
    def plain(request: Request) -> PersonDetails:
        return run_step(plain_extract, request)

    workflow = Workflow("plain-intake", "test", plain, Request, PersonDetails, (plain_extract,))
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    record = RECORDS[0]
    private_server.default = openai_server.default = extract_answers(record, "refused")
    before = set(prefect_rows())

    result = run_workflow(workflow, record.payload, runtime)

    assert result.failure_class == "refused"
    instance = runtime.store.get_instance(result.instance_id)
    assert instance is not None
    assert instance.flow_run_id is not None
    assert planted_in(settled(instance.flow_run_id, before=before), record) != []
