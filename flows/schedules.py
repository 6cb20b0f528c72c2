"""Scheduled runs: each ``[schedules.<name>]`` becomes a Prefect deployment of one flow.

The flow, ``stepline-batch``, runs one workflow over a batch of inputs: the
new files of a watched folder, or every input of a parameters file. Its
deployments are served by Prefect's own runner (``stepline serve`` calls
``prefect.serve``) or, from ``prefect.yaml``, by workers of a work pool; both
are built here from the same config, so they cannot drift apart.

Schedules are checked with Prefect's own schedule models, so a cron string or
time zone Prefect would reject is refused before anything is registered, with
the config key that holds it.
"""

from __future__ import annotations

import datetime
import difflib
import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from prefect import flow, get_run_logger
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from pydantic import ValidationError

from flows.batch import read_items, run_batch
from flows.registry import get_workflow
from flows.results import discard_failure_result
from flows.runtime import Runtime
from flows.team import QUEUED_DEPLOYMENT, QUEUED_ENTRYPOINT
from steps.errors import ConfigError, InputError
from steps.settings import ScheduleConfig, Settings

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = [
    "BATCH_ENTRYPOINT",
    "BATCH_FLOW",
    "WORK_POOL",
    "build_deployments",
    "describe_inputs",
    "describe_when",
    "prefect_schedule",
    "prefect_yaml",
    "schedule_problems",
    "scheduled_batch",
]

BATCH_FLOW = "stepline-batch"
BATCH_ENTRYPOINT = "flows/schedules.py:scheduled_batch"
"""The flow as ``prefect deploy`` finds it, relative to the project root."""
WORK_POOL = "stepline"
"""The work pool ``prefect.yaml`` deploys to (``prefect work-pool create stepline --type process``)."""


@flow(name=BATCH_FLOW, persist_result=False, on_failure=[discard_failure_result])
def scheduled_batch(
    workflow: str,
    input_dir: str | None = None,
    parameters_file: str | None = None,
    concurrency: int = 4,
    owner: str | None = None,
) -> dict[str, int]:
    """One scheduled run: the watched folder's new inputs, or the parameters file's inputs."""
    chosen = get_workflow(workflow)
    if (input_dir is None) == (parameters_file is None):
        raise InputError("pass exactly one of input_dir (a folder to watch) or parameters_file")
    source = Path(input_dir or parameters_file or "")
    if input_dir is not None and not source.is_dir():
        raise InputError(f"watched folder {source.resolve()} does not exist; create it or fix input_dir")
    logger = get_run_logger()
    items = read_items(source)
    with Runtime.open() as runtime:
        report = run_batch(
            chosen,
            items,
            runtime,
            concurrency=concurrency,
            owner=owner,
            skip_seen=input_dir is not None,  # a folder is an inbox; a parameters file runs every tick
        )
    for outcome in report.needing_attention():
        logger.warning(
            "%s: %s%s%s",
            outcome.item.source,
            outcome.status,
            f" (instance {outcome.instance_id})" if outcome.instance_id else "",
            f": {outcome.message}" if outcome.message else "",
        )
    counts = dict(sorted(report.counts().items()))
    logger.info("%s over %s: %s", workflow, source, counts or "no inputs")
    return counts


def prefect_schedule(name: str, config: ScheduleConfig) -> CronSchedule | IntervalSchedule:
    """The schedule as Prefect models it; a ``ConfigError`` naming the key if Prefect refuses it."""
    try:
        if config.cron is not None:
            return CronSchedule(cron=config.cron, timezone=config.timezone)
        assert config.interval_s is not None  # ScheduleConfig requires one of the two
        return IntervalSchedule(
            interval=datetime.timedelta(seconds=config.interval_s), timezone=config.timezone
        )
    except ValidationError as exc:
        key = "cron" if config.cron is not None else "interval_s"
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or key}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"schedules.{name}: Prefect rejects this schedule ({problems}); "
            'cron takes five fields such as "0 7 * * mon-fri", timezone an IANA name such as Europe/Berlin'
        ) from None


