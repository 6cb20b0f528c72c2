"""One step against a provider, in a process of its own, reporting its peak memory.

``python -m tests.flows.bounded_call <model-id>`` (catalog from ``STEPLINE_CONFIG``) runs the
invoice step through the real executor and SDK and prints one JSON line: the outcome, each
attempt's failure and stored sizes, and how far the resident set rose above where it stood
before the call (Linux's high-water mark, reset first): what the response cost in memory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steps.errors import StepFailed
from steps.runtime import Clearance, MemorySink, StepExecutor
from steps.settings import load_settings
from tests.flows.helpers import Document, invoice_workflow


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def main(model: str) -> None:
    step = invoice_workflow(model, max_reasks=0).steps[0]
    sink = MemorySink()
    executor = StepExecutor(load_settings(), sleep=lambda _s: None)
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
    before = _status_kib("VmRSS")
    try:
        executor.run(step, Document(text="ACME invoice, EUR 120.50"), sink, Clearance.alone(step))
        outcome = "ok"
    except StepFailed as exc:
        outcome = exc.failure.value
    finally:
        executor.close()
    attempts = [
        {
            "failure": a.failure.value if a.failure else None,
            "raw_response": len(a.raw_response or ""),
            "raw_output": len(a.raw_output or ""),
            "truncated": a.truncated,
        }
        for a in sink.finished
    ]
    rise = _status_kib("VmHWM") - before
    print(json.dumps({"outcome": outcome, "attempts": attempts, "rise_kib": rise, "before_kib": before}))


if __name__ == "__main__":
    main(sys.argv[1])
