"""Storage's errors: what went wrong with the database, said so that an operator can act.

The ``storage`` branch of the one error tree (``stepline.errors``):

    StepLineError
    └── StorageError ......... the database cannot be opened, reached or migrated
    ├── DatabaseFailed ....... a read or write failed mid-operation, after its retries
    │                          (connection dropped, locked, read-only, disk full)
    └── LeaseLost ............ a worker's write was refused: the instance changed hands
                               (recovered, replayed, stopped) since the worker took it

Messages never carry SQL or bound parameters: those hold inputs and model output.
"""

from __future__ import annotations

from stepline.errors import StepLineError

__all__ = ["DatabaseFailed", "LeaseLost", "StorageError"]


class StorageError(StepLineError):
    """The database cannot be used; the message says what to fix."""


class DatabaseFailed(StorageError):
    """A statement failed after its retries; what was being done is not recorded."""


class LeaseLost(StorageError):
    """The fencing token a worker holds for an instance is no longer current.

    The worker was judged dead (or stopped) and the instance handed on; it
    must write nothing more for the instance and send no further request.
    """

    def __init__(self, instance_id: str, token: int) -> None:
        super().__init__(
            f"instance {instance_id} changed hands: this process's lease (fence {token}) is no "
            "longer current, so it writes nothing more for it"
        )
        self.instance_id = instance_id
        self.token = token
