"""One vendor per provider kind, each with its modes, request arguments and rows of the one table."""

from __future__ import annotations

from typing import Any

import pytest

from steps.classify import _ERROR_BODY_TYPES, _EXCEPTIONS, classify_exception
from steps.errors import FailureClass
from steps.providers import anthropic_output_schema
from steps.providers.function import ModelFailure
from steps.providers.registry import VENDORS
from steps.settings import SUPPORTED_MODES, ModelConfig, ProviderKind, StructuredMode


@pytest.mark.parametrize("kind", list(ProviderKind))
def test_every_kind_has_a_vendor_serving_the_modes_the_catalog_allows(kind: ProviderKind) -> None:
    vendor = VENDORS[kind]
    assert vendor.kind is kind
    assert set(vendor.modes()) == SUPPORTED_MODES[kind]


def test_the_one_table_holds_every_vendors_rows_and_error_types() -> None:
    for vendor in VENDORS.values():
        assert set(vendor.failures) <= set(_EXCEPTIONS)
        for name, failure in vendor.error_types.items():
            assert _ERROR_BODY_TYPES[name] is failure  # no two vendors read one error type differently
    assert len(set(_EXCEPTIONS)) == len(_EXCEPTIONS)


@pytest.mark.parametrize("failure", list(FailureClass))
def test_a_function_models_failure_keeps_its_class(failure: FailureClass) -> None:
    assert classify_exception(ModelFailure(failure)) is failure


def test_anthropic_json_schema_sends_output_config_and_only_max_tokens() -> None:
    vendor = VENDORS[ProviderKind.ANTHROPIC]
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}
    sampling = {"temperature": 0.3, "top_p": 0.9, "max_tokens": None, "seed": 7}
    native = ModelConfig(provider="a", model="claude", structured_mode=StructuredMode.JSON_SCHEMA)
    kwargs = vendor.request_kwargs(native, sampling, schema)
    assert kwargs["model"] == "claude"
    assert kwargs["max_tokens"] == 1024
    assert kwargs["output_config"]["format"]["type"] == "json_schema"
    assert kwargs["output_config"]["format"]["schema"]["additionalProperties"] is False
    tools = native.model_copy(update={"structured_mode": StructuredMode.TOOLS})
    assert vendor.request_kwargs(tools, sampling, schema) == {"model": "claude", "max_tokens": 1024}


def test_openai_shaped_vendors_send_the_sampling_that_is_set() -> None:
    sampling = {"temperature": 0.0, "top_p": None, "max_tokens": 64, "seed": 7}
    config = ModelConfig(provider="p", model="m")
    for kind in (ProviderKind.OPENAI, ProviderKind.OPENAI_COMPATIBLE, ProviderKind.EMBEDDED):
        assert VENDORS[kind].request_kwargs(config, sampling, None) == {
            "model": "m",
            "temperature": 0.0,
            "max_tokens": 64,
            "seed": 7,
        }


def test_anthropics_schema_is_transformed_once_per_schema_and_never_changes_the_original() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
    }
    first = anthropic_output_schema(schema)
    assert anthropic_output_schema(schema) is first  # the step's one schema object: transformed once
    assert first["additionalProperties"] is False
    assert "additionalProperties" not in schema  # Pydantic still checks the answer against this one
    assert schema["properties"]["n"]["minimum"] == 1
    equal_but_other = {**schema}
    assert anthropic_output_schema(equal_but_other) == first
