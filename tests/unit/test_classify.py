"""Every SDK exception maps to a failure class; response fields are read, not string-matched."""

from __future__ import annotations

import importlib
import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from pydantic import BaseModel, ValidationError

from steps.classify import classify_exception, classify_response, retry_after_seconds
from steps.errors import FailureClass
from steps.providers.registry import VENDORS


def status_error(
    module: object, status: int, body: object = None, headers: dict[str, str] | None = None
) -> Exception:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/x")
    response = httpx2.Response(status, request=request, headers=headers or {}, json=body or {})
    return module.APIStatusError("boom", response=response, body=body)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("module", [openai, anthropic])
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, FailureClass.BAD_REQUEST),
        (401, FailureClass.AUTH),
        (403, FailureClass.AUTH),
        (404, FailureClass.BAD_REQUEST),
        (408, FailureClass.TIMEOUT),
        (422, FailureClass.BAD_REQUEST),
        (429, FailureClass.RATE_LIMITED),
        (500, FailureClass.UNAVAILABLE),
        (502, FailureClass.UNAVAILABLE),
        (503, FailureClass.UNAVAILABLE),
        (504, FailureClass.TIMEOUT),
        (529, FailureClass.OVERLOADED),
        (599, FailureClass.UNAVAILABLE),
        (418, FailureClass.BAD_REQUEST),
    ],
)
def test_status_codes(module: object, status: int, expected: FailureClass) -> None:
    assert classify_exception(status_error(module, status)) is expected


def test_anthropic_overloaded_body_wins_over_a_503() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert classify_exception(status_error(anthropic, 503, body)) is FailureClass.OVERLOADED


def test_wrapped_errors_are_classified_by_their_cause() -> None:
    outer = RuntimeError("wrapper")
    outer.__cause__ = status_error(openai, 429)
    assert classify_exception(outer) is FailureClass.RATE_LIMITED


def test_parse_errors_are_schema_invalid() -> None:
    class M(BaseModel):
        x: int

    with pytest.raises(ValidationError) as caught:
        M.model_validate({"x": "nope"})
    assert classify_exception(caught.value) is FailureClass.SCHEMA_INVALID
    with pytest.raises(json.JSONDecodeError) as bad_json:
        json.loads("{")
    assert classify_exception(bad_json.value) is FailureClass.SCHEMA_INVALID


def test_connection_and_timeout_errors() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/")
    assert classify_exception(openai.APITimeoutError(request=request)) is FailureClass.TIMEOUT
    assert classify_exception(anthropic.APIConnectionError(request=request)) is FailureClass.CONNECTION
    assert classify_exception(httpx2.ReadTimeout("slow", request=request)) is FailureClass.TIMEOUT
    assert classify_exception(httpx2.ConnectError("reset", request=request)) is FailureClass.CONNECTION


def test_unmapped_errors_are_unknown_not_dropped() -> None:
    assert classify_exception(ZeroDivisionError()) is FailureClass.UNKNOWN


# Exceptions the SDKs export that a chat/messages call cannot raise.
NOT_RAISED_BY_CALLS = {
    "InvalidWebhookSignatureError",
    "APIWebhookValidationError",
    "WebSocketConnectionClosedError",
    "WebSocketQueueFullError",
}


SDK_MODULES = sorted({name for vendor in VENDORS.values() for name in vendor.sdk_modules})
"""Every SDK a vendor module calls through; each must have its exceptions placed."""


def test_both_sdks_are_checked_for_gaps() -> None:
    assert {"openai", "anthropic"} <= set(SDK_MODULES)


@pytest.mark.parametrize("name", SDK_MODULES)
def test_no_sdk_exception_is_left_unmapped(name: str) -> None:
    """Fails when an SDK upgrade adds an exception the table (assembled from the vendors) does not place."""
    from steps.classify import _EXCEPTIONS, _resolve

    module = importlib.import_module(name)
    mapped = [c for m, p, _ in _EXCEPTIONS if (c := _resolve(m, p)) is not None]
    status_base = module.APIStatusError
    gaps = []
    for attr in dir(module):
        cls = getattr(module, attr)
        if attr.startswith("_") or attr in NOT_RAISED_BY_CALLS:
            continue
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            continue
        if issubclass(cls, status_base) or attr in {"APIError", "AnthropicError", "OpenAIError"}:
            continue  # classified by status code; bases are abstract
        if not any(issubclass(cls, c) for c in mapped):
            gaps.append(attr)
    assert gaps == []


