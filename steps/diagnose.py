"""Why an output failed its schema, located in the model's raw text.

An operator triaging a failed attempt has three things: the raw text as
received, the JSON schema it had to match, and the validation errors recorded
on the attempt (``{path, message, input}`` with ``$.a[0].b`` paths). This
module relates them: each error pinned to the characters it is about, and a
field-by-field comparison of what the schema expected with what the model
returned (missing, extra, wrong type, constraint broken). For text that is not
JSON at all, it says where parsing stopped, which for a truncated answer is
where the model was cut off.

Pure functions on plain data: the TUI draws them, tests check them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jsonref
from json_source_map import calculate
from jsonschema import Draft202012Validator

from steps.errors import describe_json_error

__all__ = [
    "Diagnosis",
    "FieldDiff",
    "FieldStatus",
    "PinnedError",
    "Span",
    "check_against_schema",
    "diagnose",
    "pointer",
    "value_at",
]


@dataclass(frozen=True)
class Span:
    """Characters ``[start, end)`` of the raw text."""

    start: int
    end: int


@dataclass(frozen=True)
class PinnedError:
    path: str
    message: str
    span: Span | None
    """Where in the raw text the error is about; None when the text is not JSON."""


class FieldStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"
    """The schema requires the field; the output has none."""
    EXTRA = "extra"
    """The output has a field the schema does not declare."""
    WRONG_TYPE = "wrong_type"
    """The value's JSON type is not one the schema allows."""
    CONSTRAINT = "constraint"
    """The type is right but a constraint (length, range, enum, pattern, validator) is broken."""


@dataclass(frozen=True)
class FieldDiff:
    path: str
    status: FieldStatus
    expected: str
    """The schema's demand, e.g. ``string, 1..60 chars`` or ``one of low, medium, high``."""
    got: str
    """The output's value as JSON (shortened), or ``(absent)``."""
    message: str | None = None
    """The validation error on this field, if any."""


@dataclass(frozen=True)
class Diagnosis:
    parsed: bool
    parse_error: str | None
    """Why the text is not JSON (with line and column), when it is not."""
    stopped_at: Span | None
    """From where parsing failed to the end of the text: where a truncated answer was cut off."""
    errors: list[PinnedError]
    fields: list[FieldDiff]

    @property
    def problems(self) -> list[FieldDiff]:
        return [f for f in self.fields if f.status is not FieldStatus.OK]


_SEGMENT = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def pointer(path: str) -> str:
    """``$.clauses[0].heading`` as the JSON pointer ``/clauses/0/heading``."""
    if not path.startswith("$"):
        return ""
    parts = [name or index for name, index in _SEGMENT.findall(path[1:])]
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def value_at(data: Any, path: str) -> Any:
    """The value at ``path`` (``$.clauses[0].heading``) in parsed JSON; ``KeyError`` if absent."""
    value = data
    for name, index in _SEGMENT.findall(path[1:]):
        try:
            value = value[int(index)] if index else value[name]
        except (KeyError, IndexError, TypeError):
            raise KeyError(path) from None
    return value


def diagnose(
    raw: str | None, schema: dict[str, Any] | None, errors: list[dict[str, Any]] | None
) -> Diagnosis:
    """Relate raw output, schema and recorded errors (any of them may be missing)."""
    errors = errors or []
    text = raw or ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Diagnosis(
            parsed=False,
            parse_error=f"not JSON: {describe_json_error(exc)}",
            stopped_at=Span(exc.pos, len(text)),
            errors=[PinnedError(str(e.get("path", "$")), str(e.get("message", "")), None) for e in errors],
            fields=[],
        )
    spans = _spans(text)
    pinned = [
        PinnedError(
            str(e.get("path", "$")), str(e.get("message", "")), _span_for(spans, str(e.get("path", "$")))
        )
        for e in errors
    ]
    by_path = {str(e.get("path", "$")): str(e.get("message", "")) for e in errors}
    resolved = _resolve(schema) if schema else {}
    fields: list[FieldDiff] = []
    _compare(resolved, value, "$", by_path, fields)
    return Diagnosis(parsed=True, parse_error=None, stopped_at=None, errors=pinned, fields=fields)


def _spans(text: str) -> dict[str, Span]:
    found: dict[str, Span] = {}
    for key, entry in calculate(text).items():
        start = entry.key_start.position if entry.key_start is not None else entry.value_start.position
        found[key] = Span(start, entry.value_end.position)
    return found


