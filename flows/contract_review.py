"""contract-review: extract clauses -> assess each clause's risk -> summarise for the reviewer.

Extraction runs on the cheap tier at temperature 0, assessment on the
capable tier, the summary is a generate step. Strings and lists are bounded
so that small local models cannot loop until their token limit.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field, field_validator, model_validator

from flows.engine import run_step
from flows.workflow import Workflow
from steps.definition import ASSESS, EXTRACT, GENERATE, Prompt, Sensitivity, Step, Tier

__all__ = ["WORKFLOW", "contract_review"]

Risk = Literal["low", "medium", "high"]


class ContractInput(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=20, max_length=20_000)


class Clause(BaseModel):
    clause_id: str = Field(min_length=1, max_length=12, description="Short id such as c1, c2")
    heading: str = Field(min_length=1, max_length=60, description="A few words naming the clause")
    text: str = Field(min_length=1, max_length=300, description="The clause's wording, shortened")

    @field_validator("clause_id", "heading", "text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class ExtractedClauses(BaseModel):
    clauses: list[Clause] = Field(min_length=1, max_length=6)

    @model_validator(mode="after")
    def _unique_ids(self) -> ExtractedClauses:
        seen: set[str] = set()
        for index, clause in enumerate(self.clauses):
            if clause.clause_id in seen:  # renumber rather than fail: ids are ours, not the contract's
                clause.clause_id = f"c{index + 1}"
            seen.add(clause.clause_id)
        return self


class ClauseToAssess(BaseModel):
    contract_title: str
    clause_id: str
    heading: str
    text: str


class RiskAssessment(BaseModel):
    risk_level: Risk = Field(description="low, medium or high risk for our company")
    reason: str = Field(min_length=1, max_length=200, description="One sentence: why")


class AssessedClause(BaseModel):
    clause_id: str
    heading: str
    risk_level: Risk
    reason: str


class SummaryRequest(BaseModel):
    contract_title: str
    assessments: list[AssessedClause]


class FlaggedClause(BaseModel):
    clause_id: str = Field(min_length=1, max_length=12)
    reason: str = Field(min_length=1, max_length=200)


class ReviewSummary(BaseModel):
    summary: str = Field(min_length=1, max_length=600, description="Three sentences for the reviewer")
    risk_level: Risk
    flagged_clauses: list[FlaggedClause] = Field(default_factory=list, max_length=6)


class ContractReview(BaseModel):
    title: str
    clauses: list[AssessedClause]
    summary: ReviewSummary


extract_clauses: Step[ContractInput, ExtractedClauses] = Step(
    name="extract-clauses",
    kind=EXTRACT,
    tier=Tier.CHEAP,
    sensitivity=Sensitivity.INTERNAL,
    input_model=ContractInput,
    output_model=ExtractedClauses,
    prompt=Prompt(
        system=(
            "You extract the numbered clauses of a contract as JSON. For each clause give "
            'clause_id ("c" and its number: c1, c2, ...), heading (the clause\'s title, a few '
            "words) and text (its wording, copied or shortened to one sentence)."
        ),
        user="Contract: $title\n\n$text",
    ),
)

assess_risk: Step[ClauseToAssess, RiskAssessment] = Step(
    name="assess-risk",
    kind=ASSESS,
    tier=Tier.CAPABLE,
    sensitivity=Sensitivity.INTERNAL,
    input_model=ClauseToAssess,
    output_model=RiskAssessment,
    prompt=Prompt(
        system=(
            "You are a contracts lawyer reviewing one clause for the customer. Answer with "
            "risk_level (low, medium or high) and reason (one short sentence saying why)."
        ),
        user="Contract: $contract_title\nClause $clause_id ($heading): $text",
    ),
)

summarize: Step[SummaryRequest, ReviewSummary] = Step(
    name="summarize-review",
    kind=GENERATE,
    tier=Tier.CHEAP,
    sensitivity=Sensitivity.INTERNAL,
    input_model=SummaryRequest,
    output_model=ReviewSummary,
    prompt=Prompt(
        system=(
            "You summarise a contract review for the reviewer. Answer with summary (at most "
            "three sentences), risk_level (the overall risk: low, medium or high) and "
            "flagged_clauses (the clause_id and a short reason for each medium or high clause)."
        ),
        user="Contract: $contract_title\nClause assessments (JSON): $assessments",
    ),
)


@flow(name="contract-review", log_prints=False)
def contract_review(contract: ContractInput) -> ContractReview:
    extracted = run_step(extract_clauses, contract)
    assessed: list[AssessedClause] = []
    for clause in extracted.clauses:
        risk = run_step(
            assess_risk,
            ClauseToAssess(
                contract_title=contract.title,
                clause_id=clause.clause_id,
                heading=clause.heading,
                text=clause.text,
            ),
        )
        assessed.append(
            AssessedClause(
                clause_id=clause.clause_id,
                heading=clause.heading,
                risk_level=risk.risk_level,
                reason=risk.reason,
            )
        )
    summary = run_step(summarize, SummaryRequest(contract_title=contract.title, assessments=assessed))
    return ContractReview(title=contract.title, clauses=assessed, summary=summary)


WORKFLOW = Workflow(
    name="contract-review",
    description="Extract a contract's clauses, assess each clause's risk, summarise for the reviewer.",
    flow=contract_review,
    input_model=ContractInput,
    output_model=ContractReview,
    steps=(extract_clauses, assess_risk, summarize),
)
