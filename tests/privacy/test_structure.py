"""Where each step runs follows from its types and data flow, at run time as at load time.

A small workflow whose input marks ``message`` Personal: a step that renders it, or a plain
``str`` of unknown origin, reaches only the private server; a step given Literals and
Declassified text reaches the public one, and its attempt row says what cleared each field.
Checked at the wire: which server received which request.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from pydantic import BaseModel

from flows.engine import run_step
from flows.registry import WORKFLOWS
from flows.running import run_workflow
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.declassifiers import declassifier
from steps.definition import Prompt
from steps.errors import ConfigError
from steps.privacy import Code, Declassified
from storage.models import InstanceStatus
from tests.privacy.common import Draft, Request, Summary, step
from tests.servers import OpenAIServer, error, ok

pytestmark = pytest.mark.usefixtures("prefect_harness")

MESSAGE = "Hi, Maria Jensen here, +45 20 11 33 44. I was charged twice."


class Body(BaseModel):
    body: str


class Polish(BaseModel):
    body: Declassified


class Recap(BaseModel):
    summary: str


SUMMARISE = step("summarise", "$message", Request, Summary)  # renders Personal text: private
DRAFT = step("draft", "Topic $topic, re: $subject", Draft, Body)  # a Literal and cleared text
POLISH = step("polish", "$body", Polish, Body)  # a clean step's output: cleared
RECAP = step("recap", "$summary", Recap, Body)  # a personal step's output: private


def chain(*, derive: bool = False) -> Workflow:
    @flow(name="privacy-chain")
    def run(request: Request) -> Body:
        summary = run_step(SUMMARISE, request)
        draft: Body = run_step(DRAFT, Draft(topic=summary.topic, subject=request.subject))
        body = f"{draft.body}!" if derive else draft.body  # text made from cleared text is not cleared
        polished: Body = run_step(POLISH, Polish(body=body))
        run_step(RECAP, Recap(summary=summary.summary))
        return polished

    return Workflow("privacy-chain", "test", run, Request, Body, (SUMMARISE, DRAFT, POLISH, RECAP))


def tools(server: OpenAIServer) -> list[str]:
    """Which step each request was for (Instructor names the tool after the output model)."""
    return [r.body["messages"][0]["content"].removeprefix("Do ").rstrip(".") for r in server.requests]


def answer(body: dict[str, Any]) -> Any:
    if body["tools"][0]["function"]["name"] == "Summary":
        return ok({"topic": "billing", "summary": "Maria Jensen was charged twice"})
    return ok({"body": "We are sorry about the double charge."})


def subject_only() -> Workflow:
    """One step that takes the workflow's own input and renders only $subject (not Personal)."""
    by_subject = step("by-subject", "$subject", Request, Summary)

    @flow(name="subject-only")
    def run(request: Request) -> Summary:
        return run_step(by_subject, request)  # type: ignore[no-any-return]

    return Workflow("subject-only", "test", run, Request, Summary, (by_subject,))


def test_taint_follows_the_data_to_the_wire_and_never_into_prefect(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workflow = chain()
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    private_server.default = openai_server.default = answer

    result = run_workflow(workflow, {"subject": "Double charge", "message": MESSAGE}, runtime)

    assert result.status is InstanceStatus.COMPLETED, result.error
    assert tools(private_server) == ["summarise", "recap"]
    assert tools(openai_server) == ["draft", "polish"]
    public = json.dumps([r.body for r in openai_server.requests])
    assert "Maria" not in public
    assert "charged twice" not in public
    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    cleared = {a.step: (a.pii or {}).get("declassified") for a in detail.attempts}
    assert cleared == {
        "summarise": None,
        "draft": {"subject": "input field subject, not marked Personal"},
        "polish": {"body": "step draft, which saw no personal data"},
        "recap": None,
    }
    # Prefect's API never receives the instance's input: its flow run has no parameters.
    instance = runtime.store.get_instance(result.instance_id)
    assert instance is not None
    assert instance.flow_run_id is not None
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(instance.flow_run_id))
        of_it = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        task_runs = client.read_task_runs(flow_run_filter=of_it)
    assert flow_run.parameters == {}
    assert flow_run.name == f"privacy-chain-{result.instance_id[:8]}"
    assert {t.name.rsplit("-", 1)[0] for t in task_runs} == {"summarise", "draft", "polish", "recap"}
    stored = (flow_run.model_dump_json() + "".join(t.model_dump_json() for t in task_runs)).casefold()
    for secret in ("maria", "jensen", "20 11 33 44", "charged twice"):
        assert secret not in stored, secret


