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
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from stepline.untrusted import for_terminal, guard_log_handlers, json_for_terminal, json_text_for_terminal

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
    err.print(f"[bold red]error:[/] {escape(for_terminal(message))}", markup=True, highlight=False)
    _end(code)


def _print_json(text: str) -> None:
    """JSON text, coloured in a terminal like Rich's ``print_json``, but with the controls its
    strings hold kept as ``\\uXXXX`` (``print_json`` re-dumps them raw; ``stepline.untrusted``)."""
    from rich.highlighter import JSONHighlighter

    out.print(JSONHighlighter()(Text(json_text_for_terminal(text))), soft_wrap=True)


EXIT_PREFECT_LOST = 3
"""Prefect's API failed during the run: the outcomes printed are Stepline's, complete; Prefect's
own record of the run is not (``flows.orchestrator``)."""
_SETTLE_S = 5.0
"""How long Prefect's event and log workers get to send their backlog when its API failed."""


def _end(code: int, *, stopped: bool = False) -> NoReturn:
    """Exit with ``code``; once Prefect's API failed in this process, say so and exit 3 at once,
    without Prefect's exit-time sends to a dead server (minutes, item by item): they get
    ``_SETTLE_S``, half a second after Ctrl-C (``stopped``, or 130)."""
    lost = "flows.orchestrator" in sys.modules and sys.modules["flows.orchestrator"].LOST.is_set()
    if not lost:
        raise typer.Exit(code)
    err.print(
        "[bold yellow]Prefect's API failed during this run:[/] the outcomes above are Stepline's "
        "and complete; Prefect's own record of the run is not. `stepline server status` says "
        "whether its server is back; `stepline recover --replay` resumes instances paused as "
        "orchestrator."
    )
    sys.modules["flows.orchestrator"].settle(0.5 if stopped or code == 130 else _SETTLE_S)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_PREFECT_LOST)


def _read_input(source: str) -> tuple[Any, str]:
    """One JSON input from a file or stdin, with the same limits as a batch item (``flows.inputs``)."""
    from flows.inputs import read_input
    from steps.errors import InputError

    try:
        return read_input(source, sys.stdin.buffer if sys.stdin is not None else None)
    except InputError as exc:
        _fail(exc.message)


def _check_id(kind: str, value: str, listing: str) -> None:
    """Refuse an id that cannot be one before a database is opened: it would reach the query as typed."""
    from flows.inputs import id_problem

    problem = id_problem(kind, value, listing)
    if problem is not None:
        _fail(problem)


def _open_store() -> Any:
    return _open_store_and_settings()[0]


def _open_store_and_settings() -> tuple[Any, Any]:
    from stepline.errors import StepLineError
    from steps.settings import load_settings
    from storage.db import open_engine
    from storage.store import Store

    try:
        settings = load_settings()
        return Store(open_engine(settings.database_url)), settings
    except StepLineError as exc:
        _fail(str(exc))


def _prepare_flows(verbose: bool, *, local_server: bool = True) -> None:
    """Settings for running flows from a terminal; call before Prefect is imported.

    ``local_server=False`` for commands that only talk to a team's configured server
    (submit, and recover asking about submitted flow runs): they must not start one here.
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's client telemetry (and its first-run notice) is Prefect's to ask about, not
    # something a Stepline user opted into by running a workflow.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    _keep_results_private()
    if local_server:
        _use_local_server()
    with err.status("loading workflows…"):
        import flows.instances  # noqa: F401  (Prefect, the registry and the runtime)
    guard_log_handlers()  # Prefect's console handler: log lines can quote inputs and answers
    if not verbose:
        # A failed step is an outcome Stepline records in full (`stepline show`), not a crash:
        # keep Prefect's task-failure tracebacks and Instructor's retry logs off the terminal.
        for name in ("prefect", "instructor"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _keep_results_private() -> None:
    """Prefect's result files under Stepline's home, not ~/.prefect/storage (``flows.results``)."""
    from flows.results import keep_results_private

    keep_results_private()


def _use_local_server() -> None:
    """Point Prefect at the shared local server, started on first need, unless one is configured.

    Before Prefect is imported: it reads PREFECT_API_URL once, at import, for every thread.
    """
    from flows import local_server

    try:
        with err.status("Prefect's local API server: checking (its first start takes about 15 s)…"):
            ensured = local_server.ensure()
    except local_server.ServerError as exc:
        _fail(str(exc))
    if ensured is not None and ensured.started:
        err.print(local_server.announcement(ensured), markup=False, highlight=False)


def _open_runtime() -> Any:
    from flows.runtime import Runtime
    from stepline.errors import StepLineError

    try:
        return Runtime.open()
    except StepLineError as exc:
        _fail(str(exc))


def _drive(label: str, work: Any) -> Any:
    """Run ``work(on_step)`` under a progress line; turn Stepline's errors into exit codes."""
    from flows.local_server import ensure_prefect_api
    from stepline.errors import StepLineError
    from stepline.launch import startup_done
    from storage.errors import DatabaseFailed

    calls = 0
    with err.status(f"{label}: starting Prefect flow…") as status:

        def on_step(step: str) -> None:
            nonlocal calls
            startup_done()  # Prefect's flow run and the step's modules are loaded by now
            calls += 1
            status.update(f"{label}: model call {calls} ({step})…")

        try:
            ensure_prefect_api()
            return work(on_step)
        except DatabaseFailed as exc:
            _fail(
                f"{exc}; an instance this run held stays running under its lease until "
                "`stepline recover` pauses it, then `stepline replay` resumes it",
                code=1,
            )
        except StepLineError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail(
                "interrupted; an instance stopped mid-run is paused (interrupted): "
                "`stepline replay <id>` resumes it",
                130,
            )
        except Exception as exc:  # recorded on the instance as failed/unknown
            _fail(f"the workflow could not run: {type(exc).__name__}: {exc}", code=1)


def _report(result: Any) -> None:
    from storage.models import InstanceStatus

    if result.status is InstanceStatus.COMPLETED and result.output is not None:
        _print_json(json.dumps(result.output.model_dump(mode="json"), indent=2, ensure_ascii=False))
        err.print(f"instance {result.instance_id} completed")
        _end(0)
    _report_stop(result)


