"""customer-intake on its samples: personal data stays on private models and in this process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.customer_intake import WORKFLOW, IntakeResult, PersonDetails
from flows.instances import run_workflow
from flows.runtime import Runtime
from storage.models import InstanceStatus
from tests.servers import AnthropicServer, OpenAIServer, Reply, ok

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


def private_model(person: PersonDetails) -> Callable[[dict[str, Any]], Reply]:
    def answer(body: dict[str, Any]) -> Reply:
        if body["tools"][0]["function"]["name"] == "PersonDetails":
            return ok(person.model_dump())
        return ok({"category": "billing", "urgency": "high", "topic": "double charge"})

    return answer


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_only_the_draft_reaches_a_public_model_and_it_comes_back_with_the_real_name(
    make_runtime: Callable[[], Runtime],
    openai_server: OpenAIServer,
    anthropic_server: AnthropicServer,
    private_server: OpenAIServer,
    sample: Path,
) -> None:
    person = PEOPLE[sample.name]
    private_server.default = private_model(person)
    openai_server.default = ok({"subject": "About your charge", "body": "Dear [NAME], we are on it."})
    runtime = make_runtime()

    result = run_workflow(WORKFLOW, json.loads(sample.read_text()), runtime)

    assert result.status is InstanceStatus.COMPLETED, result.error
    assert len(private_server.requests) == 2  # extract-contact and triage-request: they read the message
    assert len(openai_server.requests) == 1  # draft-reply: Literals and a placeholder
    assert anthropic_server.requests == []
    public = json.dumps([r.body for r in openai_server.requests])
    for value in person.model_dump().values():
        for part in (value or "").split():  # each word or number group of 4+ characters
            if len(part) <= 3:
                continue
            assert part not in public, f"{part!r} reached a public server"
    assert isinstance(result.output, IntakeResult)
    assert result.output.reply.body == f"Dear {person.name}, we are on it."  # put back, here
    assert (result.output.category, result.output.topic) == ("billing", "double charge")


def test_without_a_name_the_greeting_is_generic(
    make_runtime: Callable[[], Runtime], openai_server: OpenAIServer, private_server: OpenAIServer
) -> None:
    private_server.default = private_model(PersonDetails())
    openai_server.default = ok({"subject": "Hello", "body": "Dear [NAME], we will call [PHONE]."})

    result = run_workflow(WORKFLOW, {"message": "My invoice is wrong, please check."}, make_runtime())

    assert isinstance(result.output, IntakeResult)
    assert result.output.reply.body == "Dear customer, we will call your phone number."