def test_response_fields() -> None:
    from openai.types.chat import ChatCompletion

    def completion(finish: str, refusal: str | None = None) -> ChatCompletion:
        return ChatCompletion.model_validate(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": finish,
                        "message": {"role": "assistant", "content": None, "refusal": refusal},
                    }
                ],
            }
        )

    assert classify_response(completion("content_filter")) is FailureClass.CONTENT_FILTER
    assert classify_response(completion("stop", refusal="no")) is FailureClass.REFUSED
    assert classify_response(completion("length")) is FailureClass.TRUNCATED
    assert classify_response(completion("stop")) is None


def test_retry_after_headers() -> None:
    assert retry_after_seconds(status_error(openai, 429, headers={"retry-after": "7"})) == 7.0
    assert (
        retry_after_seconds(status_error(openai, 429, headers={"retry-after-ms": "250", "retry-after": "9"}))
        == 0.25
    )
    assert retry_after_seconds(status_error(anthropic, 529)) is None
    dated = retry_after_seconds(
        status_error(openai, 429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    )
    assert dated == 0.0


def quota_error(sdk: Any, status: int, body: dict[str, Any]) -> Exception:
    """A status error as the SDK raises it; the body as each wire format nests it."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/x")
    response = httpx2.Response(status, request=request, json=body)
    return sdk.APIStatusError("error", response=response, body=body)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("sdk", "status", "body", "failure"),
    [
        # OpenAI: the code (or type) says so.
        (
            openai,
            429,
            {
                "error": {
                    "message": "You exceeded your current quota, please check your plan and billing details.",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
            "quota",
        ),
        # A free tier's rate limit links to billing, but waiting helps: not a quota.
        (
            openai,
            429,
            {
                "error": {
                    "message": "Rate limit reached for requests per min (RPM): Limit 3. "
                    "Visit https://platform.openai.com/account/billing to add a payment method.",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            "rate_limited",
        ),
        # Anthropic: no code; the error type and message tell.
        (
            anthropic,
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "Your credit balance is too low to access the Anthropic API. "
                    "Please go to Plans & Billing to upgrade or purchase credits.",
                },
            },
            "quota",
        ),
        (
            anthropic,
            429,
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "This request would exceed your organization's monthly spend limit.",
                },
            },
            "quota",
        ),
        (
            anthropic,
            403,
            {
                "type": "error",
                "error": {
                    "type": "permission_error",
                    "message": "You have reached your specified API usage limits.",
                },
            },
            "quota",
        ),
        (
            anthropic,
            429,
            {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": "Number of request tokens has exceeded your per-minute rate limit",
                },
            },
            "rate_limited",
        ),
        (
            anthropic,
            403,
            {
                "type": "error",
                "error": {
                    "type": "permission_error",
                    "message": "Your API key does not have permission to use the specified resource.",
                },
            },
            "auth",
        ),
    ],
)
def test_a_spent_quota_is_its_own_class_on_both_wire_formats(
    sdk: Any, status: int, body: dict[str, Any], failure: str
) -> None:
    assert classify_exception(quota_error(sdk, status, body)) is FailureClass(failure)


def test_embedded_grammar_caps_long_strings() -> None:
    """llama.cpp crashes on grammars for very long strings; the cap keeps the schema's shape."""
    from steps.providers.embedded import _grammar_safe

    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "body": {"type": "string", "maxLength": 1500},
            "id": {"type": "string", "maxLength": 8},
        },
        "$defs": {"X": {"type": "array", "items": {"type": "string", "maxLength": 9000}}},
    }
    safe = _grammar_safe(schema)
    assert safe["properties"]["body"]["maxLength"] == 512
    assert safe["properties"]["id"]["maxLength"] == 8
    assert safe["$defs"]["X"]["items"]["maxLength"] == 512
    assert schema["properties"]["body"]["maxLength"] == 1500  # the original is untouched
