"""0 bytes of personal data reach a public model, whatever the private model extracted.

customer-intake runs with its pii step on a private loopback server and its
other steps on a public one that logs every request body. The private model
extracts nothing at all, so everything the guard keeps out it found itself.
The check is at the wire: the bytes the public server received.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from pydantic import BaseModel, Field

from flows.customer_intake import WORKFLOW
from flows.engine import run_step
from flows.instances import run_workflow
from flows.registry import WORKFLOWS
from flows.runtime import Runtime
from flows.workflow import Workflow
from steps.definition import CLASSIFY, EXTRACT, Prompt, Sensitivity, Step
from steps.settings import load_settings
from storage.models import InstanceStatus
from tests.servers import OpenAIServer, Reply, ok

pytestmark = pytest.mark.usefixtures("prefect_harness")

CATALOG = """
[retry]
base_delay_s = 0.01

[providers.public]
kind = "openai"
base_url = "{public}"
api_key_env = "STEPLINE_TEST_OPENAI_KEY"

[providers.private]
kind = "openai_compatible"
base_url = "{private}"
private = true

[models.public-small]
provider = "public"
model = "gpt-small"
tier = "cheap"
structured_mode = "tools"
input_price = 0.1
output_price = 0.1

[models.private-small]
provider = "private"
model = "qwen-small"
tier = "cheap"
structured_mode = "tools"
input_price = 1.0
output_price = 1.0
"""

# Five people, five countries; each with what must never reach a public model.
RECORDS: dict[str, tuple[str, list[str]]] = {
    "germany": (
        "Hallo, hier ist Jürgen Schmidt, Lindenweg 3a, 80331 München. Meine IBAN "
        "DE89 3704 0044 0532 0130 00 wurde doppelt belastet. Geburtsdatum 04.07.1979. "
        "Meine Frau Anke hat auch schon angerufen. Grüße, Jürgen",
        [
            "Jürgen",
            "Schmidt",
            "Lindenweg 3a",
            "80331",
            "München",
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "04.07.1979",
            "Anke",
        ],
    ),
    "united-states": (
        "Hi, I'm Dana Whitfield, 1600 Pennsylvania Avenue, Washington DC 20500. SSN 536-22-1234. "
        "My card ending 4242 (4242 4242 4242 4242) was declined twice. My son Kyle called "
        "from 203.0.113.42 yesterday. Thanks, Dana",
        [
            "Dana",
            "Whitfield",
            "1600 Pennsylvania Avenue",
            "Washington",
            "20500",
            "536-22-1234",
            "536221234",
            "4242",
            "4242424242424242",
            "Kyle",
            "203.0.113.42",
        ],
    ),
    "united-kingdom": (
        "Hello, Priya Raman here, 221B Baker Street, London NW1 6XE. Passport 533380006, born "
        "12 March 1985. Phone 020 7946 0958. My brother Arjun set up the account. Thanks, Priya",
        [
            "Priya",
            "Raman",
            "221B Baker Street",
            "London",
            "NW1 6XE",
            "533380006",
            "12 March 1985",
            "020 7946 0958",
            "02079460958",
            "Arjun",
        ],
    ),
    "france": (
        "Bonjour, Camille Dubois, 12 rue de la Paix, 75002 Paris. Téléphone +33 1 42 68 53 00, "
        "carte se terminant par 0004. Ma fille Léa a reçu la facture. Merci, Camille",
        [
            "Camille",
            "Dubois",
            "rue de la Paix",
            "75002",
            "Paris",
            "+33 1 42 68 53 00",
            "142685300",
            "0004",
            "Léa",
        ],
    ),
    "spain": (
        "Hola, soy Lucía Fernández, Calle Mayor 5, 28013 Madrid. DNI 12345678Z, IBAN "
        "ES91 2100 0418 4502 0005 1332. Me conecto desde 2001:db8::8a2e:370:7334. "
        "Mi marido Javier pagó dos veces. Gracias, Lucía",
        [
            "Lucía",
            "Fernández",
            "Calle Mayor 5",
            "28013",
            "Madrid",
            "12345678Z",
            "ES91 2100 0418 4502 0005 1332",
            "ES9121000418450200051332",
            "2001:db8::8a2e:370:7334",
            "Javier",
        ],
    ),
}


@pytest.fixture
def runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, openai_server: OpenAIServer, private_server: OpenAIServer
) -> Iterator[Runtime]:
    catalog = tmp_path / "stepline.toml"
    catalog.write_text(CATALOG.format(public=openai_server.base_url, private=private_server.base_url))
    monkeypatch.setenv("STEPLINE_CONFIG", str(catalog))
    monkeypatch.setenv("STEPLINE_DATABASE_URL", f"sqlite:///{tmp_path / 'stepline.db'}")
    monkeypatch.setenv("STEPLINE_TEST_OPENAI_KEY", "sk-test-openai-0123456789")
    with Runtime.open(load_settings()) as opened:
        yield opened


def public_answers(body: dict[str, Any]) -> Reply:
    """The public model: triage, or a reply that greets whoever the first name placeholder is."""
    if body["tools"][0]["function"]["name"] == "RequestClass":
        return ok({"category": "billing", "urgency": "high"})
    placeholders = re.findall(r"\[NAME \d+\]", json.dumps(body["messages"]))
    greet = placeholders[-1] if placeholders else "[NAME]"
    return ok({"subject": "About your payment", "body": f"Dear {greet}, we are looking into it."})


def forms(value: str) -> set[str]:
    """Every way a value could be written into a JSON request body."""
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


@pytest.mark.parametrize("country", list(RECORDS))
def test_no_byte_of_personal_data_reaches_a_public_model(
    runtime: Runtime, openai_server: OpenAIServer, private_server: OpenAIServer, country: str
) -> None:
    message, secrets = RECORDS[country]
    private_server.default = ok({"name": None, "email": None, "phone": None, "account_id": None})
    openai_server.default = public_answers

    result = run_workflow(WORKFLOW, {"channel": "email", "message": message}, runtime)

    assert result.status is InstanceStatus.COMPLETED, result.error
    assert len(private_server.requests) == 1
    assert len(openai_server.requests) == 2  # triage and the reply draft, both on the public model
    received = b"".join(r.raw for r in openai_server.requests).decode("utf-8").casefold()
    for secret in secrets:
        for form in forms(secret):
            assert form.casefold() not in received, f"{secret!r} reached the public model"
    # The draft comes back with the real name, put back here.
    assert result.output is not None
    body = result.output.reply.body  # type: ignore[attr-defined]
    assert "[NAME" not in body
    assert any(name in body for name in secrets), body
    # Every block is recorded locally, by kind and count, never the value.
    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    public = [a for a in detail.attempts if a.model_id == "public-small"]
    assert all(a.pii and sum(a.pii["redacted"].values()) > 0 for a in public)
    recorded = json.dumps([a.pii for a in public])
    assert not any(secret.casefold() in recorded.casefold() for secret in secrets)
    assert not any(secret in json.dumps([a.request_messages for a in public]) for secret in secrets)


class Reference(BaseModel):
    text: str


class Label(BaseModel):
    label: str = Field(
        max_length=40,
        description="A label, e.g. the payer's account DE89 3704 0044 0532 0130 00",  # a real IBAN
    )


def leaky_schema_workflow(fallbacks: tuple[str, ...]) -> Workflow:
    """A pii step, then a public step whose output schema carries an IBAN: nothing can redact it."""
    extract: Step[Reference, Reference] = Step(
        name="extract-reference",
        kind=EXTRACT,
        sensitivity=Sensitivity.PII,
        prompt=Prompt(system="Copy the reference.", user="$text"),
        input_model=Reference,
        output_model=Reference,
    )
    label: Step[Reference, Label] = Step(
        name="label-reference",
        kind=CLASSIFY,
        prompt=Prompt(system="Label the reference.", user="$text"),
        input_model=Reference,
        output_model=Label,
        model="public-small",
        fallbacks=fallbacks,
    )

    @flow(name="leaky-schema")
    def leaky(reference: Reference) -> Label:
        return run_step(label, run_step(extract, reference))

    return Workflow("leaky-schema", "test", leaky, Reference, Label, (extract, label))


@pytest.mark.parametrize("fallbacks", [(), ("private-small",)], ids=["no-fallback", "private-fallback"])
def test_what_cannot_be_redacted_is_not_sent(
    runtime: Runtime,
    openai_server: OpenAIServer,
    private_server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    fallbacks: tuple[str, ...],
) -> None:
    workflow = leaky_schema_workflow(fallbacks)
    monkeypatch.setitem(WORKFLOWS, workflow.name, workflow)
    private_server.default = lambda body: ok(
        {"text": "order 7"} if "Reference" in json.dumps(body["tools"]) else {"label": "order"}
    )

    result = run_workflow(workflow, {"text": "order 7"}, runtime)

    assert openai_server.requests == []  # failed closed: not one byte sent
    detail = runtime.store.instance_detail(result.instance_id)
    assert detail is not None
    blocked = [a for a in detail.attempts if a.model_id == "public-small"]
    assert [(a.failure_class, (a.pii or {}).get("blocked")) for a in blocked] == [
        ("pii_blocked", {"iban": 1})
    ]
    assert "personal data was still in the request" in (blocked[0].error_message or "")
    if fallbacks:
        assert result.status is InstanceStatus.COMPLETED  # the private model answered instead
    else:
        assert (result.status, result.failure_class) == (InstanceStatus.PAUSED, "pii_blocked")
        assert "route the step to a private model" in blocked_action()


def blocked_action() -> str:
    from steps.errors import FailureClass

    return FailureClass.PII_BLOCKED.behaviour.action


def test_the_input_is_not_copied_into_prefect(
    runtime: Runtime, openai_server: OpenAIServer, private_server: OpenAIServer
) -> None:
    """Prefect's API never receives the instance's input: its flow run has no parameters."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    message, secrets = RECORDS["germany"]
    private_server.default = ok({"name": None, "email": None, "phone": None, "account_id": None})
    openai_server.default = public_answers

    result = run_workflow(WORKFLOW, {"channel": "email", "message": message}, runtime)

    assert result.status is InstanceStatus.COMPLETED, result.error
    instance = runtime.store.get_instance(result.instance_id)
    assert instance is not None
    assert instance.flow_run_id is not None
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(instance.flow_run_id))
        of_it = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        task_runs = client.read_task_runs(flow_run_filter=of_it)
    assert flow_run.parameters == {}
    assert flow_run.name == f"customer-intake-{result.instance_id[:8]}"
    assert len(task_runs) == 3  # one per step, as before
    # Named after their steps (Prefect's own suffix): the flow run already names the instance.
    assert {t.name.rsplit("-", 1)[0] for t in task_runs} == {step.name for step in WORKFLOW.steps}
    stored = (flow_run.model_dump_json() + "".join(t.model_dump_json() for t in task_runs)).casefold()
    for secret in secrets:
        for form in forms(secret):
            assert form.casefold() not in stored, f"{secret!r} reached Prefect's API"
