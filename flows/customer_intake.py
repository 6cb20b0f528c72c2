"""customer-intake: a request that carries personal data, triaged without leaking it.

    extract-contact (pii, private models only)
        -> redact locally (the extracted values, plus any e-mail or phone number left)
    classify-request (sees only the redacted text)
    draft-reply      (sees only the redacted text; greets "[NAME]")
        -> re-attach the personal details locally

The personal details never leave the private model and this process: the
steps that may run on public models only see placeholders.
"""

from __future__ import annotations

import re
from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from flows.engine import run_step
from flows.workflow import Workflow
from steps.definition import CLASSIFY, EXTRACT, GENERATE, Prompt, Sensitivity, Step, Tier

__all__ = ["WORKFLOW", "Redaction", "customer_intake", "reattach", "redact"]


class IntakeRequest(BaseModel):
    channel: Literal["email", "chat", "form"] = "email"
    message: str = Field(min_length=10, max_length=5000)


class PersonDetails(BaseModel):
    name: str | None = Field(default=None, max_length=80, description="The customer's full name")
    email: str | None = Field(default=None, max_length=120)
    phone: str | None = Field(default=None, max_length=40)
    account_id: str | None = Field(default=None, max_length=40, description="Customer or account number")


class RedactedRequest(BaseModel):
    channel: str
    text: str


class RequestClass(BaseModel):
    category: Literal["billing", "technical", "account", "other"]
    urgency: Literal["low", "normal", "high"]


class ReplyRequest(BaseModel):
    text: str
    category: str
    urgency: str


class DraftReply(BaseModel):
    subject: str = Field(min_length=1, max_length=120)
    body: str = Field(min_length=1, max_length=1500, description="Greets the customer as [NAME]")


class IntakeResult(BaseModel):
    person: PersonDetails
    category: str
    urgency: str
    reply: DraftReply


_KINDS = {"name": "NAME", "email": "EMAIL", "phone": "PHONE", "account_id": "ACCOUNT"}
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d ()./-]{6,}\d")


class Redaction(BaseModel):
    """Redacted text plus, kept in this process only, what each placeholder stands for."""

    text: str
    originals: dict[str, str]


def redact(text: str, person: PersonDetails) -> Redaction:
    """Replace every extracted value, then any e-mail or phone number the model missed."""
    originals: dict[str, str] = {}

    def hide(kind: str, value: str, current: str) -> str:
        placeholder = next(
            (p for p, v in originals.items() if v.lower() == value.lower()),
            f"[{kind}]" if f"[{kind}]" not in originals else f"[{kind} {len(originals) + 1}]",
        )
        originals[placeholder] = value
        return re.sub(re.escape(value), placeholder, current, flags=re.IGNORECASE)

    for field, kind in _KINDS.items():
        value = getattr(person, field)
        if value and value.strip():
            text = hide(kind, value.strip(), text)
    for kind, pattern in (("EMAIL", _EMAIL), ("PHONE", _PHONE)):
        for found in dict.fromkeys(pattern.findall(text)):  # distinct, in order
            text = hide(kind, found, text)
    return Redaction(text=text, originals=originals)


def reattach(reply: DraftReply, redaction: Redaction) -> DraftReply:
    """Put the real details back into the draft, here, after every model call."""
    subject, body = reply.subject, reply.body
    names = {"[NAME]": "customer"}  # a greeting without a known name
    for placeholder, value in {**names, **redaction.originals}.items():
        subject = subject.replace(placeholder, value)
        body = body.replace(placeholder, value)
    return DraftReply(subject=subject, body=body)


extract_contact: Step[IntakeRequest, PersonDetails] = Step(
    name="extract-contact",
    kind=EXTRACT,
    tier=Tier.CHEAP,
    sensitivity=Sensitivity.PII,
    input_model=IntakeRequest,
    output_model=PersonDetails,
    prompt=Prompt(
        system=(
            "Extract the customer's contact details from their message: name, email, phone and "
            "account_id. Use null for anything the message does not contain."
        ),
        user="$message",
    ),
)

classify_request: Step[RedactedRequest, RequestClass] = Step(
    name="classify-request",
    kind=CLASSIFY,
    tier=Tier.CHEAP,
    sensitivity=Sensitivity.INTERNAL,
    input_model=RedactedRequest,
    output_model=RequestClass,
    prompt=Prompt(
        system=(
            "Classify a customer request: category (billing, technical, account or other) and "
            "urgency (low, normal or high). Personal details are replaced by placeholders."
        ),
        user="Channel: $channel\n\n$text",
    ),
)

draft_reply: Step[ReplyRequest, DraftReply] = Step(
    name="draft-reply",
    kind=GENERATE,
    tier=Tier.CHEAP,
    sensitivity=Sensitivity.INTERNAL,
    input_model=ReplyRequest,
    output_model=DraftReply,
    prompt=Prompt(
        system=(
            "Draft a short, friendly first reply to the customer: a subject and a body that "
            "greets them as [NAME]. Do not invent personal details."
        ),
        user="Category: $category, urgency: $urgency\n\nTheir message:\n$text",
    ),
)


@flow(name="customer-intake", log_prints=False)
def customer_intake(request: IntakeRequest) -> IntakeResult:
    person = run_step(extract_contact, request)
    redacted = redact(request.message, person)
    triage = run_step(classify_request, RedactedRequest(channel=request.channel, text=redacted.text))
    draft = run_step(
        draft_reply, ReplyRequest(text=redacted.text, category=triage.category, urgency=triage.urgency)
    )
    return IntakeResult(
        person=person, category=triage.category, urgency=triage.urgency, reply=reattach(draft, redacted)
    )


WORKFLOW = Workflow(
    name="customer-intake",
    description="Extract contact details privately, triage and draft a reply on redacted text.",
    flow=customer_intake,
    input_model=IntakeRequest,
    output_model=IntakeResult,
    steps=(extract_contact, classify_request, draft_reply),
)
