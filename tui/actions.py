"""What the TUI asks of ``flows``: approve, reject, replay. Run in worker threads, never at start-up.

Prefect and the provider SDKs are not on the start-up path, so the first paint
stays fast; ``warm`` loads them in a worker thread once the app is up, opens
one ``Runtime`` for the process and builds the clients the workflows' first
steps use, so an action sends its first request within about a second of the
key press instead of after the 5-10 s those imports and Prefect's set-up take.
The runtime is opened again when the catalog file changes.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

__all__ = [
    "Outcome",
    "approve",
    "describe_failure",
    "operator",
    "reject",
    "replay",
    "replay_step",
    "save_prompt",
    "shared_runtime",
    "shutdown",
    "warm",
]

_lock = threading.Lock()
_shared: dict[str, Any] = {}
"""``runtime`` and the catalog file's ``stamp`` it was opened with."""


def operator() -> str:
    """Who is deciding, for the record: ``STEPLINE_AUTHOR``, else the login name."""
    import getpass
    import os

    return os.environ.get("STEPLINE_AUTHOR") or getpass.getuser()


class Outcome:
    """What happened, in one line, whether it went well, and if not what the operator can do."""

    def __init__(self, ok: bool, message: str, action: str = "", *, interrupted: bool = False) -> None:
        self.ok = ok
        self.message = message
        self.action = action
        self.interrupted = interrupted
        """Paused before a step because the operator asked (``x``): said, not shown as a failure."""


def describe_failure(exc: BaseException) -> Outcome:
    """Any failure of an action as an ``Outcome``: the TUI shows it and never quits over it."""
    from stepline.errors import StepLineError
    from steps.errors import StepFailed

    if isinstance(exc, StepFailed):
        return Outcome(False, exc.message, exc.failure.behaviour.action)
    if isinstance(exc, StepLineError):
        return Outcome(False, exc.message)
    return Outcome(  # not one of Stepline's own errors: a bug, said as such
        False,
        f"{type(exc).__name__}: {exc}",
        "this is a bug in Stepline; the instance is as `stepline show <id>` says; please report it",
    )


def warm() -> None:
    """Load the engine and open the shared runtime ahead of the first action; errors wait for it."""
    try:
        with _runtime() as runtime:
            from flows.registry import known_workflows

            for workflow in known_workflows().values():
                first = workflow.steps[0]
                runtime.executor.prepare(first, workflow.privacy.of(first))
    except Exception:  # the action that needs it reports the same failure, in its modal
        return


def shared_runtime() -> Any:
    """The runtime actions use now (None before the first action or ``warm``)."""
    return _shared.get("runtime")


def shutdown() -> None:
    """Close the shared runtime (the app is leaving)."""
    with _lock:
        runtime = _shared.pop("runtime", None)
    if runtime is not None:
        runtime.close()


def _stamp() -> tuple[object, ...]:
    """What the runtime was opened from: the catalog file as it is now, and STEPLINE_* variables."""
    import os

    from steps.settings import catalog_path

    path = catalog_path()
    try:
        modified: float | None = path.stat().st_mtime
    except OSError:
        modified = None
    variables = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("STEPLINE_")))
    return str(path), modified, variables


def _runtime() -> contextlib.nullcontext[Any]:
    """The process's runtime (opened on first need, again after the catalog changed).

    Its flows use the configured Prefect server, else the shared local one: the local
    server is ensured before ``flows.engine`` imports Prefect, which reads PREFECT_API_URL
    once at import; on later calls it is checked again (it may have been stopped
    meanwhile) and Prefect's settings follow it.
    """
    with _lock:
        stamp = _stamp()
        runtime = _shared.get("runtime")
        if runtime is not None and _shared.get("stamp") != stamp:
            runtime.close()
            runtime = None
        _ensure_server()
        if runtime is None:
            runtime = _open()
            _shared.update(runtime=runtime, stamp=stamp)
        return contextlib.nullcontext(runtime)  # lent to one action: leaving the ``with`` keeps it open


def _ensure_server() -> None:
    import atexit
    import os
    import sys

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows import local_server
    from flows.results import keep_results_private

    keep_results_private()  # before Prefect is imported: its result files under Stepline's home

    ensured = local_server.ensure()
    if ensured is not None and ensured.started:
        line = local_server.announcement(ensured)

        def say() -> None:  # the TUI owns the terminal: say so once the screen is restored, at exit
            still = local_server.status().state
            if still is not None and still.pid == ensured.state.pid:
                print(line, file=sys.__stderr__)

        atexit.register(say)


