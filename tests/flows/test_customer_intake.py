"""customer-intake: personal data stays on private models and in this process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.customer_intake import WORKFLOW, DraftReply, PersonDetails, reattach, redact
from flows.instances import run_workflow
from flows.runtime import Runtime
from storage.models import InstanceStatus
from tests.servers import AnthropicServer, OpenAIServer, ok

pytestmark = pytest.mark.usefixtures("prefect_harness")

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples" / "intake").glob("*.json"))
PEOPLE = {
    "billing-dispute.json": PersonDetails(
        name="Maria Jensen", email="maria.jensen@example.org", phone="+45 20 11 33 44", account_id="AC-20931"
    ),
    "login-problem.json": PersonDetails(
        name="Tom Okafor", email="tom.okafor@example.com", account_id="55-1872"
    ),
    "address-change.json": PersonDetails(name="Li Wei", phone="0151 2345 6789", account_id="LW-7730"),
}


def test_redaction_removes_extracted_values_and_stray_contacts() -> None:
    person = PersonDetails(name="Maria Jensen")  # the model missed the e-mail and the phone
    text = "Maria Jensen here, mail maria@example.org or call +45 20 11 33 44."
    redaction = redact(text, person)
    assert redaction.text == "[NAME] here, mail [EMAIL] or call [PHONE]."
    assert redaction.originals == {
        "[NAME]": "Maria Jensen",
        "[EMAIL]": "maria@example.org",
        "[PHONE]": "+45 20 11 33 44",
    }
    draft = DraftReply(subject="Re: [NAME]", body="Dear [NAME], we will call [PHONE].")
    assert reattach(draft, redaction).body == "Dear Maria Jensen, we will call +45 20 11 33 44."


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_no_personal_field_reaches_a_public_server(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    private_server: OpenAIServer,
    sample: Path,
) -> None:
    person = PEOPLE[sample.name]
    private_server.default = ok(person.model_dump())  # the private model extracts the details
    openai_server.default = lambda body: ok(
        {"category": "billing", "urgency": "normal"}
        if body["tools"][0]["function"]["name"] == "RequestClass"
        else {"subject": "About your request", "body": "Dear [NAME], we are on it."}
    )
    runtime = make_runtime()

    result = run_workflow(WORKFLOW, json.loads(sample.read_text()), runtime)

    assert result.status is InstanceStatus.COMPLETED
    assert len(private_server.requests) == 1  # only the pii step ran there
    assert len(openai_server.requests) == 2
    assert anthropic_server.requests == []
    public = json.dumps([r.body for r in openai_server.requests])
    for value in person.model_dump().values():
        if value:
            assert value not in public, f"{value!r} reached a public server"
            for part in value.split():
                if len(part) > 3:
                    assert part not in public, f"{part!r} reached a public server"
    # Re-attached locally, after every model call.
    assert result.output is not None
    assert result.output.reply.body.startswith(f"Dear {person.name},")  # type: ignore[attr-defined]
