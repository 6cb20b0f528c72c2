"""Privacy by construction, asserted at the wire, on records nobody here wrote.

customer-intake runs on the generated corpus (``tests.privacy.corpus``: 72 records in 12
locales, 8 ways of writing). Its private model is a loopback OpenAI-compatible server marked
private; it answers extract-contact either correctly or with only half the values, and it
triages. The public model (OpenAI or Anthropic wire format) is cheaper, so the router sends it
every step it may. What the public server received is read back byte for byte: every JSON
string of every body, decoded, is searched for every planted value in every form it could
take (as written, its words, its digits, NFKC and case-folded).
"""

from __future__ import annotations

import json
import re
import typing
import unicodedata
from collections.abc import Callable, Iterator
from string import Template
from typing import Any

import pytest

from flows.batch import BatchItem, run_batch
from flows.customer_intake import WORKFLOW, DraftReply, ReplyRequest, draft_reply
from flows.runtime import Runtime
from tests.privacy.corpus import LOCALES, Record, clean_records, eager, forms, half, personal_records
from tests.servers import AnthropicServer, FakeLLMServer, OpenAIServer, Reply, ok

pytestmark = pytest.mark.usefixtures("prefect_harness")

PERSONAL = personal_records()
CLEAN = clean_records()

TOPICS = typing.get_args(ReplyRequest.model_fields["topic"].annotation)
CATEGORIES = typing.get_args(ReplyRequest.model_fields["category"].annotation)
URGENCIES = typing.get_args(ReplyRequest.model_fields["urgency"].annotation)
CHANNELS = typing.get_args(ReplyRequest.model_fields["channel"].annotation)
DRAFT_USER = re.compile(
    re.escape(draft_reply.prompt.user)
    .replace(re.escape("$customer"), r"\[NAME\]")
    .replace(re.escape("$channel"), f"({'|'.join(CHANNELS)})")
    .replace(re.escape("$category"), f"({'|'.join(CATEGORIES)})")
    .replace(re.escape("$urgency"), f"({'|'.join(URGENCIES)})")
    .replace(re.escape("$topic"), f"({'|'.join(map(re.escape, TOPICS))})")
)
"""The one shape a public request's user message may have: the template, Literals, a placeholder."""


@pytest.fixture(params=["openai", "anthropic"])
def public_server(request: pytest.FixtureRequest) -> Iterator[FakeLLMServer]:
    server: FakeLLMServer = OpenAIServer() if request.param == "openai" else AnthropicServer()
    with server:
        yield server


def private_model(
    records: list[Record], extract: Callable[[Record], dict[str, str | None]]
) -> Callable[[dict[str, Any]], Reply]:
    """The private deployment: extracts with ``extract``, and triages."""
    by_message = {record.message: record for record in records}

    def answer(body: dict[str, Any]) -> Reply:
        tool = body["tools"][0]["function"]["name"]
        content = body["messages"][-1]["content"]
        record = by_message[content.split("\n\n", 1)[-1]]
        if tool == "PersonDetails":
            return ok(extract(record))
        assert tool == "RequestTriage", tool
        return ok(
            {
                "category": CATEGORIES[record.index % len(CATEGORIES)],
                "urgency": URGENCIES[record.index % len(URGENCIES)],
                "topic": TOPICS[record.index % len(TOPICS)],
            }
        )

    return answer


def public_model(body: dict[str, Any]) -> Reply:
    """The public model greets whoever the request says, as it is given."""
    found = re.search(r"Dear (\[[A-Z_]+\])", json.dumps(body))
    greet = found.group(1) if found else "there"
    return ok(
        {"subject": "About your request", "body": f"Dear {greet}, thank you for writing; we are on it."}
    )


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def schema_text(value: Any) -> set[str]:
    found = set(strings(value))
    if isinstance(value, dict):
        found.update(value)
        for item in value.values():
            found |= schema_text(item)
    elif isinstance(value, list):
        for item in value:
            found |= schema_text(item)
    return found


# What every draft-reply request carries, whichever instance: removed before searching.
CONSTANT = sorted(
    {
        draft_reply.prompt.system,
        *(p for p in Template.pattern.split(draft_reply.prompt.user) if p and not p.isidentifier()),
        *schema_text(DraftReply.model_json_schema()),
        *CHANNELS,
        *CATEGORIES,
        *URGENCIES,
        *TOPICS,
        "[NAME]",
    },
    key=len,
    reverse=True,
)


LATIN_WORD = r"(?:(?![\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af])\w)"


def normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def variable_text(raw: bytes) -> list[str]:
    """Each string of a request body, decoded, with the text every instance's request carries cut out."""
    texts = []
    for text in strings(json.loads(raw)):
        for constant in CONSTANT:
            text = text.replace(constant, "\x00")
        texts.append(normalised(text))
    return texts