def _open() -> Any:
    import logging

    from flows.runtime import Runtime

    for name in ("prefect", "instructor"):  # outcomes are recorded; keep tracebacks off the screen
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return Runtime.open()


def _describe(result: Any) -> Outcome:
    from steps.errors import FailureClass

    if result.status.value == "completed":
        return Outcome(True, f"instance {result.instance_id[:12]} completed")
    known = {f.value for f in FailureClass}
    failure = FailureClass(result.failure_class) if result.failure_class in known else FailureClass.UNKNOWN
    return Outcome(
        False,
        f"instance {result.instance_id[:12]} {result.status.value} at {result.failed_step}: "
        f"{result.failure_class}: {result.error or ''}".rstrip(": "),
        failure.behaviour.action.replace("<id>", result.instance_id[:12]),
        interrupted=failure is FailureClass.INTERRUPTED,
    )


def approve(
    review_id: str, output: Any, by: str, on_step: Any = None, cancel: threading.Event | None = None
) -> Outcome:
    """Approve, then resume the instance: ``on_step`` hears each step as it starts; once
    ``cancel`` is set it pauses before its next step."""
    from flows.instances import approve_review

    try:
        with _runtime() as runtime:
            result = approve_review(
                review_id, output, runtime, by=by, note="approved in the TUI", on_step=on_step, cancel=cancel
            )
            return _describe(result)
    except Exception as exc:
        return describe_failure(exc)


def reject(review_id: str, by: str) -> Outcome:
    from flows.instances import reject_review

    try:
        with _runtime() as runtime:
            reject_review(review_id, runtime, by=by, note="rejected in the TUI")
    except Exception as exc:
        return describe_failure(exc)
    return Outcome(True, f"review {review_id[:12]} rejected; the instance is failed")


def replay(instance_id: str, on_step: Any = None, cancel: threading.Event | None = None) -> Outcome:
    """Rerun from the failed step: ``on_step`` hears each step as it starts; once ``cancel`` is
    set the instance pauses before its next step."""
    from flows.instances import replay as replay_instance

    try:
        with _runtime() as runtime:
            return _describe(replay_instance(instance_id, runtime, on_step=on_step, cancel=cancel))
    except Exception as exc:
        return describe_failure(exc)


def save_prompt(step_name: str, system: str, template: str, author: str, note: str | None) -> Outcome:
    """Check the edited prompt against the step in code, then make it the step's prompt."""
    import dataclasses

    from flows.registry import known_workflows
    from steps.definition import Prompt
    from steps.routing import choose_route

    try:
        found = [(w, s) for w in known_workflows().values() for s in w.steps if s.name == step_name]
        if not found:
            return Outcome(False, f"no registered workflow has a step {step_name!r}; nothing saved")
        prompt = Prompt(system=system, user=template)
        # The checks a prompt in code gets, and where the step may run with it (steps.privacy).
        edited = [(w, s, dataclasses.replace(s, prompt=prompt)) for w, s in found]
        moved = [
            w.privacy.of(new).private_reason
            for w, old, new in edited
            if w.privacy.of(new).private_only and not w.privacy.of(old).private_only
        ]
        with _runtime() as runtime:
            for w, _, new in edited:
                if w.privacy.of(new).private_only:  # a prompt no model may serve is not saved
                    choose_route(new, runtime.settings, privacy=w.privacy.of(new))
            version = runtime.store.set_current_prompt(
                step_name, system, template, prompt.content_hash, author, note
            )
    except Exception as exc:
        outcome = describe_failure(exc)
        return Outcome(False, f"{outcome.message}; nothing saved", outcome.action)
    private = f"; it now runs on private models only: {moved[0]}" if moved else ""
    return Outcome(True, f"saved as version {version[:12]}; {step_name} uses it from its next run{private}")


def replay_step(step: str, on_result: Any, cancel: threading.Event | None = None) -> Outcome:
    """Replay every instance stopped at ``step``; ``on_result`` hears each as it ends; once
    ``cancel`` is set, no further instance starts."""
    from flows.instances import replay_step_failures

    try:
        with _runtime() as runtime:
            done = replay_step_failures(step, runtime, on_result=on_result, cancel=cancel)
    except Exception as exc:
        return describe_failure(exc)
    return Outcome(True, f"{step}: {len(done)} instance(s) replayed")
