"""What the privacy tests share: one public and one private model on loopback servers, and a
quick way to declare a step."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from steps.definition import CLASSIFY, Prompt, Step
from steps.privacy import Declassified, Personal

__all__ = ["Draft", "Request", "Summary", "catalog", "step"]


class Request(BaseModel):
    """A workflow input with one personal field."""

    channel: Literal["email", "chat"] = "email"
    subject: str
    message: Personal[str]


class Summary(BaseModel):
    topic: Literal["billing", "other"]
    summary: str


class Draft(BaseModel):
    """What a public step may take: a Literal and cleared text."""

    topic: Literal["billing", "other"]
    subject: Declassified


def catalog(public_kind: str, public_url: str, private_url: str) -> str:
    """A public model (cheaper, so the router picks it wherever it may) and a private one."""
    return f"""
[retry]
base_delay_s = 0.01

[providers.public]
kind = "{public_kind}"
base_url = "{public_url}"
api_key_env = "STEPLINE_TEST_PUBLIC_KEY"

[providers.private]
kind = "openai_compatible"
base_url = "{private_url}"
private = true

[models.public-small]
provider = "public"
model = "public-small-2026"
tier = "cheap"
structured_mode = "tools"
input_price = 0.1
output_price = 0.1

[models.private-small]
provider = "private"
model = "private-small-2026"
tier = "cheap"
structured_mode = "tools"
input_price = 1.0
output_price = 1.0
"""


def step(name: str, user: str, input_model: type[BaseModel], output_model: type[BaseModel], **kw: Any) -> Any:
    """A classify step whose system prompt says what it is (``Do <name>.``)."""
    return Step(
        name=name,
        kind=CLASSIFY,
        input_model=input_model,
        output_model=output_model,
        prompt=Prompt(system=f"Do {name}.", user=user),
        **kw,
    )
