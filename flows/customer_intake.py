"""customer-intake: a request that carries personal data, triaged without letting any of it out.

    extract-contact  private models only (pii)        message -> name, e-mail, phone, account
    triage-request   private models only (renders     message -> category, urgency, topic
                     the message, marked Personal)                (Literals only)
      contact-placeholders, here                      the extracted values -> [NAME], [EMAIL]...
    draft-reply      any model                        [NAME], channel, category, urgency, topic
                                                      -> a subject and a body
      restored, here                                  the draft, with the real name put back

The message is marked ``Personal``, so every step whose prompt renders it runs on private
models only: that follows from the types before anything runs (``stepline workflows`` shows
it), not from reading the text. The draft is written from what cannot carry personal data (the
triage's Literals) and from a placeholder a named declassifier made, so it may go to a public
model: nothing of the message reaches one, whatever the private model extracted or missed.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from flows.engine import run_step
from flows.workflow import Workflow
from steps.declassifiers import Placeholders
from steps.definition import CLASSIFY, EXTRACT, GENERATE, Prompt, Sensitivity, Step, Tier
from steps.privacy import Declassified, Personal

__all__ = ["CONTACT_PLACEHOLDERS", "WORKFLOW", "customer_intake"]

Channel = Literal["email", "chat", "form"]
Category = Literal["billing", "technical", "account", "other"]
Urgency = Literal["low", "normal", "high"]
Topic = Literal[
    "double charge",
    "refund",
    "invoice question",
    "login problem",
    "bug report",
    "address change",
    "account closure",
    "data request",
    "other",
]


class IntakeRequest(BaseModel):
    channel: Channel = "email"
    message: Personal[str] = Field(min_length=10, max_length=5000)


class PersonDetails(BaseModel):
    name: str | None = Field(default=None, max_length=80, description="The customer's full name")
    email: str | None = Field(default=None, max_length=120)
    phone: str | None = Field(default=None, max_length=40)
    account_id: str | None = Field(default=None, max_length=40, description="Customer or account number")


class RequestTriage(BaseModel):
    category: Category
    urgency: Urgency
    topic: Topic


class ReplyRequest(BaseModel):
    customer: Declassified = Field(description="How to greet the customer: a placeholder, filled in later")
    channel: Channel
    category: Category
    urgency: Urgency
    topic: Topic


class DraftReply(BaseModel):
    subject: str = Field(min_length=1, max_length=120)
    body: str = Field(min_length=1, max_length=1500, description="Starts with the greeting given")


class IntakeResult(BaseModel):
    person: PersonDetails
    category: Category
    urgency: Urgency
    topic: Topic
    reply: DraftReply


UNKNOWN = {
    "name": "customer",
    "email": "your e-mail address",
    "phone": "your phone number",
    "account_id": "your account",
}
"""What a placeholder stands for when the message did not give it: no bare [PHONE] in a draft."""

CONTACT_PLACEHOLDERS = Placeholders(
    "contact-placeholders",
    "[NAME], [EMAIL], [PHONE], [ACCOUNT_ID] for what extract-contact found; the real values are "
    "put back into the draft here",
)

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

triage_request: Step[IntakeRequest, RequestTriage] = Step(
    name="triage-request",
    kind=CLASSIFY,
    tier=Tier.CHEAP,
    input_model=IntakeRequest,
    output_model=RequestTriage,
    prompt=Prompt(
        system=(
            "Triage a customer's message: its category (billing, technical, account or other), "
            "its urgency (low, normal or high) and its topic."
        ),
        user="Channel: $channel\n\n$message",
    ),
)

draft_reply: Step[ReplyRequest, DraftReply] = Step(
    name="draft-reply",
    kind=GENERATE,
    tier=Tier.CHEAP,
    input_model=ReplyRequest,
    output_model=DraftReply,
    prompt=Prompt(
        system=(
            "Draft a short, friendly first reply to a customer's request from its triage: a "
            "subject and a body. Start the body with the greeting given, word for word: it is a "
            "placeholder filled in later. Do not invent names, numbers or other personal details."
        ),
        user=(
            "Greet the customer as: Dear $customer,\n"
            "Channel: $channel\nCategory: $category\nUrgency: $urgency\nTopic: $topic"
        ),
    ),
)


@flow(name="customer-intake", log_prints=False)
def customer_intake(request: IntakeRequest) -> IntakeResult:
    person = run_step(extract_contact, request)
    triage = run_step(triage_request, request)
    hidden = CONTACT_PLACEHOLDERS.hide(person, missing=UNKNOWN)
    draft = run_step(
        draft_reply,
        ReplyRequest(
            customer=hidden["name"],
            channel=request.channel,
            category=triage.category,
            urgency=triage.urgency,
            topic=triage.topic,
        ),
    )
    return IntakeResult(
        person=person,
        category=triage.category,
        urgency=triage.urgency,
        topic=triage.topic,
        reply=hidden.restore(draft),
    )


WORKFLOW = Workflow(
    name="customer-intake",
    description="Extract contact details and triage privately; draft a reply from the triage alone.",
    flow=customer_intake,
    input_model=IntakeRequest,
    output_model=IntakeResult,
    steps=(extract_contact, triage_request, draft_reply),
    declassifiers=(CONTACT_PLACEHOLDERS,),
)
