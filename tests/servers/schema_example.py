"""Guess a small valid instance of a JSON schema.

The fake servers' default reply answers a tool/structured-output request with
an object that validates against the requested schema, so a test (or a manual
trial via ``python -m tests.servers``) gets a plausible answer without
scripting one.  Only the simple schemas that Pydantic/instructor emit are
covered: object, string, integer, number, boolean, null, array, enum, const,
``$ref`` into ``$defs``/``definitions``, ``anyOf``/``oneOf`` (a non-null branch
is preferred), ``allOf`` (merged), ``minItems``/``minLength``/``maxLength`` and
numeric bounds.  ``pattern`` and ``multipleOf`` are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaError", "example_from_schema"]

_MAX_DEPTH = 32

_STRING_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "duration": "P1D",
}


class SchemaError(ValueError):
    """The schema uses a construct this small generator cannot satisfy."""


def example_from_schema(schema: Mapping[str, Any]) -> Any:
    """Return a minimal instance of ``schema``.

    Objects get only their ``required`` properties (what a strict tool schema
    lists anyway), arrays get ``minItems`` elements, strings a short word.
    """
    return _example(schema, root=schema, depth=0)


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        raise SchemaError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            raise SchemaError(f"unresolvable $ref {ref!r}")
        node = node[key]
    if not isinstance(node, Mapping):
        raise SchemaError(f"$ref {ref!r} does not point to a schema")
    return node


def _is_null_schema(schema: object) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _example(schema: Mapping[str, Any] | bool, *, root: Mapping[str, Any], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise SchemaError("schema nests too deeply (recursive $ref without an exit?)")
    if isinstance(schema, bool):
        # `true` accepts anything; `false` accepts nothing, but callers only
        # reach it for optional parts, so null is as good as any answer.
        return None
    nxt = depth + 1
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        values = schema["enum"]
        if not values:
            raise SchemaError("empty enum")
        return values[0]
    if "$ref" in schema:
        target = _resolve_ref(str(schema["$ref"]), root)
        # Siblings of $ref (e.g. a description) never change the answer here.
        return _example(target, root=root, depth=nxt)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = list(schema[key])
            if not branches:
                raise SchemaError(f"empty {key}")
            non_null = [b for b in branches if not _is_null_schema(b)]
            return _example((non_null or branches)[0], root=root, depth=nxt)
    if "allOf" in schema:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part_schema = _resolve_ref(part["$ref"], root) if "$ref" in part else part
            for k, v in part_schema.items():
                if k == "properties":
                    merged.setdefault("properties", {}).update(v)
                elif k == "required":
                    merged["required"] = [*merged.get("required", []), *v]
                else:
                    merged.setdefault(k, v)
        return _example(merged, root=root, depth=nxt)

    type_: Any = schema.get("type")
    if isinstance(type_, list):
        non_null_types = [t for t in type_ if t != "null"]
        type_ = non_null_types[0] if non_null_types else "null"
    if type_ is None:
        if "properties" in schema or "required" in schema:
            type_ = "object"
        elif "items" in schema or "prefixItems" in schema:
            type_ = "array"
        else:
            return None  # an unconstrained schema accepts null

    if type_ == "object":
        props: Mapping[str, Any] = schema.get("properties", {})
        result: dict[str, Any] = {}
        for name in schema.get("required", []):
            result[name] = _example(props.get(name, True), root=root, depth=nxt)
        return result
    if type_ == "array":
        count = int(schema.get("minItems", 0))
        prefix = list(schema.get("prefixItems", []))
        items: Mapping[str, Any] | bool = schema.get("items", True)
        out: list[Any] = []
        for i in range(count):
            item_schema = prefix[i] if i < len(prefix) else items
            out.append(_example(item_schema, root=root, depth=nxt))
        return out
    if type_ == "string":
        return _string(schema)
    if type_ == "integer":
        return int(_number(schema, integer=True))
    if type_ == "number":
        return float(_number(schema, integer=False))
    if type_ == "boolean":
        return False
    if type_ == "null":
        return None
    raise SchemaError(f"unsupported schema type {type_!r}")


def _string(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    text = _STRING_FORMATS.get(fmt, "example") if isinstance(fmt, str) else "example"
    min_len = int(schema.get("minLength", 0))
    max_len = schema.get("maxLength")
    if len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if max_len is not None and len(text) > int(max_len):
        text = text[: int(max_len)]
    return text


def _number(schema: Mapping[str, Any], *, integer: bool) -> float:
    low: float | None = None
    high: float | None = None
    step = 1 if integer else 0.5
    if "minimum" in schema:
        low = float(schema["minimum"])
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low = float(schema["exclusiveMinimum"]) + step
    if "maximum" in schema:
        high = float(schema["maximum"])
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high = float(schema["exclusiveMaximum"]) - step
    value = 0.0
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    if integer:
        value = float(int(value)) if low is None or int(value) >= low else float(int(value) + 1)
    return value
