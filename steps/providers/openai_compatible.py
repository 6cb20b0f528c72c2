"""Servers speaking OpenAI's chat-completions API at a ``base_url``: Ollama, vLLM, llama.cpp's server.

The same SDK, modes, readers and failure rows as ``steps.providers.openai`` (the openai SDK is
the client); only the kind differs, so that the catalog can require ``base_url`` and the probe
can tell them apart.
"""

from __future__ import annotations

from typing import ClassVar

from steps.providers.openai import OpenAIVendor
from steps.settings import ProviderKind

__all__ = ["VENDOR", "OpenAICompatibleVendor"]


class OpenAICompatibleVendor(OpenAIVendor):
    """OpenAI's vendor, at the server's own ``base_url``."""

    kind: ClassVar[ProviderKind] = ProviderKind.OPENAI_COMPATIBLE


VENDOR = OpenAICompatibleVendor()
