"""Declassifiers: the one explicit, local way personal data becomes text a public model may see.

A workflow names its declassifiers (``Workflow(declassifiers=...)``); ``stepline workflows``
lists them, and every attempt that sends text they cleared records which one did. They run
here, in the process, never on a model.

Two kinds:

- ``Placeholders``: stands a consistent placeholder (``[NAME]``) in for each value a pii step
  extracted, and puts the real values back into a later step's answer, locally. The public
  model never sees the values, only that there is, say, a name to greet.
- ``declassifier``: a function the author vouches for (a count, a coarse region, a summary
  they wrote themselves), whose ``str`` result comes back cleared.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError

from steps.errors import DefinitionError, StepLineError, describe_validation_error
from steps.privacy import Declassified, Origin, _cleared

__all__ = ["Declassifier", "FunctionDeclassifier", "Hidden", "Placeholders", "RestoreFailed", "declassifier"]

P = ParamSpec("P")
M = TypeVar("M", bound=BaseModel)

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class RestoreFailed(StepLineError):
    """Putting the real values back made an answer invalid for its model (too long, say)."""


class Declassifier:
    """A named way of clearing text; ``description`` is what ``stepline workflows`` shows."""

    def __init__(self, name: str, description: str) -> None:
        self.name = _checked(name)
        self.description = description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def origin(self) -> Origin:
        return Origin("declassifier", self.name)


class FunctionDeclassifier(Declassifier, Generic[P]):
    """A function whose text result is cleared: made by ``declassifier``."""

    def __init__(self, name: str, description: str, function: Callable[P, str]) -> None:
        super().__init__(name, description)
        self.function = function
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Declassified:
        result = self.function(*args, **kwargs)
        if not isinstance(result, str):
            raise DefinitionError(
                f"declassifier {self.name!r} returned {type(result).__name__}; it must return text (str)"
            )
        return _cleared(result, self.origin)


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise DefinitionError(
            f"declassifier name {name!r} must be lowercase words joined by '-', e.g. contact-placeholders"
        )
    return name


def declassifier(name: str, description: str) -> Callable[[Callable[P, str]], FunctionDeclassifier[P]]:
    """Make a function returning text a declassifier: its results come back ``Declassified``.

    The author vouches that what it returns carries no personal data::

        @declassifier("order-count", "how many orders the customer mentions, as a number")
        def order_count(person: PersonDetails) -> str: ...
    """

    _checked(name)  # here, where it is written, not when it decorates

    def wrap(function: Callable[P, str]) -> FunctionDeclassifier[P]:
        return FunctionDeclassifier(name, description, function)

    return wrap


class Placeholders(Declassifier):
    """Consistent placeholders for the values a pii step extracted, put back locally in answers.

    ``hide`` takes the extracted model (or a mapping) and gives one ``Hidden`` per instance: its
    ``hidden["name"]`` is the ``Declassified`` placeholder ``[NAME]`` to hand a public step, and
    ``hidden.restore(answer)`` returns the answer, as its own model, validated, with each
    placeholder replaced by the real value (or by ``missing`` text when nothing was extracted).
    """

    def __init__(self, name: str, description: str = "") -> None:
        super().__init__(
            name, description or "consistent placeholders for extracted values, put back locally"
        )

    def hide(
        self, values: BaseModel | Mapping[str, str | None], *, missing: Mapping[str, str] | None = None
    ) -> Hidden:
        found = values.model_dump() if isinstance(values, BaseModel) else dict(values)
        originals = {
            f"[{key.upper()}]": value.strip() if isinstance(value, str) and value.strip() else None
            for key, value in found.items()
        }
        return Hidden(self, originals, {f"[{k.upper()}]": v for k, v in (missing or {}).items()})


class Hidden:
    """The placeholders of one instance, and what they stand for (kept in this process only)."""

    def __init__(
        self, owner: Placeholders, originals: Mapping[str, str | None], missing: Mapping[str, str]
    ) -> None:
        self._owner = owner
        self._originals = dict(originals)
        self._missing = dict(missing)
        self._pattern = re.compile("|".join(map(re.escape, self._originals)) or r"(?!)")

    def __getitem__(self, key: str) -> Declassified:
        placeholder = f"[{key.upper()}]"
        if placeholder not in self._originals:
            raise DefinitionError(
                f"{self._owner.name}: nothing called {key!r} was hidden (known: "
                f"{', '.join(k.strip('[]').lower() for k in self._originals)})"
            )
        if self._originals[placeholder] is None and placeholder not in self._missing:
            raise DefinitionError(
                f"{self._owner.name}: {key!r} has no value in this instance; give the text to put "
                f"back instead: hide(..., missing={{{key!r}: 'customer'}})"
            )
        return _cleared(placeholder, self._owner.origin)

    def __repr__(self) -> str:  # never the values
        return f"Hidden({self._owner.name}, placeholders={sorted(self._originals)})"

    def restore(self, answer: M) -> M:
        """``answer`` with every placeholder replaced by what it stands for, validated as its model."""

        def put_back(match: re.Match[str]) -> str:
            return self._originals.get(match.group(0)) or self._missing.get(match.group(0), match.group(0))

        def walk(value: Any) -> Any:
            if isinstance(value, str):
                return self._pattern.sub(put_back, value)
            if isinstance(value, list):
                return [walk(item) for item in value]
            if isinstance(value, dict):
                return {key: walk(item) for key, item in value.items()}
            return value

        model = type(answer)
        try:
            return model.model_validate(walk(answer.model_dump()))
        except ValidationError as exc:
            raise RestoreFailed(
                f"{self._owner.name}: the answer with its real values put back is no longer a valid "
                f"{model.__name__}: {describe_validation_error(exc)}; allow longer fields in "
                f"{model.__name__}"
            ) from None
