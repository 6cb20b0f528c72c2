"""The one place where foreign errors and response fields become a ``FailureClass``.

For an HTTP error (every SDK status error carries its status and body), in order:

- a spent quota, on either wire format: OpenAI's ``insufficient_quota`` code
  or type, or an error body whose type or message speaks of billing, credit
  or a spend limit (``_QUOTA``), on 400, 402, 403 or 429;
- the error type the body names (``_ERROR_BODY_TYPES``, from the vendors:
  Anthropic's ``overloaded_error`` on a 503, say), for 5xx;
- the status itself (``_STATUS``).

Other exceptions go through ``_EXCEPTIONS``, most specific first: one table,
assembled from Instructor's rows, each vendor module's rows
(``steps.providers.registry``) and the transports' (httpx). A failure that
names its own class (``StepFailed``, a function model's ``ModelFailure``) keeps
it. Response fields (``finish_reason``, ``refusal``, ``stop_reason``) are read
by each vendor's ``response_failure``. ``tests/unit/test_classify.py`` fails if
a public exception class of a vendor's SDK is left unmapped. SDK modules are
only consulted if already imported, so classifying never pays for importing
an SDK that was not used.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import ValidationError

from steps.errors import FailureClass, StepFailed
from steps.providers.base import FailureRow
from steps.providers.bounds import ResponseLimit
from steps.providers.function import ModelFailure
from steps.providers.registry import VENDORS, error_types, failure_rows

__all__ = [
    "classify_exception",
    "classify_response",
    "provider_message",
    "response_limit",
    "retry_after_seconds",
]

_F = FailureClass

_INSTRUCTOR: tuple[FailureRow, ...] = (
    ("instructor.v2.core.errors", "IncompleteOutputException", _F.TRUNCATED),
    ("instructor.v2.core.errors", "ResponseParsingError", _F.SCHEMA_INVALID),
    ("instructor.v2.core.errors", "ModeError", _F.BAD_REQUEST),
    ("instructor.v2.core.errors", "ConfigurationError", _F.BAD_REQUEST),
)
# The SDKs (openai 3.x, anthropic 2.x) speak httpx2; plain httpx for other clients.
_TRANSPORTS: tuple[FailureRow, ...] = (
    ("httpx2", "TimeoutException", _F.TIMEOUT),
    ("httpx2", "TransportError", _F.CONNECTION),
    ("httpx", "TimeoutException", _F.TIMEOUT),
    ("httpx", "TransportError", _F.CONNECTION),
)
_EXCEPTIONS: tuple[FailureRow, ...] = (*_INSTRUCTOR, *failure_rows(), *_TRANSPORTS)
"""(defining module, attribute) -> class, most specific first. A module that is not loaded
cannot have raised, so nothing is imported here."""

_STATUS: dict[int, FailureClass] = {
    400: _F.BAD_REQUEST,
    401: _F.AUTH,
    403: _F.AUTH,
    404: _F.BAD_REQUEST,
    408: _F.TIMEOUT,
    409: _F.UNAVAILABLE,
    413: _F.BAD_REQUEST,
    422: _F.BAD_REQUEST,
    429: _F.RATE_LIMITED,
    500: _F.UNAVAILABLE,
    502: _F.UNAVAILABLE,
    503: _F.UNAVAILABLE,
    504: _F.TIMEOUT,
    529: _F.OVERLOADED,
}

_ERROR_BODY_TYPES: Mapping[str, FailureClass] = error_types()
"""Error types named in an error body, which win over a 5xx status (Anthropic's, today)."""


def _resolve(module: str, path: str) -> type[BaseException] | None:
    target: Any = sys.modules.get(module)
    if target is None:
        return None
    for part in path.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target if isinstance(target, type) and issubclass(target, BaseException) else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_QUOTA = re.compile(
    r"insufficient[ _]quota|exceeded your (current )?quota|credit balance|out of credits?|purchase credits"
    r"|billing|spend(ing)? limit|usage limit|payment required",
    re.IGNORECASE,
)
"""How providers word a spent quota or spend limit (OpenAI, Anthropic, and compatible servers)."""
_QUOTA_STATUSES = frozenset({400, 402, 403, 429})
_RATE = re.compile(r"rate limit|per (min|minute|second|hour|day)\b|try again in", re.IGNORECASE)
"""A rate limit, which free tiers word with a link to billing: waiting helps, so it is no quota."""


def _quota(status: int, kind: str, code: str, message: str) -> bool:
    if "insufficient_quota" in (kind, code):
        return True
    if status not in _QUOTA_STATUSES or _RATE.search(message):
        return False
    return bool(_QUOTA.search(f"{kind} {message}"))


def _error_body(exc: BaseException) -> tuple[str, str, str]:
    """(type, code, message) of an SDK status error's JSON body (either wire format)."""
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = body if isinstance(body, dict) else {}
    kind, code, message = error.get("type"), error.get("code"), error.get("message")
    code = code or getattr(exc, "code", None)  # openai puts it on the exception too
    return (
        kind if isinstance(kind, str) else "",
        code if isinstance(code, str) else "",
        message if isinstance(message, str) else "",
    )


def _status_class(exc: BaseException) -> FailureClass | None:
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return None
    kind, code, message = _error_body(exc)
    if _quota(status, kind, code, message):
        return _F.QUOTA  # waiting will not help, and every other caller would fail the same way
    if kind in _ERROR_BODY_TYPES and status >= 500:
        return _ERROR_BODY_TYPES[kind]
    if status in _STATUS:
        return _STATUS[status]
    if status >= 500:
        return _F.UNAVAILABLE
    return _F.BAD_REQUEST if 400 <= status < 500 else None


def classify_exception(exc: BaseException) -> FailureClass:
    """The failure class of ``exc``, looking through wrappers such as InstructorRetryException."""
    limit = response_limit(exc)  # a bound of Stepline's own, under whatever the SDK wrapped it in
    if limit is not None:
        return limit.failure
    for link in _chain(exc):
        if isinstance(link, StepFailed | ModelFailure):
            return link.failure
        if isinstance(link, ValidationError | json.JSONDecodeError):
            return _F.SCHEMA_INVALID
        status = _status_class(link)
        if status is not None:
            return status
        for module, path, failure in _EXCEPTIONS:
            cls = _resolve(module, path)
            if cls is not None and isinstance(link, cls):
                return failure
    return _F.UNKNOWN


def response_limit(exc: BaseException) -> ResponseLimit | None:
    """The bound of Stepline's that stopped reading a response, under the SDK's wrapping."""
    return next((link for link in _chain(exc) if isinstance(link, ResponseLimit)), None)


def provider_message(exc: BaseException) -> str | None:
    """What the provider said in an HTTP error's body (``error.message``, either wire format),
    looking through wrappers; None when no error body came back."""
    for link in _chain(exc):
        if isinstance(getattr(link, "status_code", None), int):
            message = _error_body(link)[2]
            if message:
                return message
    return None


def classify_response(response: Any) -> FailureClass | None:
    """A failure signalled in a successful response's fields, or ``None``, whichever vendor sent it.

    The step runtime asks the model's own vendor (``Vendor.response_failure``); this reads a
    response of unknown origin, each vendor's reader answering only for its own response shape.
    """
    for vendor in VENDORS.values():
        failure = vendor.response_failure(response)
        if failure is not None:
            return failure
    return None


def retry_after_seconds(exc: BaseException) -> float | None:
    """The wait a 429/529/503 asked for (``retry-after-ms`` wins over ``retry-after``)."""
    for link in _chain(exc):
        if isinstance(link, ModelFailure) and link.retry_after is not None:
            return max(0.0, link.retry_after)
        response = getattr(link, "response", None)
        headers = getattr(response, "headers", None)
        if headers is None:
            continue
        millis = headers.get("retry-after-ms")
        if millis is not None:
            try:
                return max(0.0, float(millis) / 1000)
            except ValueError:
                pass
        value = headers.get("retry-after")
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None
