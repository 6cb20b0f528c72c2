"""What the TUI asks of ``flows``: approve, reject, replay. Run in worker threads, never at start-up.

Prefect and the provider SDKs load on the first call here, so browsing stays
fast; each call opens its own ``Runtime`` on the configured catalog and database.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Outcome", "approve", "operator", "reject", "replay", "replay_step", "save_prompt"]


def operator() -> str:
    """Who is deciding, for the record: ``STEPLINE_AUTHOR``, else the login name."""
    import getpass
    import os

    return os.environ.get("STEPLINE_AUTHOR") or getpass.getuser()


class Outcome:
    """What happened, in one line for a notification, and whether it went well."""

    def __init__(self, ok: bool, message: str) -> None:
        self.ok = ok
        self.message = message


def _runtime() -> Any:
    """A runtime whose flows use the configured Prefect server, else the shared local one.

    The local server is ensured before ``flows.engine`` imports Prefect, which reads
    PREFECT_API_URL once at import; on later calls it is checked again (it may have been
    stopped meanwhile) and Prefect's settings follow it.
    """
    import atexit
    import logging
    import os
    import sys

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows import local_server

    ensured = local_server.ensure()
    if ensured is not None and ensured.started:
        line = local_server.announcement(ensured)

        def say() -> None:  # the TUI owns the terminal: say so once the screen is restored, at exit
            still = local_server.status().state
            if still is not None and still.pid == ensured.state.pid:
                print(line, file=sys.__stderr__)

        atexit.register(say)
    from flows.engine import Runtime

    for name in ("prefect", "instructor"):  # outcomes are recorded; keep tracebacks off the screen
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return Runtime.open()


def _describe(result: Any) -> Outcome:
    if result.status.value == "completed":
        return Outcome(True, f"instance {result.instance_id[:12]} completed")
    return Outcome(
        False,
        f"instance {result.instance_id[:12]} {result.status.value} "
        f"at {result.failed_step}: {result.failure_class}",
    )


def approve(review_id: str, output: Any, by: str) -> Outcome:
    from flows.instances import approve_review
    from steps.errors import StepLineError

    with _runtime() as runtime:
        try:
            return _describe(approve_review(review_id, output, runtime, by=by, note="approved in the TUI"))
        except StepLineError as exc:
            return Outcome(False, exc.message)


def reject(review_id: str, by: str) -> Outcome:
    from flows.instances import reject_review
    from steps.errors import StepLineError

    with _runtime() as runtime:
        try:
            reject_review(review_id, runtime, by=by, note="rejected in the TUI")
        except StepLineError as exc:
            return Outcome(False, exc.message)
    return Outcome(True, f"review {review_id[:12]} rejected; the instance is failed")


def replay(instance_id: str) -> Outcome:
    from flows.instances import replay as replay_instance
    from steps.errors import StepLineError

    with _runtime() as runtime:
        try:
            return _describe(replay_instance(instance_id, runtime))
        except StepLineError as exc:
            return Outcome(False, exc.message)


def save_prompt(step_name: str, system: str, template: str, author: str, note: str | None) -> Outcome:
    """Check the edited prompt against the step in code, then make it the step's prompt."""
    import dataclasses

    from flows.registry import known_workflows
    from steps.definition import Prompt
    from steps.errors import StepLineError

    steps = [s for w in known_workflows().values() for s in w.steps if s.name == step_name]
    if not steps:
        return Outcome(False, f"no registered workflow has a step {step_name!r}; nothing saved")
    prompt = Prompt(system=system, user=template)
    try:
        for step in steps:
            dataclasses.replace(step, prompt=prompt)  # the checks a prompt in code gets
    except StepLineError as exc:
        return Outcome(False, f"{exc.message}; nothing saved")
    with _runtime() as runtime:
        version = runtime.store.set_current_prompt(
            step_name, system, template, prompt.content_hash, author, note
        )
    return Outcome(True, f"saved as version {version[:12]}; {step_name} uses it from its next run")


def replay_step(step: str, on_result: Any) -> None:
    """Replay every instance stopped at ``step``; ``on_result`` hears each as it ends."""
    from flows.instances import replay_step_failures

    with _runtime() as runtime:
        replay_step_failures(step, runtime, on_result=on_result)
