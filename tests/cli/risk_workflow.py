"""A one-step workflow with the seed's mistake: a classification step left at temperature 0.7.

Registered as a team's own module is, so that a `stepline` subprocess finds it through
``workflow_modules = ["tests.cli.risk_workflow"]``.
"""

from __future__ import annotations

from prefect import flow

from flows.contract_review import ContractInput, RiskAssessment
from flows.engine import run_step
from flows.registry import register
from flows.workflow import Workflow
from steps.definition import CLASSIFY, Prompt, Sampling, Step

rate_risk: Step[ContractInput, RiskAssessment] = Step(
    name="rate-risk",
    kind=CLASSIFY,
    sampling=Sampling(temperature=0.7),  # the default that looked fine in testing
    prompt=Prompt(system="Rate the contract's risk for us: low, medium or high.", user="$title\n\n$text"),
    input_model=ContractInput,
    output_model=RiskAssessment,
)


@flow(name="risk-check")
def risk_check(contract: ContractInput) -> RiskAssessment:
    return run_step(rate_risk, contract)


WORKFLOW = register(
    Workflow(
        name="risk-check",
        description="Rate a contract's risk in one step.",
        flow=risk_check,
        input_model=ContractInput,
        output_model=RiskAssessment,
        steps=(rate_risk,),
    )
)
