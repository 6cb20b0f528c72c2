"""The ``stepline`` command: run workflows ad hoc and inspect what happened.

Exit codes: 0 success, 1 a workflow instance failed (its id, failing step and
failure class are printed), 2 bad input or configuration (nothing written).
Heavy imports (Prefect, SDKs) happen inside the commands that need them, so
listing instances stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "main"]

app = typer.Typer(
    name="stepline",
    help="Typed, routed, fault-tolerant LLM steps for business workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _read_input(source: str) -> tuple[Any, str]:
    where = "standard input" if source == "-" else f"input file {source}"
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            _fail(f"{where} does not exist; pass a JSON file or - for standard input")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read {where}: {exc}")
    try:
        return json.loads(text), where
    except json.JSONDecodeError as exc:
        _fail(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")


def _open_store() -> Any:
    from steps.errors import ConfigError
    from steps.settings import load_settings
    from storage.db import StorageError, open_engine
    from storage.store import Store

    try:
        settings = load_settings()
        return Store(open_engine(settings.database_url))
    except (ConfigError, StorageError) as exc:
        _fail(str(exc))


@app.command()
def run(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. contract-review.")],
    input: Annotated[str, typer.Option("--input", "-i", help="JSON file with the input, or - for stdin.")],
    owner: Annotated[str | None, typer.Option(help="Owner notified about this instance.")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Prefect's and Instructor's logs.")
    ] = False,
) -> None:
    """Run one workflow instance now and print its typed result as JSON."""
    payload, where = _read_input(input)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Without PREFECT_API_URL, Prefect starts a temporary API server in this process;
    # on a cold 2-core machine that can take longer than Prefect's default wait.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with err.status("loading workflows…"):
        from flows.engine import Runtime
        from flows.instances import parse_input, run_workflow
        from flows.registry import get_workflow
        from steps.errors import ConfigError, StepLineError
        from storage.db import StorageError
        from storage.models import InstanceStatus

    if not verbose:
        # A failed step is an outcome Stepline records in full (`stepline show`), not a crash:
        # keep Prefect's task-failure tracebacks and Instructor's retry logs off the terminal.
        for name in ("prefect", "instructor"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        chosen = get_workflow(workflow)
        parse_input(chosen, payload, where)
        runtime = Runtime.open()
    except (StepLineError, StorageError) as exc:
        _fail(str(exc))

    calls = 0
    with err.status(f"{chosen.name}: starting Prefect flow…") as status:

        def on_step(step: str) -> None:
            nonlocal calls
            calls += 1
            status.update(f"{chosen.name}: step {calls} ({step})…")

        try:
            result = run_workflow(chosen, payload, runtime, owner=owner, where=where, on_step=on_step)
        except ConfigError as exc:
            _fail(str(exc))
        except Exception as exc:  # recorded on the instance as failed/unknown by run_workflow
            _fail(f"the workflow could not run: {type(exc).__name__}: {exc}", code=1)
    if result.status is InstanceStatus.COMPLETED and result.output is not None:
        out.print_json(result.output.model_dump_json())
        err.print(f"instance {result.instance_id} completed ({calls} step calls)")
        return
    _report_stop(result)


def _report_stop(result: Any) -> NoReturn:
    """An instance that stopped: where, why, and the command that moves it on."""
    err.print(
        f"[bold red]instance {result.instance_id} {result.status.value}[/] at step "
        f"{result.failed_step!r}: {result.failure_class}"
    )
    err.print(f"  {result.error}", markup=False)
    err.print(f"  details: stepline show {result.instance_id}")
    if result.review_id:
        err.print(f"  review:  stepline review show {result.review_id}")
    else:
        err.print(f"  replay:  stepline replay {result.instance_id}")
    raise typer.Exit(1)


@app.command()
def instances(
    status: Annotated[str | None, typer.Option(help="Only instances with this status.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only instances of this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """List workflow instances, newest first."""
    from storage.models import InstanceStatus

    if status is not None and status not in {s.value for s in InstanceStatus}:
        _fail(f"unknown status {status!r}; use one of {', '.join(s.value for s in InstanceStatus)}")
    rows = _open_store().list_instances(status=status, workflow=workflow, limit=limit)
    if as_json:
        for row in rows:
            out.print(row.model_dump_json(exclude={"input", "output"}), markup=False)
        return
    table = Table("id", "workflow", "status", "failed step", "failure", "owner", "created (UTC)")
    for row in rows:
        table.add_row(
            row.id,
            row.workflow,
            row.status,
            row.failed_step or "",
            row.failure_class or "",
            row.owner,
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)
    if not rows:
        err.print(
            "no instances yet: try `stepline run contract-review --input samples/contracts/mutual-nda.json`"
        )


@app.command()
def show(
    instance: Annotated[str, typer.Argument(help="Instance id (a unique prefix is enough).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Show one instance with every step run and attempt."""
    store = _open_store()
    matches = store.find_instance(instance)
    if not matches:
        _fail(f"no instance with id {instance!r}; list them with `stepline instances`")
    if len(matches) > 1:
        _fail(f"{instance!r} matches several instances; give more of the id")
    detail = store.instance_detail(matches[0].id)
    assert detail is not None
    if as_json:
        record = {
            "instance": detail.instance.model_dump(mode="json"),
            "step_runs": [run.model_dump(mode="json") for run in detail.step_runs],
            "attempts": [attempt.model_dump(mode="json") for attempt in detail.attempts],
        }
        out.print_json(json.dumps(record))
        return
    inst = detail.instance
    out.print(
        f"instance {inst.id}  workflow {inst.workflow}  status {inst.status}  owner {inst.owner}",
        markup=False,
    )
    out.print(f"flow run {inst.flow_run_id}  created {inst.created_at:%Y-%m-%d %H:%M:%S}", markup=False)
    if inst.failed_step:
        out.print(f"failed at {inst.failed_step}: {inst.failure_class}: {inst.error}", markup=False)
    table = Table("step", "#", "model", "result", "tokens", "cost $", "ms")
    sampling: dict[str, str] = {}
    for a in detail.attempts:
        table.add_row(
            a.step,
            str(a.attempt_number),
            a.model_id,
            a.failure_class or "ok",
            f"{a.tokens_in or 0}/{a.tokens_out or 0}",
            f"{a.cost_usd or 0:.6f}",
            f"{a.latency_ms or 0:.0f}",
        )
        sampling.setdefault(f"{a.step} on {a.model_id}", json.dumps(a.sampling))
    out.print(table)
    for where, sent in sampling.items():
        out.print(f"sampling sent for {where}: {sent}", markup=False)
    for a in detail.attempts:
        if a.failure_class:
            out.print(f"\n[bold]{a.step} attempt {a.attempt_number}: {a.failure_class}[/]")
            out.print(f"raw output: {a.raw_output!r}", markup=False)
            for error in a.validation_errors or []:
                out.print(f"  {error['path']}: {error['message']}", markup=False)


def main() -> None:
    app()
