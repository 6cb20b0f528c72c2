"""The workflow the chaos suite runs, registered as a team's own module would be.

Processes started by the suite import it through ``workflow_modules``. Every
request names its input's token (``doc-00042``): the extract request in the
invoice text, the categorise request in the vendor the server answered with,
so the provider's request log can be matched to instances and steps.
"""

from __future__ import annotations

from flows.registry import register
from tests.flows.pipeline import pipeline

CHAOS_WORKFLOW = register(pipeline("gpt-chaos", name="file-invoice-chaos"))
