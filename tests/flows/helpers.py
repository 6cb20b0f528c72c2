"""A one-step test workflow built on demand, so each test can pin the model it targets."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field, field_validator

from flows.engine import run_step
from flows.workflow import Workflow
from steps.definition import EXTRACT, Prompt, Sampling, Sensitivity, Step


class Document(BaseModel):
    text: str


class Invoice(BaseModel):
    """The output model every provider must produce (custom validator included)."""

    vendor: str = Field(min_length=1, max_length=40)
    total: float = Field(ge=0)
    currency: Literal["USD", "EUR"]

    @field_validator("total")
    @classmethod
    def _cents(cls, value: float) -> float:
        if round(value, 2) != value:
            raise ValueError("total must have at most 2 decimal places")
        return value


VALID = {"vendor": "Acme", "total": 120.5, "currency": "EUR"}


def invoice_workflow(
    model: str | None,
    *,
    max_reasks: int = 2,
    sampling: Sampling | None = None,
    fallbacks: tuple[str, ...] = (),
    sensitivity: Sensitivity = Sensitivity.INTERNAL,
    fallback_on_refusal: bool = False,
) -> Workflow:
    step: Step[Document, Invoice] = Step(
        name="extract-invoice",
        kind=EXTRACT,
        prompt=Prompt(
            system="Extract the invoice's vendor, total and currency.",
            user="Invoice: $text",
        ),
        input_model=Document,
        output_model=Invoice,
        model=model,
        fallbacks=fallbacks,
        sensitivity=sensitivity,
        fallback_on_refusal=fallback_on_refusal,
        max_reasks=max_reasks,
        sampling=sampling or Sampling(),
    )

    @flow(name="invoice-test")
    def invoice_flow(document: Document) -> Invoice:
        return run_step(step, document)

    return Workflow(
        name="invoice-test",
        description="test",
        flow=invoice_flow,
        input_model=Document,
        output_model=Invoice,
        steps=(step,),
    )


INPUT = {"text": "ACME GmbH invoice no. 7 - total due EUR 120.50"}
