"""``stepline consistency``: which input a step takes, how a probe is stored, and how it is shown.

The input rule, kept to one: ``--input`` must validate as the step's own input model. A
workflow's first step takes the workflow's input in both shipped workflows, so for it this is
the same file ``stepline run`` takes; a later step's input is what earlier steps made of it,
and ``stepline show <id> --json`` prints it for each stored step run. No step is run to build
it: the probe measures one step, not the steps before it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.table import Table

from stepline.untrusted import json_for_terminal
from steps.consistency import ConsistencyReport, FieldAgreement, HistoryReport, Series
from steps.definition import Step
from steps.errors import InputError, describe_validation_error
from storage.models import ConsistencyRun

__all__ = [
    "history_json",
    "history_lines",
    "report_json",
    "report_table",
    "step_input",
    "to_row",
    "unsent_warnings",
    "verdict_lines",
]


def step_input(step: Step[Any, Any], first: bool, payload: Any, where: str) -> BaseModel:
    """``payload`` as the step's input model, or an ``InputError`` naming each bad field."""
    from flows.inputs import check_payload

    check_payload(payload, where)
    try:
        validated: BaseModel = step.input_model.model_validate(payload)
    except ValidationError as exc:
        fields = ", ".join(step.input_model.model_fields)
        hint = (
            "it is the workflow's input, as `stepline run` takes"
            if first
            else "a later step takes what the steps before it made: `stepline show <id> --json` "
            "prints each step run's input"
        )
        raise InputError(
            f"{where} does not match {step.name}'s input ({step.input_model.__name__}: {fields}); "
            f"{hint}: {describe_validation_error(exc)}"
        ) from None
    return validated


def to_row(report: ConsistencyReport, workflow: str) -> ConsistencyRun:
    configured, compared = report.configured, report.compared
    models = dict(configured.models)
    if compared is not None:
        for model, count in compared.models.items():
            models[model] = models.get(model, 0) + count
    label = ", ".join(sorted(models, key=lambda m: -models[m])) or "(none answered)"
    return ConsistencyRun(
        workflow=workflow,
        step=report.step,
        input_digest=report.input_digest,
        samples=configured.samples,
        threshold=report.threshold,
        temperature=configured.temperature,
        agreement=configured.agreement_json(),
        failed=configured.failed,
        verdict=configured.verdict,
        compare_temperature=compared.temperature if compared else None,
        compare_agreement=compared.agreement_json() if compared else None,
        compare_failed=compared.failed if compared else None,
        compare_verdict=compared.verdict if compared else None,
        model_id=label[:300],
        prompt_version_id=report.prompt_version_id,
    )


def _t(value: float | None) -> str:
    return "t=?" if value is None else f"t={value:g}"


def _values(found: FieldAgreement) -> str:
    shown = ", ".join(f"{json_for_terminal(value)} x{count}" for value, count in found.values)
    more = found.distinct - len(found.values)
    return shown + (f", {more} more" if more > 0 else "")


def _cell(found: FieldAgreement, threshold: float) -> str:
    if found.kind.value == "text":
        head = f"{found.distinct} distinct ({found.agreement:.2f})"
    else:
        colour = "green" if found.agreement >= threshold else "red"
        head = f"[{colour}]{found.agreement:.2f}[/]"
    return f"{head}  {escape(_values(found))}"


def report_table(report: ConsistencyReport) -> Table:
    """One row per field, one column per temperature."""
    columns = [report.configured] + ([report.compared] if report.compared else [])
    table = Table("field", "kind")
    for index, series in enumerate(columns):
        table.add_column(f"{_t(series.temperature)}" + (" (configured)" if index == 0 else ""))
    by_path = [{f.path: f for f in series.fields} for series in columns]
    for found in report.configured.fields:
        cells = [_cell(fields[found.path], report.threshold) for fields in by_path]
        table.add_row(escape(found.path), found.kind.value, *cells)
    return table


def _verdict(series: Series) -> str:
    lowest = series.lowest
    where = (
        f"{lowest.path} {lowest.agreement:.2f} {'>=' if series.consistent else '<'} {series.threshold:.2f}"
        if lowest
        else "no field"
    )
    failed = (
        "; failed: " + ", ".join(f"{name} x{count}" for name, count in series.failures.items())
        if series.failures
        else ""
    )
    return f"{_t(series.temperature)}: {series.verdict} ({where}); answered by {series.model_label()}{failed}"


def verdict_lines(report: ConsistencyReport) -> list[str]:
    lines = [_verdict(report.configured)]
    if report.compared is not None:
        lines.append(_verdict(report.compared))
    return lines


def unsent_warnings(report: ConsistencyReport) -> list[str]:
    """A temperature that never reached the wire measures nothing: say so."""
    return [
        f"{_t(series.temperature)} was not sent with every request (Anthropic's API in SDK 2.x takes "
        "no temperature): these samples ran at the provider's default"
        for series in (report.configured, report.compared)
        if series is not None and not series.temperature_sent and series.failed < series.samples
    ]


def _series_json(series: Series) -> dict[str, Any]:
    return {
        "temperature": series.temperature,
        "temperature_sent": series.temperature_sent,
        "samples": series.samples,
        "failures": series.failures,
        "models": series.models,
        "verdict": series.verdict,
        "fields": series.agreement_json(),
    }


def report_json(report: ConsistencyReport, workflow: str, stored_id: str) -> dict[str, Any]:
    return {
        "id": stored_id,
        "workflow": workflow,
        "step": report.step,
        "input_digest": report.input_digest,
        "threshold": report.threshold,
        "verdict": report.configured.verdict,
        "configured": _series_json(report.configured),
        "compared": _series_json(report.compared) if report.compared else None,
    }


def history_lines(found: HistoryReport, workflow: str, step: str) -> list[str]:
    head = (
        f"{step} in {workflow}: {found.outputs} answer(s) over {found.inputs} distinct input(s), "
        f"{found.repeated} answered more than once; {len(found.groups)} disagree"
    )
    lines = [head]
    for group in found.groups:
        models = ", ".join(f"{model} x{count}" for model, count in group.models.items())
        lines.append(f"input {group.digest[:16]} ({group.runs} answers; {models})")
        for field in group.disagreeing:
            lines.append(f"  {field.path}: {_values(field)}")
    return lines


def history_json(found: HistoryReport, workflow: str, step: str) -> dict[str, Any]:
    return {
        "workflow": workflow,
        "step": step,
        "answers": found.outputs,
        "inputs": found.inputs,
        "repeated": found.repeated,
        "disagreeing": [
            {
                "input_digest": group.digest,
                "input": group.input,
                "answers": group.runs,
                "models": group.models,
                "fields": {f.path: f.as_json() for f in group.disagreeing},
            }
            for group in found.groups
        ],
    }
