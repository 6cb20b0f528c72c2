"""The step executor's retries, fallbacks, re-asks and escalation, driven by function models.

No HTTP, Prefect or database: each model is a Python function (``steps.providers.function``),
and attempts go to an in-memory sink, our own double of the storage edge.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from steps.definition import CLASSIFY, Prompt, Sensitivity, Step, Tier
from steps.errors import ConfigError, FailureClass, StepFailed
from steps.providers.function import Answer, FunctionRequest, ModelFailure, Reply
from steps.retry import RetryPolicy
from steps.runtime import Clearance, MemorySink, StepExecutor
from steps.settings import ModelConfig, ProviderConfig, ProviderKind, Settings, StructuredMode
from tests.catalogs import use_catalog


class Ticket(BaseModel):
    text: str


class Label(BaseModel):
    label: Literal["spam", "ham"]


STEP: Step[Ticket, Label] = Step(
    name="label-ticket",
    kind=CLASSIFY,
    prompt=Prompt(system="Label the ticket.", user="$text"),
    input_model=Ticket,
    output_model=Label,
)
TICKET = Ticket(text="Win a prize now!")
FAST = RetryPolicy(
    retries={FailureClass.RATE_LIMITED: 2, FailureClass.UNAVAILABLE: 1, FailureClass.TIMEOUT: 1},
    base_delay_s=0.001,
    max_delay_s=0.01,
    jitter=0,
)
"""Backoff of a millisecond or two; a retry-after still wins (``RetryPolicy.delay``)."""


class Script:
    """A function model answering from a list, one item per request (the last one repeats);
    an exception in the list is raised. It keeps every request it received."""

    def __init__(self, *replies: Answer | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[FunctionRequest] = []

    def __call__(self, request: FunctionRequest) -> Answer:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply


Catalog = Callable[..., Settings]
Run = Callable[..., Label]


@pytest.fixture
def catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Catalog:
    """Settings with function models only: ``catalog(cheap=fn, ...)``; ``private`` names the
    models on the private provider, ``tiers`` their tier, ``mode`` their structured mode."""
    use_catalog(monkeypatch, tmp_path, "")  # nothing from a file: every model below is a function

    def build(
        private: tuple[str, ...] = (),
        tiers: dict[str, Tier] | None = None,
        mode: StructuredMode = StructuredMode.TOOLS,
        **functions: Callable[[FunctionRequest], Answer],
    ) -> Settings:
        return Settings(
            providers={
                "public": ProviderConfig(kind=ProviderKind.FUNCTION),
                "private": ProviderConfig(kind=ProviderKind.FUNCTION, private=True),
            },
            models={
                model_id: ModelConfig(
                    provider="private" if model_id in private else "public",
                    model=model_id,
                    tier=(tiers or {}).get(model_id, Tier.CHEAP),
                    structured_mode=mode,
                    function=function,
                )
                for model_id, function in functions.items()
            },
            retry=FAST,
        )

    return build


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def run(waits: list[float]) -> Iterator[Run]:
    """Run a step on a fresh executor into ``sink``; backoff waits are recorded, not slept."""
    executors: list[StepExecutor] = []

    def go(settings: Settings, sink: MemorySink, step: Step[Ticket, Label] = STEP) -> Label:
        executor = StepExecutor(settings, sleep=waits.append)
        executors.append(executor)
        return executor.run(step, TICKET, sink, Clearance.alone(step))

    yield go
    for executor in executors:
        executor.close()


def failures(sink: MemorySink) -> list[FailureClass | None]:
    return [record.failure for record in sink.finished]


def test_a_rate_limit_is_retried_after_the_wait_it_asked_for(
    catalog: Catalog, run: Run, waits: list[float]
) -> None:
    model = Script(ModelFailure(FailureClass.RATE_LIMITED, "slow down", retry_after=0.05), {"label": "spam"})

    sink = MemorySink()
    output = run(catalog(cheap=model), sink)

    assert output == Label(label="spam")
    assert failures(sink) == [FailureClass.RATE_LIMITED, None]
    assert [r.attempt_number for r in sink.finished] == [1, 2]
    assert sink.finished[0].retry_after_s == 0.05
    assert waits == [0.05]  # the backoff (about 1 ms) gave way to retry-after
    assert sink.finished[1].wait_s is not None
    assert sink.finished[1].wait_s >= 0.05
    assert len(model.requests) == 2


def test_an_unavailable_model_falls_back_to_the_next(catalog: Catalog, run: Run) -> None:
    primary = Script(ModelFailure(FailureClass.UNAVAILABLE, "503 from upstream"))
    backup = Script({"label": "ham"})
    step = replace(STEP, model="primary", fallbacks=("backup",))

    sink = MemorySink()
    output = run(catalog(primary=primary, backup=backup), sink, step)

    assert output == Label(label="ham")
    assert [(r.model_id, r.failure) for r in sink.finished] == [
        ("primary", FailureClass.UNAVAILABLE),
        ("primary", FailureClass.UNAVAILABLE),  # its one retry (FAST)
        ("backup", None),
    ]
    assert "fallback #1" in sink.finished[2].routing_reason
    assert "primary failed with unavailable" in sink.finished[2].routing_reason


def test_a_pii_step_never_falls_back_to_a_public_model(catalog: Catalog, run: Run) -> None:
    vpc = Script(ModelFailure(FailureClass.UNAVAILABLE))
    public = Script({"label": "ham"})
    settings = catalog(private=("vpc",), vpc=vpc, public=public)
    pii = replace(STEP, sensitivity=Sensitivity.PII)

    sink = MemorySink()
    with pytest.raises(StepFailed) as failed:
        run(settings, sink, pii)  # routed to the private model only, and no fallback crosses the line
    assert failed.value.failure is FailureClass.UNAVAILABLE
    assert {r.model_id for r in sink.finished} == {"vpc"}

    with pytest.raises(ConfigError, match="not private"):
        run(settings, MemorySink(), replace(pii, fallbacks=("public",)))
    assert public.requests == []


@pytest.mark.parametrize("mode", list(StructuredMode))
def test_invalid_output_is_reasked_and_each_answer_recorded(
    catalog: Catalog, run: Run, mode: StructuredMode
) -> None:
    model = Script('{"label": "maybe"', {"label": "maybe"}, {"label": "spam"})

    sink = MemorySink()
    output = run(catalog(mode=mode, cheap=model), sink)

    assert output == Label(label="spam")
    assert failures(sink) == [FailureClass.SCHEMA_INVALID, FailureClass.SCHEMA_INVALID, None]
    assert [r.raw_output for r in sink.finished] == [
        '{"label": "maybe"',
        '{"label": "maybe"}',
        '{"label": "spam"}',
    ]
    assert sink.finished[1].validation_errors
    assert sink.finished[1].validation_errors[0]["path"] == "$.label"
    assert all(r.expected_schema == STEP.output_schema() for r in sink.finished)
    assert len(model.requests[1].messages) > len(model.requests[0].messages)  # the re-ask says why
    if mode is not StructuredMode.JSON:
        assert model.requests[0].schema is not None
        assert model.requests[0].schema["properties"]["label"]["enum"] == ["spam", "ham"]
    assert model.requests[0].sampling == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256}


def test_a_refusal_is_recorded_as_such_and_neither_retried_nor_reasked(catalog: Catalog, run: Run) -> None:
    model = Script(Reply(refusal="I can't help with that."))
    backup = Script({"label": "ham"})
    step = replace(STEP, model="cheap", fallbacks=("backup",))

    sink = MemorySink()
    with pytest.raises(StepFailed) as failed:
        run(catalog(cheap=model, backup=backup), sink, step)

    assert failed.value.failure is FailureClass.REFUSED
    [record] = sink.finished
    assert record.raw_output == "I can't help with that."
    assert record.error_message == 'the model refused: "I can\'t help with that."'
    assert len(model.requests) == 1
    assert backup.requests == []


@pytest.mark.parametrize(
    ("failure", "requests"),
    [(FailureClass.RATE_LIMITED, 3), (FailureClass.TIMEOUT, 2), (FailureClass.AUTH, 1)],
)
def test_retries_run_out_with_the_failure_that_ended_them(
    catalog: Catalog,
    run: Run,
    waits: list[float],
    failure: FailureClass,
    requests: int,
) -> None:
    model = Script(ModelFailure(failure, "no", retry_after=0.0))

    sink = MemorySink()
    with pytest.raises(StepFailed) as failed:
        run(catalog(cheap=model), sink)

    assert failed.value.failure is failure
    assert failed.value.model_id == "cheap"
    assert f"({requests} request(s) in this step)" in failed.value.message
    assert failures(sink) == [failure] * requests
    assert len(waits) == requests - 1
    assert all(w <= 0.01 for w in waits)


def test_schema_failures_escalate_once_to_a_more_capable_model(catalog: Catalog, run: Run) -> None:
    cheap = Script("not json")
    capable = Script({"label": "spam"})
    settings = catalog(tiers={"capable": Tier.CAPABLE}, cheap=cheap, capable=capable)
    step = replace(STEP, max_reasks=1, escalate_on_schema_failure=True)

    sink = MemorySink()
    output = run(settings, sink, step)

    assert output == Label(label="spam")
    assert [(r.model_id, r.failure) for r in sink.finished] == [
        ("cheap", FailureClass.SCHEMA_INVALID),
        ("cheap", FailureClass.SCHEMA_INVALID),
        ("capable", None),
    ]
    assert sink.finished[2].routing_reason.startswith("escalated from cheap")


def test_a_truncated_answer_is_not_reasked(catalog: Catalog, run: Run) -> None:
    model = Script(Reply(text='{"label": "sp', finish_reason="length"))

    sink = MemorySink()
    with pytest.raises(StepFailed) as failed:
        run(catalog(cheap=model), sink)

    assert failed.value.failure is FailureClass.TRUNCATED
    assert failed.value.raw_output == '{"label": "sp'
    assert len(model.requests) == 1


def test_a_function_model_cannot_come_from_a_catalog_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = '[providers.fn]\nkind = "function"\n[models.m]\nprovider = "fn"\nmodel = "m"\n'
    with pytest.raises(ConfigError, match="set in code"):
        use_catalog(monkeypatch, tmp_path, text)


def test_the_executor_runs_a_function_model_without_prefect_http_or_a_database(tmp_path: Path) -> None:
    """In a fresh interpreter, so that nothing this process loaded hides what the run needs."""
    (tmp_path / "empty.toml").write_text("")
    code = textwrap.dedent(
        """
        import json, sys
        from pydantic import BaseModel
        from steps.definition import CLASSIFY, Prompt, Step
        from steps.runtime import Clearance, StepExecutor
        from steps.settings import ModelConfig, ProviderConfig, Settings

        class In(BaseModel):
            text: str

        class Out(BaseModel):
            label: str

        class Sink:
            def prompt_version(self, step, prompt): return "v1"
            def attempt_started(self, record): return "a1"
            def attempt_finished(self, record): pass

        settings = Settings(
            providers={"fn": ProviderConfig(kind="function")},
            models={"m": ModelConfig(provider="fn", model="m", function=lambda request: {"label": "x"})},
        )
        step = Step(name="s", kind=CLASSIFY, prompt=Prompt(system="s", user="$text"), input_model=In,
                    output_model=Out)
        print(StepExecutor(settings).run(step, In(text="t"), Sink(), Clearance.alone(step)).label)
        print(json.dumps(sorted(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"STEPLINE_CONFIG": str(tmp_path / "empty.toml"), "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )
    label, modules = result.stdout.strip().splitlines()[-2:]
    loaded = {m.split(".")[0] for m in json.loads(modules)}
    assert label == "x"
    assert loaded & {"prefect", "storage", "flows", "sqlalchemy", "llama_cpp", "tests"} == set()


def test_request_failures_keep_their_class_and_wait() -> None:
    import pickle

    from steps.classify import classify_exception, retry_after_seconds

    failure = ModelFailure(FailureClass.OVERLOADED, "busy", retry_after=2.5)
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = failure
    assert classify_exception(wrapped) is FailureClass.OVERLOADED
    assert retry_after_seconds(wrapped) == 2.5
    again = pickle.loads(pickle.dumps(failure))  # noqa: S301  # Prefect moves exceptions between processes
    assert (again.failure, again.message, again.retry_after) == (FailureClass.OVERLOADED, "busy", 2.5)
    assert str(again) == "busy"


def test_the_answer_must_be_something_a_model_could_send() -> None:
    from steps.providers.function import _completion

    with pytest.raises(TypeError, match="not int"):
        _completion(7, {}, "m")
    assert json.loads(_completion(Label(label="ham"), {}, "m").choices[0].message.content or "") == {
        "label": "ham"
    }