def leaked(records: list[Record], bodies: list[bytes]) -> list[tuple[int, str, str]]:
    """(record, kind, form) for every planted value found in any public body, in any form."""
    texts = [t for raw in bodies for t in variable_text(raw)]
    digit_texts = [re.sub(r"\D", "", t) for t in texts]
    found = []
    for record in records:
        for kind, written in record.planted.items():
            for form in forms(kind, written, record.original[kind]):
                if form.isdigit():
                    hit = any(form in digits for digits in digit_texts)
                elif re.search(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", form):
                    hit = any(form in text for text in texts)
                else:  # a boundary against letters and digits of scripts written with spaces only
                    pattern = re.compile(rf"(?<!{LATIN_WORD}){re.escape(form)}(?!{LATIN_WORD})")
                    hit = any(pattern.search(text) for text in texts)
                if hit:
                    found.append((record.index, kind, form))
    return found


def run(records: list[Record], runtime: Runtime) -> dict[str, int]:
    items = [BatchItem(source=f"record-{r.index}", payload=r.payload) for r in records]
    report = run_batch(WORKFLOW, items, runtime, concurrency=4)
    counts = dict(report.counts())
    blocked = 0
    for outcome in report.outcomes:
        assert outcome.instance_id is not None, outcome
        detail = runtime.store.instance_detail(outcome.instance_id)
        assert detail is not None
        blocked += sum(1 for a in detail.attempts if a.failure_class == "pii_blocked")
    counts["blocked attempts"] = blocked
    return counts


@pytest.mark.parametrize("extractor", ["correct", "half"])
def test_no_planted_value_reaches_a_public_model(
    runtime: Runtime,
    public_server: FakeLLMServer,
    private_server: OpenAIServer,
    extractor: str,
    report: Callable[[str], None],
) -> None:
    extract = (lambda r: r.person) if extractor == "correct" else half
    private_server.default = private_model(PERSONAL, extract)
    public_server.default = public_model

    counts = run(PERSONAL, runtime)

    assert counts == {"completed": len(PERSONAL), "blocked attempts": 0}
    # The router offered the public model only the step that renders nothing personal.
    assert len(private_server.requests) == 2 * len(PERSONAL)  # extract-contact and triage-request
    assert len(public_server.requests) == len(PERSONAL)  # draft-reply
    for request in public_server.requests:
        user = next(m for m in request.body["messages"] if m["role"] == "user")["content"]
        text = user if isinstance(user, str) else "".join(part["text"] for part in user)
        assert DRAFT_USER.fullmatch(text), text
    found = leaked(PERSONAL, [r.raw for r in public_server.requests])
    assert found == []
    planted = sum(len(r.planted) for r in PERSONAL)
    kind = type(public_server).__name__.removesuffix("Server")
    report(
        f"privacy corpus, {extractor} extraction, {kind} as the public model: {len(PERSONAL)} records in "
        f"{len({r.locale for r in PERSONAL})} locales, {planted} values planted, {len(found)} leaked, "
        f"{counts['blocked attempts']} requests blocked"
    )


def test_clean_records_are_never_blocked(
    runtime: Runtime,
    public_server: FakeLLMServer,
    private_server: OpenAIServer,
    report: Callable[[str], None],
) -> None:
    """No personal data, an over-eager private model that calls "The System" or "Name" a name:
    nothing is blocked, because the guard only matches where a request can vary."""
    private_server.default = private_model(CLEAN, eager)
    public_server.default = public_model

    counts = run(CLEAN, runtime)

    assert counts == {"completed": len(CLEAN), "blocked attempts": 0}
    assert len(public_server.requests) == len(CLEAN)
    kind = type(public_server).__name__.removesuffix("Server")
    report(
        f"privacy corpus, clean records, {kind} as the public model: {len(CLEAN)} records, "
        f"{counts['blocked attempts']} requests blocked"
    )


def test_the_corpus_is_what_the_acceptance_asks_for() -> None:
    styles = {r.style for r in PERSONAL}
    assert len(PERSONAL) >= 60
    assert len({r.locale for r in PERSONAL}) >= 8
    assert {"ja_JP", "zh_CN", "ko_KR"} <= {r.locale for r in PERSONAL} <= set(LOCALES)
    assert {"lowercase", "words", "nbsp", "common-word-name", "other-script", "handles"} <= styles
    assert any("\u00a0" in r.message or "\u202f" in r.message for r in PERSONAL)
    assert len(CLEAN) >= 20
    assert any("Name" in r.message for r in CLEAN)
    assert any("System" in r.message for r in CLEAN)


def test_the_check_finds_every_planted_value_where_it_is() -> None:
    """The control: were the messages themselves sent, the search finds every planted value."""
    for record in PERSONAL:
        body = json.dumps({"messages": [{"role": "user", "content": record.message}]}).encode()
        kinds = {kind for _, kind, _ in leaked([record], [body])}
        assert kinds == set(record.planted), (record.locale, record.style, set(record.planted) - kinds)