def test_text_derived_from_cleared_text_is_not_sent(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workflow = chain(derive=True)
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    private_server.default = openai_server.default = answer

    result = run_workflow(workflow, {"subject": "Double charge", "message": MESSAGE}, runtime)

    assert (result.status, result.failed_step, result.failure_class) == (
        InstanceStatus.PAUSED,
        "polish",
        "pii_blocked",
    )
    assert tools(openai_server) == ["draft"]  # polish was never sent
    assert result.error is not None
    assert "step 'polish' was not sent: $body must hold Declassified text" in result.error
    assert "sorry" not in result.error  # never the value


def test_a_private_step_pauses_rather_than_reach_a_public_model(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The private deployment is down: the public model is cheaper, up, and never asked."""
    workflow = chain()
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    private_server.default = error(503)
    openai_server.default = answer

    result = run_workflow(workflow, {"subject": "Double charge", "message": MESSAGE}, runtime)

    assert (result.status, result.failed_step, result.failure_class) == (
        InstanceStatus.PAUSED,
        "summarise",
        "unavailable",
    )
    assert openai_server.requests == []
    assert len(private_server.requests) == 3  # the first request and its two retries


def test_a_public_model_named_for_a_private_step_is_refused_before_anything_runs(
    runtime: Runtime, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaky = step("summarise", "$message", Request, Summary, fallbacks=("public-small",))

    @flow(name="leaky-chain")
    def run(request: Request) -> Summary:
        return run_step(leaky, request)  # type: ignore[no-any-return]

    workflow = Workflow("leaky-chain", "test", run, Request, Summary, (leaky,))

    with pytest.raises(ConfigError) as refused:
        run_workflow(workflow, {"subject": "s", "message": MESSAGE}, runtime)

    assert refused.value.message == (
        "step 'summarise' may use private models only (its prompt renders $message (personal: marked "
        "Personal)) but falls back to model 'public-small' on provider 'public', which is not private; "
        "name a private model there, or give the step only fields that cannot carry free text or "
        "Declassified text"
    )
    assert runtime.store.list_instances() == []
    assert openai_server.requests == []


def test_an_operator_prompt_that_renders_personal_text_moves_the_step_private(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workflow = subject_only()
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    private_server.default = openai_server.default = answer
    run_workflow(workflow, {"subject": "Double charge", "message": MESSAGE}, runtime)
    assert (len(openai_server.requests), len(private_server.requests)) == (1, 0)

    edited = Prompt(system="Do by-subject.", user="$subject\n\n$message")
    runtime.store.set_current_prompt(
        "by-subject", edited.system, edited.user, edited.content_hash, "ana", "add the message"
    )
    run_workflow(workflow, {"subject": "Double charge", "message": MESSAGE}, runtime)

    assert (len(openai_server.requests), len(private_server.requests)) == (1, 1)
    assert MESSAGE in private_server.requests[0].body["messages"][1]["content"]


def test_an_operator_is_told_when_a_prompt_edit_moves_a_step_private(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Saved from the TUI: the step now renders personal text, so it runs on private models only;
    with no private model in the catalog, the edit is refused and nothing saved."""
    from tui.actions import save_prompt

    workflow = subject_only()
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)

    saved = save_prompt("by-subject", "Do by-subject.", "$subject\n\n$message", "ana", None)

    assert saved.ok, saved.message
    assert saved.message.endswith(
        "uses it from its next run; it now runs on private models only: its prompt renders "
        "$message (personal: marked Personal)"
    )
    public_only = tmp_path / "public.toml"
    public_only.write_text(
        '[providers.public]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[models.m]\nprovider = "public"\nmodel = "m"\n'
    )
    monkeypatch.setenv("STEPLINE_CONFIG", str(public_only))

    refused = save_prompt("by-subject", "Do by-subject.", "$message", "ana", None)

    assert not refused.ok
    assert "needs a private provider" in refused.message
    assert refused.message.endswith("nothing saved")
    chosen = runtime.store.current_prompt("by-subject", fresh=True)
    assert chosen is not None
    assert chosen.template == "$subject\n\n$message"  # the first edit, not the refused one


InvoiceNumber = Annotated[str, Code("invoice-number", r"^INV-[0-9]{6}$")]


class InvoiceRef(BaseModel):
    number: InvoiceNumber


class Ack(BaseModel):
    number: InvoiceNumber
    note: Declassified


@declassifier("invoice-note", "a note about the invoice (a mistake, in the leaky case: it quotes it)")
def invoice_note(ref: InvoiceRef, leaky: bool) -> str:
    return f"about {ref.number}" if leaky else "a question about an invoice"


def invoice_ack(*, leaky: bool) -> Workflow:
    read = step("read-invoice", "$message", Request, InvoiceRef)  # private: renders the message
    ack = step("ack", "Invoice $number: $note", Ack, Body)  # a Code field and cleared text

    @flow(name="invoice-ack")
    def run(request: Request) -> Body:
        ref: InvoiceRef = run_step(read, request)
        return run_step(ack, Ack(number=ref.number, note=invoice_note(ref, leaky)))  # type: ignore[no-any-return]

    return Workflow("invoice-ack", "test", run, Request, Body, (read, ack), declassifiers=(invoice_note,))


@pytest.mark.parametrize("leaky", [False, True], ids=["typed", "cleared"])
def test_a_quoted_number_passes_in_a_typed_field_and_is_named_in_a_cleared_one(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    leaky: bool,
) -> None:
    """The customer quotes their invoice number: in a Code field it is validated by its type, so
    the guard leaves it alone; in text a declassifier cleared, the guard stops it and says which
    field and which declassifier."""
    workflow = invoice_ack(leaky=leaky)
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    private_server.default = ok({"number": "INV-999001"})
    openai_server.default = ok({"body": "Thanks, we are looking into it."})
    message = "Hello, Maria Jensen here. Invoice INV-999001 was charged twice last week, please check it."

    result = run_workflow(workflow, {"subject": "Invoice", "message": message}, runtime)

    if not leaky:
        assert result.status is InstanceStatus.COMPLETED, result.error
        assert "Invoice INV-999001: a question about an invoice" in json.dumps(openai_server.requests[0].body)
        return
    assert (result.status, result.failure_class) == (InstanceStatus.PAUSED, "pii_blocked")
    assert openai_server.requests == []
    assert result.error is not None
    assert "a number from input.message, in $note (cleared: declassifier invoice-note)" in result.error
    assert "999001" not in result.error