@app.command()
def run(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. contract-review.")],
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A JSON file (one instance), a folder of JSON files or a JSONL file (a batch), "
            "or - for stdin.",
        ),
    ],
    owner: Annotated[str | None, typer.Option(help="Owner notified about these instances.")] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="Batch: instances run at once.")
    ] = 4,
    new_only: Annotated[
        bool,
        typer.Option("--new-only", help="Batch: skip inputs that already have an instance of this workflow."),
    ] = False,
    flow_run_per_instance: Annotated[
        bool,
        typer.Option(
            "--flow-run-per-instance",
            help="Batch: a Prefect flow run for each instance, not one for the batch "
            "([workers] batch_flow_runs); slower: a few hundred instances a minute.",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Prefect's and Instructor's logs.")
    ] = False,
) -> None:
    """Run a workflow now: one instance printed as JSON, or a batch with progress and a summary."""
    _check_text("--owner", owner)
    if _is_batch(input):
        _run_batch(workflow, Path(input), owner, concurrency, new_only, verbose, flow_run_per_instance)
        return
    payload, where = _read_input(input)
    _prepare_flows(verbose)
    from flows.instances import parse_input, run_workflow
    from flows.registry import get_workflow
    from stepline.errors import StepLineError

    try:
        chosen = get_workflow(workflow)
        parse_input(chosen, payload, where)
    except StepLineError as exc:
        _fail(str(exc))
    runtime = _open_runtime()
    _report(
        _drive(
            chosen.name,
            lambda on_step: run_workflow(chosen, payload, runtime, owner=owner, where=where, on_step=on_step),
        )
    )


def _is_batch(source: str) -> bool:
    """Whether ``--input`` names a batch (a folder or a JSONL file); a path the system refuses
    (too long, say) is left to the single-file reader, which says what is wrong with it."""
    if source == "-":
        return False
    path = Path(source)
    try:
        return path.exists() and (path.is_dir() or path.suffix.lower() == ".jsonl")
    except (OSError, ValueError):
        return False


def _check_text(option: str, value: str | None) -> None:
    """Refuse an option that is not text (bytes that are not UTF-8 in the command line)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        _fail(f"{option} '{shown}' is not UTF-8 text; type it again in a UTF-8 terminal")


def _run_batch(
    workflow: str,
    source: Path,
    owner: str | None,
    concurrency: int,
    new_only: bool,
    verbose: bool,
    per_instance: bool = False,
) -> None:
    from stepline.batch_view import BatchView
    from stepline.launch import startup_done

    _prepare_flows(verbose)
    from flows.batch import read_items, run_batch
    from flows.registry import get_workflow
    from stepline.errors import StepLineError

    try:
        chosen = get_workflow(workflow)
        items = read_items(source)
    except StepLineError as exc:
        _fail(str(exc))
    if not items:
        _fail(f"{source} holds no inputs: put JSON files in the folder, or JSON lines in the file")
    runtime = _open_runtime()
    view = BatchView(err, chosen.name, len(items))
    cancel = threading.Event()

    def on_interrupt(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        view.note(
            "stopping: no new input starts; running instances pause after their current model call "
            "(Ctrl-C again to stop at once)"
        )

    previous = signal.signal(signal.SIGINT, on_interrupt)
    startup_done()  # a batch runs for minutes: the collector is back on before it starts
    try:
        with view:
            report = run_batch(
                chosen,
                items,
                runtime,
                concurrency=concurrency,
                owner=owner,
                skip_seen=new_only,
                cancel=cancel,
                on_outcome=view.advance,
                one_flow_run=False if per_instance else None,
            )
    except StepLineError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print(
            "[bold red]stopped at once:[/] running instances were paused; "
            "`stepline instances --status paused` lists them and `stepline replay <id>` resumes one"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        # Worker threads may still be blocked in a model call; their instances are paused
        # already, so end the process instead of waiting for them.
        os._exit(130)
    finally:
        signal.signal(signal.SIGINT, previous)
    view.summary(out, report)
    code = 130 if report.interrupted else 1 if report.needing_attention() else 0
    _end(code, stopped=cancel.is_set())


@app.command()
def submit(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. contract-review.")],
    input: Annotated[
        str,
        typer.Option(
            "--input", "-i", help="A JSON file (one instance), a folder of JSON files or a JSONL file."
        ),
    ],
    per_run: Annotated[
        int, typer.Option("--per-run", min=1, max=1000, help="Instances handed to each flow run.")
    ] = 10,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="Instances each flow run runs at once.")
    ] = 4,
    deployment: Annotated[
        str, typer.Option(help="The Prefect deployment whose workers run them.")
    ] = "stepline-queued/submitted",
    owner: Annotated[str | None, typer.Option(help="Owner notified about these instances.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Hand instances to a team's workers: queue them in the store, then create flow runs for them.

    Needs PREFECT_API_URL (the team's Prefect server) and a shared store
    (STEPLINE_DATABASE_URL); `stepline instances` and the TUI follow them.
    """
    _check_text("--owner", owner)
    _prepare_flows(verbose, local_server=False)
    from flows.batch import BatchItem, read_items
    from flows.registry import get_workflow
    from flows.team import submit as submit_instances
    from stepline.errors import StepLineError

    path = Path(input)
    try:
        chosen = get_workflow(workflow)
        if _is_batch(input):
            items = read_items(path)
        else:
            payload, where = _read_input(input)
            items = [BatchItem(where, payload)]
    except StepLineError as exc:
        _fail(str(exc))
    if not items:
        _fail(f"{input} holds no inputs: put JSON files in the folder, or JSON lines in the file")
    runtime = _open_runtime()
    try:
        with err.status(f"submitting {len(items)} input(s) to {deployment}…"):
            done = submit_instances(
                chosen,
                items,
                runtime,
                deployment=deployment,
                per_run=per_run,
                concurrency=concurrency,
                owner=owner,
            )
    except StepLineError as exc:
        _fail(str(exc))
    for outcome in done.rejected:
        err.print(
            f"[bold red]rejected:[/] {escape(for_terminal(outcome.message or outcome.item.source))}",
            highlight=False,
        )
    if as_json:
        out.print(
            json.dumps({"queued": done.queued, "flow_runs": done.flow_runs, "rejected": len(done.rejected)}),
            markup=False,
        )
    else:
        err.print(
            f"{len(done.queued)} instance(s) of {chosen.name} queued in {len(done.flow_runs)} flow run(s) "
            f"of {deployment}; follow them with `stepline instances` or `stepline tui`"
        )
    if done.rejected:
        raise typer.Exit(1)