def _span_for(spans: dict[str, Span], path: str) -> Span | None:
    """The span of ``path``, or of its nearest ancestor that exists (a missing field's parent)."""
    target = pointer(path)
    while True:
        if target in spans:
            return spans[target]
        if not target:
            return None
        target = target.rsplit("/", 1)[0]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    resolved = jsonref.replace_refs(schema, proxies=False, lazy_load=False)
    return resolved if isinstance(resolved, dict) else {}


_JSON_TYPES = {
    "string": str,
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = _JSON_TYPES.get(kind)
    return expected is None or isinstance(value, expected)


def _options(schema: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [option for option in schema[key] if isinstance(option, dict)]
    return [schema]


def _matches_type(schema: dict[str, Any], value: Any) -> bool:
    for option in _options(schema):
        kinds = option.get("type")
        if kinds is None:
            if "const" in option or "enum" in option or not option:
                return True
            continue
        for kind in kinds if isinstance(kinds, list) else [kinds]:
            if _type_ok(str(kind), value):
                return True
    return False


def describe(schema: dict[str, Any]) -> str:
    """A schema's demand in a few words."""
    parts = []
    for option in _options(schema):
        if "enum" in option:
            parts.append("one of " + ", ".join(json.dumps(v) for v in option["enum"]))
            continue
        if "const" in option:
            parts.append(f"exactly {json.dumps(option['const'])}")
            continue
        kind = option.get("type", "any")
        text = " or ".join(kind) if isinstance(kind, list) else str(kind)
        limits = []
        low, high = option.get("minLength"), option.get("maxLength")
        if low is not None or high is not None:
            limits.append(f"{low or 0}..{high if high is not None else ''} chars")
        low, high = option.get("minItems"), option.get("maxItems")
        if low is not None or high is not None:
            limits.append(f"{low or 0}..{high if high is not None else ''} items")
        for key, sign in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        ):
            if key in option:
                limits.append(f"{sign} {option[key]}")
        if "pattern" in option:
            limits.append(f"matching {option['pattern']}")
        parts.append(text + (", " + ", ".join(limits) if limits else ""))
    return " | ".join(parts)


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compare(
    schema: dict[str, Any],
    value: Any,
    path: str,
    errors: dict[str, str],
    out: list[FieldDiff],
) -> None:
    if not schema:
        return
    expected = describe(schema)
    if not _matches_type(schema, value):
        out.append(FieldDiff(path, FieldStatus.WRONG_TYPE, expected, _shown(value), errors.get(path)))
        return
    # The type is right; anything else wrong with the value itself is in the recorded errors.
    if path in errors:
        out.append(FieldDiff(path, FieldStatus.CONSTRAINT, expected, _shown(value), errors[path]))
    elif not isinstance(value, dict | list):
        out.append(FieldDiff(path, FieldStatus.OK, expected, _shown(value)))
    object_schema = next((o for o in _options(schema) if "properties" in o and isinstance(value, dict)), None)
    if object_schema is not None and isinstance(value, dict):
        properties: dict[str, Any] = object_schema.get("properties", {})
        needed = set(object_schema.get("required", []))
        for name, sub in properties.items():
            child = f"{path}.{name}"
            if name in value:
                _compare(sub, value[name], child, errors, out)
            elif name in needed:
                out.append(
                    FieldDiff(child, FieldStatus.MISSING, describe(sub), "(absent)", errors.get(child))
                )
        for name in value:
            if name not in properties:
                child = f"{path}.{name}"
                out.append(
                    FieldDiff(
                        child,
                        FieldStatus.EXTRA,
                        "(not in the schema)",
                        _shown(value[name]),
                        errors.get(child),
                    )
                )
    items = next((o.get("items") for o in _options(schema) if "items" in o), None)
    if isinstance(items, dict) and isinstance(value, list):
        for index, item in enumerate(value):
            _compare(items, item, f"{path}[{index}]", errors, out)


def check_against_schema(text: str, schema: dict[str, Any] | None) -> list[str]:
    """Problems with a person's correction, as ``$.path: message`` lines (empty when it fits).

    A fast first check while typing, by JSON schema; approval still validates
    with the step's output model, custom validators included.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not JSON: {describe_json_error(exc)}"]
    if not schema:
        return []
    validator = Draft202012Validator(_resolve(schema))
    problems = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        problems.append(f"{path}: {error.message}")
    return problems
