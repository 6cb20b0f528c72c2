"""A one-step workflow for the benchmarks' ``stepline`` commands (``STEPLINE_WORKFLOW_MODULES``).

The invoice extraction of tests/flows/helpers.py, pinned to the bench catalog's loopback model.
"""

from __future__ import annotations

from dataclasses import replace

from flows.registry import register
from tests.flows.helpers import invoice_workflow

MODEL_ID = "gpt-bench"  # common.MODEL_ID; not imported: common sets Prefect's environment

WORKFLOW = register(replace(invoice_workflow(MODEL_ID), name="bench-invoice"))