@app.command()
def replay(
    instance: Annotated[str, typer.Argument(help="Instance id (a unique prefix is enough).")],
    from_step: Annotated[
        str | None, typer.Option("--from", help="Redo this step and everything after it.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Rerun a paused, failed or needs-review instance from its failed (or named) step."""
    _check_id("instance", instance, "stepline instances")
    _prepare_flows(verbose)
    from flows.instances import replay as replay_instance

    runtime = _open_runtime()
    _report(
        _drive(
            f"replay {instance}",
            lambda on_step: replay_instance(instance, runtime, from_step=from_step, on_step=on_step),
        )
    )


@app.command()
def recover(
    then_replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Then replay, from the step each was on, every instance paused because its worker was "
            "lost or the database or Prefect's API failed (worker_lost, storage, orchestrator).",
        ),
    ] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="--replay: instances replayed at once.")
    ] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Pause the instances whose worker died (killed, crashed, machine lost) so they can be replayed.

    An instance is lost when the process that ran it on this host no longer
    exists, or when its lease was not renewed for `[workers] lease_s` seconds.
    A submitted instance still queued is lost when its flow run ended or died
    without starting it (asked of the Prefect server at PREFECT_API_URL).
    Step runs and requests a stopped worker left open (its database failed as
    it ended) are closed as `storage`.
    """
    from flows.recovery import find_lost
    from flows.recovery import recover as recover_instance
    from stepline.errors import StepLineError
    from steps.errors import FailureClass

    settings = _load_catalog()
    store = _open_store()
    try:
        lost = find_lost(store, settings)
        swept = store.close_abandoned(FailureClass.STORAGE.value)
    except StepLineError as exc:
        _fail(str(exc))
    if swept and not as_json:
        err.print(f"closed the unfinished step runs and requests of {swept} stopped instance(s)")
    if store.unleased_queued(limit=1):  # submitted to a work pool: ask Prefect about their flow runs
        _prepare_flows(verbose, local_server=False)
        from flows.team import find_stranded

        try:
            lost += find_stranded(store, settings)
        except Exception as exc:  # Prefect down: dead workers' instances are still recovered
            err.print(
                f"[yellow]warning:[/] could not ask Prefect about queued instances' flow runs "
                f"({escape(type(exc).__name__)}: {escape(for_terminal(str(exc)))}); "
                "they stay queued until it answers"
            )
    recovered = [item for item in lost if recover_instance(store, settings, item)]
    if as_json:
        for item in recovered:
            out.print(json.dumps({"instance": item.instance.id, "reason": item.reason}), markup=False)
    elif not recovered:
        err.print("no lost instances: every running instance has a live worker")
    else:
        table = Table("instance", "workflow", "why it is judged lost")
        for item in recovered:
            table.add_row(item.instance.id[:12], item.instance.workflow, item.reason)
        out.print(table)
        err.print(f"{len(recovered)} instance(s) paused with failure class worker_lost")
    if not then_replay:
        return
    # Workers recover their dead peers' instances as their flow runs start, but leave replaying
    # them to an operator: replay those too, and those a database or Prefect outage paused.
    earlier = [
        found.id
        for failure in FailureClass
        if failure.behaviour.infrastructure
        for found in store.search_instances(status="paused", failure_class=failure.value, limit=10_000)
    ]
    to_replay = list(dict.fromkeys([item.instance.id for item in recovered] + earlier))
    if not to_replay:
        return
    _replay_lost(to_replay, concurrency, as_json, verbose)


def _replay_lost(to_replay: list[str], concurrency: int, as_json: bool, verbose: bool) -> None:
    """Replay instances ``concurrency`` at a time, each reported as it ends (with how long it took)."""
    import time
    from concurrent.futures import ThreadPoolExecutor, as_completed

    _prepare_flows(verbose)
    from flows.instances import ReplayRefused, interrupt
    from flows.instances import replay as replay_instance
    from flows.local_server import ensure_prefect_api
    from stepline.errors import StepLineError

    runtime = _open_runtime()
    started = time.monotonic()
    failed = 0

    def replay_one(instance_id: str) -> tuple[Any, float]:
        try:
            result: Any = replay_instance(instance_id, runtime)
        except StepLineError as exc:  # replayed elsewhere meanwhile, unknown workflow...
            result = exc  # ...: say so and go on with the others
        return result, time.monotonic() - started

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay")
    try:
        with err.status(f"replaying {len(to_replay)} instance(s), {concurrency} at a time…") as status:
            ensure_prefect_api()
            futures = {pool.submit(replay_one, instance_id): instance_id for instance_id in to_replay}
            for done, future in enumerate(as_completed(futures), start=1):
                instance_id = futures[future]
                result, seconds = future.result()
                if isinstance(result, ReplayRefused):
                    outcome = "refused"
                elif isinstance(result, Exception):
                    outcome = "error"
                else:
                    outcome = "superseded" if result.superseded else result.status.value
                if as_json:
                    record = {"instance": instance_id, "replayed": outcome, "seconds": round(seconds, 3)}
                    out.print(json.dumps(record), markup=False)
                else:
                    why = f": {result}" if isinstance(result, Exception) else ""
                    shown = escape(for_terminal(why))
                    err.print(f"instance {instance_id} {outcome} ({seconds:.1f} s){shown}")
                failed += outcome not in ("completed", "refused")
                status.update(f"replayed {done} of {len(to_replay)}…")
    except KeyboardInterrupt:
        for instance_id in to_replay:  # only those this process holds are paused
            interrupt(runtime, instance_id)
        err.print(
            "[bold red]stopped:[/] replays in progress were paused; `stepline recover --replay` resumes them"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # replays blocked in a model call need not be waited for: they are paused
    pool.shutdown()
    _end(1 if failed else 0)


review_app = typer.Typer(help="Outputs that failed validation, waiting for a person.", no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option(help="open, approved, rejected or all.")] = "open",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List review items, newest first."""
    from storage.models import ReviewStatus

    if status != "all" and status not in {s.value for s in ReviewStatus}:
        _fail(f"unknown review status {status!r}; use open, approved, rejected or all")
    items = _open_store().list_reviews(status=None if status == "all" else status)
    if as_json:
        for item in items:
            out.print(json_text_for_terminal(item.model_dump_json(exclude={"expected_schema"})), markup=False)
        return
    table = Table("review", "instance", "step", "failure", "status", "errors", "created (UTC)")
    for item in items:
        table.add_row(
            item.id[:12],
            item.instance_id[:12],
            Text(for_terminal(f"{item.step}[{item.index}]")),
            Text(for_terminal(item.failure_class)),
            item.status,
            str(len(item.validation_errors or [])),
            item.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)


