"""Model providers: one module per vendor, and the pool that builds one client per catalog model.

    base.py               the request/response hooks and the ``Vendor`` protocol every vendor meets
    registry.py           provider kind -> vendor, and the vendors' failure rows for steps.classify
    pool.py               ProviderPool and ModelClient, whatever the vendor
    openai.py             OpenAI's chat completions (its readers serve the in-process vendors too)
    anthropic.py          Anthropic's Messages API, native structured output via output_config
    openai_compatible.py  OpenAI's wire format at a server's own base_url
    embedded.py           llama.cpp in this process
    function.py           a Python function as the model, for tests (no HTTP)

Each vendor imports its SDK (and Instructor) only when a client is built, so importing this
package stays cheap (README, Performance).
"""

from __future__ import annotations

from steps.providers.anthropic import anthropic_output_schema
from steps.providers.base import Vendor, capture_bodies, write_ahead
from steps.providers.pool import ModelClient, ProviderPool

__all__ = [
    "ModelClient",
    "ProviderPool",
    "Vendor",
    "anthropic_output_schema",
    "capture_bodies",
    "write_ahead",
]
