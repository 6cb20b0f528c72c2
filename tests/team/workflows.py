"""The workflow the team-scale test submits, registered as a team's own module would be.

Workers import it through ``workflow_modules = ["tests.team.workflows"]``.
"""

from __future__ import annotations

from flows.registry import register
from tests.flows.pipeline import pipeline

TEAM_WORKFLOW = register(pipeline("gpt-team", name="file-invoice-team"))
