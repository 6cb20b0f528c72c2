"""Stepline's one error tree: every error raised on purpose, in every package, derives from here.

    StepLineError ................ base; ``message`` is one line saying what and how to fix it
    ├── ConfigError .............. steps: the catalog or settings file is wrong (an operator fix)
    ├── DefinitionError .......... steps: a step or workflow is declared wrongly (a developer fix)
    ├── InputError ............... steps: an input, id or option cannot be used as given
    ├── StepFailed ............... steps: a step ran and produced no valid output; ``failure``
    │                              (a ``FailureClass``) says why, and how the run goes on
    ├── Superseded ............... steps: this process lost the instance (judged dead, handed on)
    ├── NotCleared ............... steps: a field counted as clean for a public model holds other
    │                              text (``steps.privacy``); raised as a ``pii_blocked`` failure
    ├── RestoreFailed ............ steps: a declassifier's real values made an answer invalid
    ├── StorageError ............. storage: the database cannot be opened, reached or migrated
    │   ├── DatabaseFailed ....... a read or write failed mid-operation, after its retries
    │   └── LeaseLost ............ a worker's write was refused: the instance changed hands
    ├── ReplayRefused ............ flows: the instance is running, or completed with no step named
    ├── ReviewError .............. flows: a review cannot be decided (unknown, decided, invalid)
    ├── Withheld ................. flows: stands in, in Prefect's records, for an exception of an
    │                              instance holding personal data (its type and step only)
    └── ServerError .............. flows: Prefect's local API server cannot be started or stopped

Each package defines its own branch (``steps.errors``, ``steps.privacy``,
``steps.declassifiers``, ``storage.errors``, ``flows.instances``, ``flows.engine``,
``flows.local_server``); the command line and the TUI
catch ``StepLineError`` alone and show its message. This module imports
nothing, so the leaf packages (``steps``, ``storage``) can depend on it
without depending on each other or on the command line.

Errors define ``__reduce__`` so they survive pickling: Prefect may move an
exception between threads or processes, and keyword-only constructors do not
round-trip through the default pickle protocol.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StepLineError"]


class StepLineError(Exception):
    """Base of every error Stepline raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[StepLineError], state: dict[str, Any]) -> StepLineError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error