@review_app.command("show")
def review_show(review: Annotated[str, typer.Argument(help="Review id (a prefix is enough).")]) -> None:
    """The raw output beside the errors and the schema it had to match."""
    _check_id("review", review, "stepline review list")
    try:
        item = _open_store().get_review(review)
    except LookupError as exc:
        _fail(str(exc))
    if item is None:
        _fail(f"no review with id {review!r}; list them with `stepline review list`")
    shown = f"review {item.id}  instance {item.instance_id}  step {item.step}[{item.index}]"
    out.print(for_terminal(shown), markup=False)
    out.print(for_terminal(f"status {item.status}  failure {item.failure_class}"), markup=False)
    out.print("raw output (as received, controls spelled out):", markup=False)
    raw = for_terminal(item.raw_output) if item.raw_output is not None else "(none)"
    out.print(raw, markup=False, highlight=False)
    out.print("validation errors:", markup=False)
    for error in item.validation_errors or []:
        line = f"  {error['path']}: {error['message']} (input: {error['input']!r})"
        out.print(for_terminal(line), markup=False, highlight=False)
    out.print("expected schema:", markup=False)
    out.print(json.dumps(item.expected_schema, indent=2), markup=False, highlight=False)


@review_app.command("approve")
def review_approve(
    review: Annotated[str, typer.Argument(help="Review id (a prefix is enough).")],
    output: Annotated[str, typer.Option("--output", "-o", help="JSON file with the corrected output, or -.")],
    note: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Accept a corrected output (validated against the step's model) and resume the instance."""
    _check_id("review", review, "stepline review list")
    _check_text("--note", note)
    corrected, _ = _read_input(output)
    _prepare_flows(verbose)
    from flows.instances import approve_review

    runtime = _open_runtime()
    by = runtime.settings.author
    _report(
        _drive(f"review {review}", lambda _: approve_review(review, corrected, runtime, by=by, note=note))
    )


@review_app.command("reject")
def review_reject(
    review: Annotated[str, typer.Argument(help="Review id (a prefix is enough).")],
    note: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
) -> None:
    """Refuse the output: the instance fails (it can still be replayed later)."""
    _check_id("review", review, "stepline review list")
    _check_text("--note", note)
    _prepare_flows(verbose=False)
    from flows.instances import reject_review
    from stepline.errors import StepLineError

    runtime = _open_runtime()
    try:
        reject_review(review, runtime, by=runtime.settings.author, note=note)
    except StepLineError as exc:
        _fail(str(exc))
    err.print(f"review {review} rejected; the instance is failed")


def _known_workflows() -> Any:
    from flows.registry import known_workflows
    from steps.errors import ConfigError

    try:
        return known_workflows()
    except ConfigError as exc:
        _fail(str(exc))


def _load_catalog() -> Any:
    from steps.errors import ConfigError
    from steps.settings import load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def workflows(as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False) -> None:
    """The registered workflows: their steps, tiers, which models each may reach and why, and
    where each would go now."""
    settings = _load_catalog()
    from steps.errors import ConfigError
    from steps.routing import choose_route

    WORKFLOWS = _known_workflows()

    table = Table("workflow", "step", "kind", "tier", "may reach", "routes to now")
    explained = []
    for workflow in WORKFLOWS.values():
        for step in workflow.steps:
            privacy = workflow.privacy.of(step)
            try:
                route = choose_route(step, settings, privacy=privacy)
                target, reason = route.model_id, route.reason
            except ConfigError as exc:
                target, reason = "(none)", exc.message
            if as_json:
                record = {
                    "workflow": workflow.name,
                    "step": step.name,
                    "kind": step.kind.name,
                    "tier": step.tier.value,
                    "sensitivity": step.sensitivity.value,
                    "model": target,
                    "reason": reason,
                    "fallbacks": list(step.fallbacks),
                    "privacy": _privacy_json(workflow, privacy),
                }
                out.print(json.dumps(record), markup=False)
            else:
                reach = "private models" if privacy.private_only else "any model"
                table.add_row(workflow.name, step.name, step.kind.name, step.tier.value, reach, target)
        if workflow.privacy.holds_personal_data:
            explained.append(workflow)
    if not as_json:
        out.print(table)
        for workflow in explained:
            out.print(Text("\n".join(_privacy_lines(workflow))))


def _privacy_lines(workflow: Any) -> list[str]:
    """How ``workflow`` keeps its personal data on private models, step by step."""
    privacy = workflow.privacy
    personal = ", ".join(privacy.personal_inputs) or "none marked"
    lines = [f"{workflow.name} holds personal data (personal input fields: {personal})."]
    if privacy.note:
        lines.append(f"  note: {privacy.note}")
    for declassifier in workflow.declassifiers:
        lines.append(f"  declassifier {declassifier.name}: {declassifier.description}")
    lines.extend(f"  {step.name}: {privacy.of(step).summary()}" for step in workflow.steps)
    return lines


def _privacy_json(workflow: Any, privacy: Any) -> dict[str, Any]:
    return {
        "holds_personal_data": privacy.holds_personal_data,
        "personal_inputs": list(workflow.privacy.personal_inputs),
        "private_only": privacy.private_only,
        "reason": privacy.private_reason,
        "summary": privacy.summary(),
        "rendered": {f.name: {"carries": f.carries.label, "why": f.why} for f in privacy.rendered},
        "personal_outputs": list(privacy.personal_outputs),
        "declassifiers": [d.name for d in workflow.declassifiers],
    }


@app.command()
def validate() -> None:
    """Check the catalog and every workflow against it, without calling any model."""
    settings = _load_catalog()
    from steps.errors import ConfigError
    from steps.routing import choose_route

    WORKFLOWS = _known_workflows()

    problems = []
    for workflow in WORKFLOWS.values():
        for step in workflow.steps:
            try:
                choose_route(step, settings, privacy=workflow.privacy.of(step))  # includes check_step
            except ConfigError as exc:
                problems.append(f"{workflow.name} / {step.name}: {exc.message}")
        if workflow.privacy.holds_personal_data:
            for line in _privacy_lines(workflow):
                err.print(f"privacy: {line}", markup=False, highlight=False)
    from flows.schedules import schedule_problems

    problems.extend(schedule_problems(settings))
    try:
        warnings = _probe_log().warnings(settings)
    except ConfigError as exc:
        warnings = [exc.message]
    for warning in warnings:  # advice, not a failure: the exit code stays
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    for problem in problems:
        err.print(f"[bold red]problem:[/] {escape(problem)}", highlight=False)
    if problems:
        raise typer.Exit(2)
    steps = sum(len(w.steps) for w in WORKFLOWS.values())
    err.print(
        f"ok: {len(settings.providers)} providers, {len(settings.models)} models, "
        f"{len(WORKFLOWS)} workflows, {steps} steps routable, {len(settings.schedules)} schedules valid"
    )


def _probe_log() -> Any:
    from flows.local_server import data_home, private_home
    from steps.probe import ProbeLog

    try:
        home = private_home()  # made owner-only before a probe writes there
    except OSError:
        home = data_home()  # a probe's write says why it cannot
    return ProbeLog(home / "probes.json")


@app.command()
def probe(
    model: Annotated[str, typer.Argument(help="A catalog model id, e.g. gpt-4o-mini.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    write: Annotated[
        bool,
        typer.Option("--write", help="Set structured_mode in your catalog to the mode recommended."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Instructor's logs.")] = False,
) -> None:
    """Which structured-output modes a model serves: one tiny request per mode, and the best one.

    Each mode its provider kind allows gets one request (64 tokens at most, no retries): it
    works (a valid answer), fails (with the failure class and what the provider said) or is
    unsupported (not sent). json_schema is recommended when it works, then tools, then json.
    The result is kept in $STEPLINE_HOME/probes.json, which `stepline validate` reads.
    Exits 0 when a mode works, 1 when none does, 2 on bad input or an unreachable provider.
    """
    from stepline.errors import StepLineError
    from steps.probe import Outcome, check_model_id, check_writable, probe_model, write_structured_mode
    from steps.settings import catalog_path

    settings = _load_catalog()
    if not verbose:  # a failing mode is a result here, not a log line
        logging.getLogger("instructor").setLevel(logging.CRITICAL)
    try:
        check_model_id(settings, model)
        if write:  # refused before anything is sent
            check_writable(catalog_path(), model)
        with err.status(f"probing {model}…") as status:
            report = probe_model(settings, model, on_mode=lambda m: status.update(f"probing {model}: {m}…"))
        _probe_log().record(report)
        recommended = report.recommended
        written = False
        if write and recommended is not None:
            write_structured_mode(catalog_path(), model, recommended)
            written = True
    except StepLineError as exc:
        _fail(str(exc))
    if as_json:
        out.print(json.dumps({**report.as_json(), "written": written}), markup=False, highlight=False)
    else:
        table = Table("mode", "result", "latency", "detail")
        for result in report.results:
            colour = {Outcome.WORKS: "green", Outcome.ERROR: "red"}.get(result.outcome, "dim")
            detail = f"{result.failure.value}: {result.message}" if result.failure else (result.message or "")
            table.add_row(
                result.mode.value,
                f"[{colour}]{result.outcome.value}[/]",
                "" if result.latency_ms is None else f"{result.latency_ms:.0f} ms",
                escape(for_terminal(detail)),
            )
        out.print(table)
        configured = report.configured.value
        if recommended is None:
            out.print(f"no structured mode works on {escape(model)} (configured: {configured})")
        else:
            out.print(f"recommended: {recommended.value} (configured: {configured})", highlight=False)
    if write and written:
        err.print(
            f"{_config_label(catalog_path())}: models.{model}.structured_mode = {recommended}",
            markup=False,
            highlight=False,
        )
    elif write:
        err.print("nothing written: no mode works")
    elif recommended is not None and recommended is not report.configured:
        err.print(f"`stepline probe {model} --write` sets it in your catalog", markup=False, highlight=False)
    if recommended is None:
        raise typer.Exit(1)


_MAX_SAMPLES = 500


def _count(option: str, value: str, low: int, high: int) -> int:
    """An integer option checked here, so that a bad one is one line (exit 2), not a usage box."""
    try:
        number = int(value)
    except ValueError:
        _fail(f"{option} must be a whole number, got {value!r}")
    if not low <= number <= high:
        _fail(f"{option} must be between {low} and {high}, got {number}")
    return number


def _temperature(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        _fail(f"--temperature must be a number between 0 and 2, got {value!r}")
    if not 0.0 <= number <= 2.0:
        _fail(f"--temperature must be between 0 and 2, got {value}")
    return number


@app.command()
def consistency(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. contract-review.")],
    step: Annotated[str, typer.Argument(help="One of its steps, e.g. assess-risk.")],
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="The step's input as a JSON file, or - for stdin: for a first step, the workflow's "
            "input as `stepline run` takes it.",
        ),
    ] = None,
    samples: Annotated[
        str, typer.Option("--samples", "-n", help=f"Samples per temperature, 2 to {_MAX_SAMPLES}.")
    ] = "10",
    temperature: Annotated[
        str | None,
        typer.Option(help="Also sample as many times at this temperature (0 to 2), for comparison."),
    ] = None,
    from_history: Annotated[
        bool,
        typer.Option(
            "--from-history",
            help="Instead: stored answers of the step for the same input that disagree (read-only).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Instructor's logs.")] = False,
) -> None:
    """How consistently a step answers one input: per output field, the share of samples that agree.

    Runs the step N times through the step executor (routing, retries, re-asks; no workflow
    instance, no Prefect) at its configured sampling and, with --temperature, N more times at
    that temperature. Choices, booleans, numbers and lists are judged against the step's
    consistency_threshold; free text is counted, not judged. The result is stored (the TUI's
    prompts screen shows it). Exits 0 when consistent at the configured sampling, 1 when not,
    2 on bad input. --from-history compares stored answers of the step instead (1 if any disagree).
    """
    from stepline.errors import StepLineError

    if from_history:
        if input is not None or temperature is not None:
            _fail("--from-history compares stored answers: it takes no --input or --temperature")
        _consistency_history(workflow, step, as_json)
        return
    if input is None:
        _fail("--input is required: the step's input as a JSON file (or --from-history)")
    count = _count("--samples", samples, 2, _MAX_SAMPLES)
    compare_at = _temperature(temperature)
    payload, where = _read_input(input)
    _prepare_flows(verbose, local_server=False)  # the registry imports Prefect; no server is needed
    logging.getLogger("instructor").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    from flows.engine import with_current_prompt
    from flows.registry import get_workflow
    from flows.sink import CODE_AUTHOR
    from stepline.consistency import (
        report_json,
        report_table,
        step_input,
        to_row,
        unsent_warnings,
        verdict_lines,
    )
    from steps.consistency import probe_consistency

    try:
        chosen = get_workflow(workflow)
        found = _step_of(chosen, step)
        inputs = step_input(found, found is chosen.steps[0], payload, where)
    except StepLineError as exc:
        _fail(str(exc))
    store, settings = _open_store_and_settings()
    try:
        found = with_current_prompt(found, store)
        observed = store.median_latency_by_model()
        with err.status(f"sampling {found.name}…") as status:

            def on_sample(at: float | None, number: int) -> None:
                status.update(f"sampling {found.name} at t={at:g}: {number}/{count}…")

            report = probe_consistency(
                settings,
                found,
                inputs,
                count,
                privacy=chosen.privacy.of(found),
                temperature=compare_at,
                latency=lambda: observed,
                prompt_version=lambda name, prompt: store.prompt_version(
                    name, prompt.system, prompt.user, prompt.content_hash, CODE_AUTHOR
                ),
                on_sample=on_sample,
            )
        stored = store.add_consistency_run(to_row(report, chosen.name))
    except StepLineError as exc:
        _fail(str(exc))
    for warning in unsent_warnings(report):
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    if as_json:
        out.print(json.dumps(report_json(report, chosen.name, stored)), markup=False, highlight=False)
    else:
        out.print(
            f"{escape(found.name)} in {escape(chosen.name)}: {count} samples per temperature on "
            f"{escape(where)} (input digest {report.input_digest[:16]}), threshold "
            f"{report.threshold:.2f}",
            highlight=False,
        )
        out.print(report_table(report))
        for line in verdict_lines(report):
            out.print(line, markup=False, highlight=False)
    if not report.consistent:
        raise typer.Exit(1)


def _step_of(workflow: Any, name: str) -> Any:
    """The workflow's step called ``name``, or an ``InputError`` listing them."""
    from steps.errors import InputError

    for candidate in workflow.steps:
        if candidate.name == name:
            return candidate
    names = ", ".join(s.name for s in workflow.steps)
    raise InputError(f"workflow {workflow.name} has no step {name!r}; its steps: {names}")


def _consistency_history(workflow: str, step: str, as_json: bool) -> None:
    """Stored answers of ``step`` whose inputs share a digest but whose judged fields differ."""
    _prepare_flows(False, local_server=False)
    from flows.registry import get_workflow
    from stepline.consistency import history_json, history_lines
    from stepline.errors import StepLineError
    from steps.consistency import history_disagreements

    try:
        chosen = get_workflow(workflow)
        found = _step_of(chosen, step)
    except StepLineError as exc:
        _fail(str(exc))
    store = _open_store()
    try:
        report = history_disagreements(store.step_answers(chosen.name, found.name), found.output_model)
    except StepLineError as exc:
        _fail(str(exc))
    if as_json:
        out.print(json.dumps(history_json(report, chosen.name, found.name)), markup=False, highlight=False)
    else:
        for line in history_lines(report, chosen.name, found.name):
            out.print(line, markup=False, highlight=False)
    if report.groups:
        raise typer.Exit(1)


@app.command()
def schedules(
    prefect_yaml: Annotated[
        bool,
        typer.Option(
            "--prefect-yaml",
            help="Print them, and the deployment `stepline submit` uses, as a prefect.yaml for a work pool.",
        ),
    ] = False,
) -> None:
    """The configured schedules: what runs when, on which inputs (the catalog's schedules tables)."""
    settings = _load_catalog()
    from flows.schedules import describe_inputs, describe_when, schedule_problems
    from flows.schedules import prefect_yaml as render_yaml
    from steps.errors import ConfigError
    from steps.settings import catalog_path

    if prefect_yaml:
        try:
            out.print(render_yaml(settings, source=_config_label(catalog_path())), markup=False, end="")
        except ConfigError as exc:
            _fail(str(exc))
        return
    table = Table("schedule", "workflow", "when", "inputs", "at once")
    for name, config in settings.schedules.items():
        table.add_row(
            name, config.workflow, describe_when(config), describe_inputs(config), str(config.concurrency)
        )
    out.print(table)
    for problem in schedule_problems(settings):
        err.print(f"[bold red]problem:[/] {escape(problem)}", highlight=False)


def _config_label(path: Path) -> str:
    from steps.settings import DEFAULT_CATALOG

    return "steps/default_catalog.toml (the built-in catalog)" if path == DEFAULT_CATALOG else str(path)


@app.command()
def serve(
    names: Annotated[
        list[str] | None, typer.Argument(help="Schedules to serve (default: all configured).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Scheduled runs executing at once (default: no limit).")
    ] = None,
) -> None:
    """Serve the configured schedules as Prefect deployments until stopped (Ctrl-C)."""
    settings = _load_catalog()
    if not settings.schedules:
        _fail(
            "no schedules are configured; add one to stepline.toml, e.g. [schedules.inbox] with "
            'workflow = "contract-review", interval_s = 300, input_dir = "inbox" (see the README)'
        )
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail(
            "stepline serve needs a running Prefect server for its schedules to fire: start one with "
            "`uv run prefect server start --background` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    from prefect import serve as prefect_serve

    from flows.schedules import build_deployments, describe_inputs, describe_when
    from steps.errors import ConfigError

    try:
        deployments = build_deployments(settings, names or None)
    except ConfigError as exc:
        _fail(str(exc))
    table = Table("deployment", "workflow", "when", "inputs")
    for deployment in deployments:
        config = settings.schedules[deployment.name]
        table.add_row(
            f"{deployment.flow_name}/{deployment.name}",
            config.workflow,
            describe_when(config),
            escape(describe_inputs(config)),
        )
    out.print(table)
    err.print(
        f"serving {len(deployments)} deployments on {PREFECT_API_URL.value()}; "
        "run one now with `prefect deployment run stepline-batch/<name>`; Ctrl-C stops"
    )
    prefect_serve(*deployments, limit=limit, print_starting_message=False)


@app.command()
def costs(as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False) -> None:
    """Spend by workflow, step and model: token usage times the catalog's prices."""
    rows = _open_store().costs()
    if as_json:
        for workflow, step, model, attempts, tokens_in, tokens_out, usd in rows:
            record = {
                "workflow": workflow,
                "step": step,
                "model": model,
                "attempts": attempts,
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "cost_usd": usd,
            }
            out.print(json.dumps(record), markup=False)
        return
    table = Table("workflow", "step", "model", "attempts", "tokens in", "tokens out", "cost $")
    for workflow, step, model, attempts, tokens_in, tokens_out, usd in rows:
        names = (Text(for_terminal(name or "")) for name in (workflow, step, model))
        table.add_row(*names, str(attempts), str(tokens_in), str(tokens_out), f"{usd:.6f}")
    table.add_section()
    table.add_row("total", "", "", str(sum(r[3] for r in rows)), "", "", f"{sum(r[6] for r in rows):.6f}")
    out.print(table)


def _report_stop(result: Any) -> NoReturn:
    """An instance that stopped: where, why, and the command that moves it on."""
    if result.superseded:
        err.print(f"[bold red]instance {result.instance_id} was taken over[/] while this process ran it")
        err.print(f"  {for_terminal(result.error or '')}", markup=False, highlight=False)
        err.print(f"  details: stepline show {result.instance_id}")
        _end(1)
    err.print(
        f"[bold red]instance {result.instance_id} {result.status.value}[/] at step "
        f"{escape(for_terminal(repr(result.failed_step)))}: {escape(for_terminal(str(result.failure_class)))}"
    )
    err.print(f"  {for_terminal(result.error or '')}", markup=False, highlight=False)
    err.print(f"  details: stepline show {result.instance_id}")
    if result.review_id:
        err.print(f"  review:  stepline review show {result.review_id}")
    else:
        err.print(f"  replay:  stepline replay {result.instance_id}")
    _end(1)


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
            out.print(json_text_for_terminal(row.model_dump_json(exclude={"input", "output"})), markup=False)
        return
    table = Table("id", "workflow", "status", "failed step", "failure", "owner", "created (UTC)")
    for row in rows:
        table.add_row(
            row.id[:12],  # a unique prefix is enough for every command
            *(Text(for_terminal(text or "")) for text in (row.workflow, row.status, row.failed_step)),
            *(Text(for_terminal(text or "")) for text in (row.failure_class, row.owner)),
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
    _check_id("instance", instance, "stepline instances")
    store = _open_store()
    matches = store.find_instance(instance)
    if not matches:
        _fail(f"no instance with id {instance!r}; list them with `stepline instances`")
    if len(matches) > 1:
        _fail(f"{instance!r} matches several instances; give more of the id")
    inst_id = matches[0].id
    detail = store.instance_detail(inst_id)
    assert detail is not None
    if as_json:
        record = {
            "instance": detail.instance.model_dump(mode="json"),
            "step_runs": [run.model_dump(mode="json") for run in detail.step_runs],
            "attempts": [attempt.model_dump(mode="json") for attempt in detail.attempts],
            "schemas": {  # each schema the attempts were validated against, once, by its hash
                digest: store.schema(digest)
                for digest in dict.fromkeys(a.schema_hash for a in detail.attempts if a.schema_hash)
            },
            "reviews": [
                r.model_dump(mode="json") for r in store.list_reviews(status=None, instance_id=inst_id)
            ],
            "notifications": [n.model_dump(mode="json") for n in store.notifications(inst_id)],
        }
        _print_json(json.dumps(record, indent=2, ensure_ascii=False))
        return

    def _line(text: str) -> None:  # input and model text spelled out for a terminal
        out.print(for_terminal(text), markup=False, highlight=False)

    inst = detail.instance
    _line(f"instance {inst.id}  workflow {inst.workflow}  status {inst.status}  owner {inst.owner}")
    _line(f"flow run {inst.flow_run_id}  created {inst.created_at:%Y-%m-%d %H:%M:%S}")
    if inst.source:
        _line(f"input from {inst.source}")
    if inst.failed_step:
        _line(f"failed at {inst.failed_step}: {inst.failure_class}: {inst.error}")
    if inst.output is not None:
        _line("output:")
        _line(json_for_terminal(inst.output, indent=2))
    table = Table("step", "#", "model", "result", "tokens", "cost $", "ms", "waited s")
    sampling: dict[str, str] = {}
    cleared: dict[str, str] = {}
    for a in detail.attempts:
        table.add_row(
            Text(for_terminal(a.step)),
            str(a.attempt_number),
            Text(for_terminal(a.model_id)),
            Text(for_terminal(a.outcome)),
            f"{a.tokens_in or 0}/{a.tokens_out or 0}",
            f"{a.cost_usd or 0:.6f}",
            f"{a.latency_ms or 0:.0f}",
            f"{a.wait_s:.2f}" if a.wait_s else "",
        )
        sampling.setdefault(f"{a.step} on {a.model_id}", json.dumps(a.sampling))
        fields = (a.pii or {}).get("declassified") or {}
        if fields:
            cleared.setdefault(
                f"{a.step} on {a.model_id}", "; ".join(f"${k} by {v}" for k, v in fields.items())
            )
    out.print(table)
    for where, sent in sampling.items():
        _line(f"sampling sent for {where}: {sent}")
    for where, how in cleared.items():  # text a public model saw, and what cleared it
        _line(f"cleared for {where}: {how}")
    for review in store.list_reviews(status=None, instance_id=inst_id):
        _line(f"review {review.id} ({review.status}) for {review.step}[{review.index}]")
    for note in store.notifications(inst_id):
        outcome = "delivered" if note.delivered else f"NOT delivered: {note.error}"
        _line(f"notified {note.target} about {note.event}: {outcome}")
    for a in detail.attempts:
        if a.failure_class:
            heading = for_terminal(f"{a.step} attempt {a.attempt_number}: {a.failure_class}")
            out.print(f"\n[bold]{escape(heading)}[/]", highlight=False)
            if a.error_message:
                _line(a.error_message)
            _line(f"raw output: {a.raw_output!r}")
            for error in a.validation_errors or []:
                _line(f"  {error['path']}: {error['message']}")


@app.command()
def tui() -> None:
    """Open the operator's terminal UI: browse instances, open a failed attempt beside its schema."""
    # Not _open_store_and_settings(): on a SQLite file the first rows are read with sqlite3 and
    # painted before the settings, SQLAlchemy and the migration check load (in a worker after
    # the paint); they took three times a bare Textual app's first paint. See tui/start.py.
    # `stepline tui` as typed does not come here at all: stepline.launch runs it without typer.
    from tui import start

    raise typer.Exit(start.run())


server_app = typer.Typer(
    help="Prefect's local API server: started by the first command that runs a flow, then shared.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


@server_app.command("start")
def server_start() -> None:
    """Start it now (commands that run flows start it on first need); prints its API URL.

    It listens on 127.0.0.1 only, runs in a session of its own and outlives this command.
    """
    from flows import local_server

    configured = local_server.configured_api_url()
    if configured is not None:
        url, where = configured
        _fail(f"a Prefect server is configured ({url}, from {where}): stepline uses it, not a local one")
    try:
        with err.status("starting Prefect's local API server (about 15 s)…"):
            ensured = local_server.ensure()
    except local_server.ServerError as exc:
        _fail(str(exc))
    assert ensured is not None  # nothing configured, checked above
    state = ensured.state
    if ensured.started:
        err.print(local_server.announcement(ensured), markup=False, highlight=False)
    else:
        err.print(f"Prefect's local API server is already running (pid {state.pid})", highlight=False)
    out.print(state.url, markup=False, highlight=False)


@server_app.command("status")
def server_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Whether it runs, and its URL, pid, Prefect version, uptime and home.

    Exits 0 when it is running and answers, 1 when it is not (not running, still starting,
    or not answering), 2 on errors.
    """
    from flows import local_server

    found = local_server.status()
    state = found.state if found.condition != "not running" else None
    if as_json:
        report = {
            "status": found.condition,
            "url": state.url if state else None,
            "pid": state.pid if state else None,
            "prefect_version": found.served_version or (state.prefect_version if state else None),
            "started_at": state.started_at if state else None,
            "uptime_s": round(state.uptime_s, 1) if state else None,
            "home": str(local_server.server_home()),
            "log": str(local_server.log_path()),
            "configured_api_url": found.configured[0] if found.configured else None,
        }
        out.print(json.dumps(report), markup=False, highlight=False)
    else:
        out.print(f"Prefect's local API server: {found.condition}", markup=False, highlight=False)
        if state is not None:
            version = found.served_version or f"{state.prefect_version} (when started)"
            for label, value in (
                ("url", state.url),
                ("pid", str(state.pid)),
                ("version", f"Prefect {version}"),
                ("uptime", _duration(state.uptime_s)),
            ):
                out.print(f"  {label:<8}{value}", markup=False, highlight=False)
        out.print(f"  {'home':<8}{local_server.server_home()}", markup=False, highlight=False)
        if found.condition == "not running":
            err.print("commands that run a flow start it; `stepline server start` starts it now")
        if found.configured is not None:
            url, where = found.configured
            err.print(
                f"a Prefect server is configured ({url}, from {where}): stepline commands use it, "
                "not this local one",
                markup=False,
                highlight=False,
            )
    if found.condition != "running":
        raise typer.Exit(1)


@server_app.command("stop")
def server_stop() -> None:
    """Stop it: SIGTERM to its process group, SIGKILL after 10 s; flows running on it fail."""
    from flows import local_server

    try:
        with err.status("stopping Prefect's local API server…"):
            state = local_server.stop()
    except local_server.ServerError as exc:
        _fail(str(exc))
    if state is None:
        err.print("Prefect's local API server is not running; nothing to stop")
    else:
        err.print(f"stopped Prefect's local API server (pid {state.pid}, {state.url})", highlight=False)


@server_app.command("logs")
def server_logs(
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many of the last lines.")] = 40,
) -> None:
    """Print the last lines of its log (control characters spelled out, never sent to the terminal)."""
    from flows import local_server

    try:
        found = local_server.tail(lines)
    except local_server.ServerError as exc:
        _fail(str(exc))
    for line in found:
        out.print(for_terminal(line), markup=False, highlight=False)


def main() -> None:
    from stepline.errors import StepLineError

    try:
        app()
    except StepLineError as exc:  # whatever a command did not handle: one line, never a traceback
        err.print(f"[bold red]error:[/] {escape(for_terminal(str(exc)))}", markup=True, highlight=False)
        sys.exit(1)
