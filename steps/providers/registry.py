"""Which vendor serves each provider kind: the one dispatch, instead of if/elif on the kind."""

from __future__ import annotations

from collections.abc import Mapping

from steps.errors import FailureClass
from steps.providers import anthropic, embedded, function, openai, openai_compatible
from steps.providers.base import FailureRow, Vendor
from steps.settings import ProviderKind

__all__ = ["VENDORS", "error_types", "failure_rows", "vendor_for"]

VENDORS: Mapping[ProviderKind, Vendor] = {
    vendor.kind: vendor
    for vendor in (
        openai.VENDOR,
        anthropic.VENDOR,
        openai_compatible.VENDOR,
        embedded.VENDOR,
        function.VENDOR,
    )
}
"""Every provider kind's vendor, in the order their failure rows are read."""


def vendor_for(kind: ProviderKind) -> Vendor:
    return VENDORS[kind]


def failure_rows() -> tuple[FailureRow, ...]:
    """Every vendor's exception rows, in registry order, each once (openai_compatible shares openai's)."""
    return tuple(dict.fromkeys(row for vendor in VENDORS.values() for row in vendor.failures))


def error_types() -> Mapping[str, FailureClass]:
    """Every vendor's error-body types (no two vendors name one differently: a test checks)."""
    return {name: failure for vendor in VENDORS.values() for name, failure in vendor.error_types.items()}
