"""Raw output against its schema: errors pinned to the text, fields compared one by one."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from steps.diagnose import FieldStatus, diagnose, pointer
from steps.runtime import validation_errors


class Clause(BaseModel):
    heading: str = Field(min_length=1, max_length=10)
    risk: Literal["low", "medium", "high"]


class Review(BaseModel):
    title: str
    clauses: list[Clause] = Field(max_length=3)
    score: int


SCHEMA = Review.model_json_schema()


def recorded(raw: str) -> list[dict[str, object]]:
    """The errors as the runtime stores them for this raw text."""
    try:
        Review.model_validate_json(raw)
    except ValidationError as exc:
        return validation_errors(exc, raw)
    return []


def test_pointer_from_the_recorded_paths() -> None:
    assert pointer("$") == ""
    assert pointer("$.clauses[0].heading") == "/clauses/0/heading"
    assert pointer("$.a/b") == "/a~1b"


def test_each_error_is_pinned_to_its_characters_and_each_field_compared() -> None:
    raw = json.dumps(
        {
            "title": "NDA",
            "clauses": [{"heading": "Confidentiality obligations", "risk": "severe"}],
            "score": "high",
            "notes": "extra",
        },
        indent=2,
    )
    found = diagnose(raw, SCHEMA, recorded(raw))

    assert found.parsed
    pinned = {e.path: raw[e.span.start : e.span.end] for e in found.errors if e.span}
    assert pinned["$.clauses[0].heading"] == '"heading": "Confidentiality obligations"'
    assert pinned["$.clauses[0].risk"] == '"risk": "severe"'
    assert pinned["$.score"] == '"score": "high"'
    by_path = {f.path: f for f in found.fields}
    assert by_path["$.title"].status is FieldStatus.OK
    assert by_path["$.clauses[0].heading"].status is FieldStatus.CONSTRAINT
    assert by_path["$.clauses[0].heading"].expected == "string, 1..10 chars"
    assert "at most 10 characters" in (by_path["$.clauses[0].heading"].message or "")
    assert by_path["$.clauses[0].risk"].status is FieldStatus.CONSTRAINT
    assert by_path["$.clauses[0].risk"].expected == 'one of "low", "medium", "high"'
    assert by_path["$.score"].status is FieldStatus.WRONG_TYPE
    assert by_path["$.score"].got == '"high"'
    assert by_path["$.notes"].status is FieldStatus.EXTRA


def test_a_missing_field_points_at_its_parent_object() -> None:
    raw = '{"title": "NDA", "clauses": []}'
    found = diagnose(raw, SCHEMA, recorded(raw))
    (missing,) = [f for f in found.problems if f.status is FieldStatus.MISSING]
    assert missing.path == "$.score"
    assert missing.expected == "integer"
    assert missing.got == "(absent)"
    (error,) = found.errors
    assert error.span is not None
    assert raw[error.span.start : error.span.end] == raw  # the whole object lacks it


def test_truncated_output_says_where_it_stopped() -> None:
    raw = '{"title": "NDA", "clauses": [{"heading": "Term", "risk": "lo'
    found = diagnose(raw, SCHEMA, [{"path": "$", "message": "EOF while parsing", "input": raw}])
    assert not found.parsed
    assert found.parse_error is not None
    assert found.parse_error.startswith("not JSON: Unterminated string")
    assert found.stopped_at is not None
    assert raw[found.stopped_at.start :] == '"lo'
    assert found.fields == []


def test_nothing_recorded_is_not_an_error() -> None:
    found = diagnose(None, None, None)
    assert not found.parsed
    assert found.errors == []
