"""A two-step test workflow (extract, then categorise) to watch instances stop and resume."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel

from flows.engine import run_step
from flows.workflow import Workflow
from steps.definition import CLASSIFY, Prompt, Step
from tests.flows.helpers import Document, Invoice, invoice_workflow


class Category(BaseModel):
    label: Literal["goods", "services"]


class Filed(BaseModel):
    invoice: Invoice
    category: Category


def pipeline(model: str = "gpt-test", name: str = "file-invoice") -> Workflow:
    """Extract an invoice, then categorise it, both steps pinned to ``model``."""
    extract: Step[Document, Invoice] = invoice_workflow(model, max_reasks=1).steps[0]
    categorize: Step[Invoice, Category] = Step(
        name="categorize",
        kind=CLASSIFY,
        prompt=Prompt(system="Is this invoice for goods or services?", user="$vendor $total $currency"),
        input_model=Invoice,
        output_model=Category,
        model=model,
    )

    @flow(name=name)
    def file_invoice(document: Document) -> Filed:
        invoice = run_step(extract, document)
        return Filed(invoice=invoice, category=run_step(categorize, invoice))

    return Workflow(
        name=name,
        description="test pipeline",
        flow=file_invoice,
        input_model=Document,
        output_model=Filed,
        steps=(extract, categorize),
    )


PIPELINE = pipeline()


def tool_of(body: dict[str, object]) -> str:
    """Which step a request belongs to: the name of the tool it offers."""
    tools = body.get("tools")
    assert isinstance(tools, list)
    return str(tools[0]["function"]["name"])