def schedule_problems(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Everything wrong with the configured schedules, one line each (empty when all is well)."""
    problems: list[str] = []
    for name, config in _selected(settings, names, problems):
        try:
            prefect_schedule(name, config)
        except ConfigError as exc:
            problems.append(exc.message)
        try:
            get_workflow(config.workflow)
        except InputError as exc:  # its message suggests the closest name
            problems.append(f"schedules.{name}.workflow: {exc.message}")
        if config.input_dir is not None and config.input_dir.exists() and not config.input_dir.is_dir():
            problems.append(
                f"schedules.{name}.input_dir: {config.input_dir} is a file; name a folder to watch"
            )
        if config.parameters_file is not None and not config.parameters_file.is_file():
            problems.append(
                f"schedules.{name}.parameters_file: {config.parameters_file.resolve()} does not exist; "
                "create it (one JSON input, or JSONL with one per line) or fix the path"
            )
    return problems


def _selected(
    settings: Settings, names: Iterable[str] | None, problems: list[str]
) -> list[tuple[str, ScheduleConfig]]:
    if names is None:
        return list(settings.schedules.items())
    chosen = []
    for name in names:
        if name in settings.schedules:
            chosen.append((name, settings.schedules[name]))
        else:
            close = difflib.get_close_matches(name, settings.schedules, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"no schedule {name!r}; {hint}configured: {', '.join(settings.schedules) or 'none'}"
            )
    return chosen


def parameters(config: ScheduleConfig, *, base: Path | None = None) -> dict[str, Any]:
    """The flow parameters of a schedule; relative paths resolved against ``base`` if given."""

    def path(value: Path) -> str:
        return str((base / value).resolve()) if base is not None else value.as_posix()

    found: dict[str, Any] = {"workflow": config.workflow, "concurrency": config.concurrency}
    if config.input_dir is not None:
        found["input_dir"] = path(config.input_dir)
    if config.parameters_file is not None:
        found["parameters_file"] = path(config.parameters_file)
    if config.owner is not None:
        found["owner"] = config.owner
    return found


def describe_when(config: ScheduleConfig) -> str:
    """``cron 0 7 * * mon-fri (Europe/Berlin)`` or ``every 300 s``."""
    when = f"cron {config.cron}" if config.cron is not None else f"every {config.interval_s:g} s"
    return f"{when} ({config.timezone})" if config.timezone else when


def describe_inputs(config: ScheduleConfig) -> str:
    """``new inputs in inbox/`` or ``every input of daily.jsonl``."""
    if config.input_dir is not None:
        return f"new inputs in {config.input_dir.as_posix()}/"
    return f"every input of {config.parameters_file}"


def _description(name: str, config: ScheduleConfig) -> str:
    return f"{config.workflow} on {describe_inputs(config)} ([schedules.{name}] in the Stepline config)"


def build_deployments(
    settings: Settings, names: Iterable[str] | None = None, *, base: Path | None = None
) -> list[RunnerDeployment]:
    """One served deployment per schedule; watched folders are created if missing."""
    from prefect.types.entrypoint import EntrypointType

    names = list(names) if names is not None else None
    problems = schedule_problems(settings, names)
    if problems:
        raise ConfigError("; ".join(problems))
    base = base or Path.cwd()
    deployments = []
    for name, config in _selected(settings, names, []):
        if config.input_dir is not None:
            (base / config.input_dir).mkdir(parents=True, exist_ok=True)
        deployment = scheduled_batch.to_deployment(
            name=name,
            description=_description(name, config),
            schedules=[prefect_schedule(name, config)],
            parameters=parameters(config, base=base),
            tags=["stepline", config.workflow],
            # A module path, not a file path: the runner's processes import the
            # installed package from any working directory.
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        assert not inspect.isawaitable(deployment)  # called from sync code: never a coroutine
        deployments.append(deployment)
    return deployments


def prefect_yaml(settings: Settings, *, source: str) -> str:
    """The same deployments as a ``prefect.yaml`` for a work pool of process workers."""
    problems = schedule_problems(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    deployments = []
    for name, config in settings.schedules.items():
        schedule = prefect_schedule(name, config)
        entry: dict[str, Any] = {}
        if isinstance(schedule, CronSchedule):
            entry["cron"] = schedule.cron
        else:
            entry["interval"] = schedule.interval.total_seconds()
        if config.timezone is not None:
            entry["timezone"] = config.timezone
        deployments.append(
            {
                "name": name,
                "description": _description(name, config),
                "entrypoint": BATCH_ENTRYPOINT,
                "parameters": parameters(config),
                "schedules": [entry],
                "tags": ["stepline", config.workflow],
                "work_pool": {"name": WORK_POOL},
            }
        )
    deployments.append(
        {
            "name": QUEUED_DEPLOYMENT,
            "description": "instances queued by `stepline submit`, run by this pool's workers",
            "entrypoint": QUEUED_ENTRYPOINT,
            "tags": ["stepline"],
            "work_pool": {"name": WORK_POOL},
        }
    )
    header = (
        "# Stepline's scheduled runs, and the runs `stepline submit` asks for, as Prefect\n"
        "# deployments for a work pool of process workers.\n"
        f"# Generated by `stepline schedules --prefect-yaml` from {source};\n"
        "# change [schedules] there and regenerate rather than editing this file.\n"
        "# From the project root (relative input paths are relative to it), or all at once\n"
        "# with deploy/team.sh (README, Running at team scale):\n"
        f"#   prefect work-pool create {WORK_POOL} --type process\n"
        "#   prefect deploy --all\n"
        f"#   prefect worker start --pool {WORK_POOL}\n"
    )
    body = {"name": "stepline", "deployments": deployments}
    return header + str(yaml.safe_dump(body, sort_keys=False, default_flow_style=False))
