"""The baseline of ``bench/first_request.py``: a bare Prefect flow with one task making one request.

Self-contained on purpose (no Stepline import): openai + pydantic + prefect, the same tools
request and parse as Stepline's one-step invoice workflow, against ``$BENCH_BASE_URL``.
Prefect's flow-run heartbeat is off, as in Stepline (``[workers] prefect_heartbeat_s``).
With ``BENCH_GC_STARTUP=1`` it starts as ``stepline`` does (``stepline/launch.py``): the cyclic
collector off while it imports, then what was built frozen and the collector on, as its task starts.
"""

from __future__ import annotations

import gc
import os

if os.environ.get("BENCH_GC_STARTUP") == "1":
    gc.disable()
from typing import Any, Literal

import openai
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings
from pydantic import BaseModel, Field


class Invoice(BaseModel):
    vendor: str = Field(min_length=1, max_length=40)
    total: float = Field(ge=0)
    currency: Literal["USD", "EUR"]


REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Extract the invoice's vendor, total and currency."},
        {"role": "user", "content": "Invoice: ACME GmbH invoice no. 7 - total due EUR 120.50"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "Invoice", "parameters": Invoice.model_json_schema()}}
    ],
    "tool_choice": {"type": "function", "function": {"name": "Invoice"}},
    "temperature": 0.0,
}


@task(name="bare-call", cache_policy=NO_CACHE, persist_result=False)
def call() -> Invoice:
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
    client = openai.OpenAI(base_url=os.environ["BENCH_BASE_URL"], api_key="sk-bench", max_retries=0)
    completion = client.chat.completions.create(**REQUEST)
    arguments = (completion.choices[0].message.tool_calls or [])[0].function.arguments
    return Invoice.model_validate_json(arguments)


@flow(name="bare-flow")
def bare_flow() -> Invoice:
    return call()


if __name__ == "__main__":
    get_current_settings().flows.heartbeat_frequency = None
    print(bare_flow())
