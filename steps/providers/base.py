"""What every vendor module shares: the request and response hooks, and the ``Vendor`` protocol.

The HTTP response body of every request is read within the provider's bounds
(``steps.providers.bounds``) and captured byte-for-byte into the caller's ``capture_bodies()``
list, so that a failed attempt can be stored exactly as the provider sent it; the in-process
vendors append the JSON of what they return instead.

Write-ahead is enforced where the request leaves the process: an httpx request hook (and the
in-process vendors' ``create``) asks the caller's ``write_ahead()`` check first, which refuses
unless the attempt about to be sent was recorded. Instructor swallows exceptions raised in its
own hooks, so a failed record there could not stop the request; this can.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from steps.errors import FailureClass
from steps.settings import ModelConfig, ProviderConfig, ProviderKind, StructuredMode

if TYPE_CHECKING:
    import httpx2
    import instructor

__all__ = [
    "FailureRow",
    "Vendor",
    "capture_bodies",
    "check_write_ahead",
    "http_client_options",
    "record_body",
    "sampling_kwargs",
    "write_ahead",
]

FailureRow = tuple[str, str, FailureClass]
"""One row of the failure mapping: (defining module, exception class name) -> class. The module
is only consulted if already imported: a module that is not loaded cannot have raised."""

_BODIES: ContextVar[list[bytes] | None] = ContextVar("stepline_raw_bodies", default=None)
_WRITE_AHEAD: ContextVar[Callable[[bytes | None], None] | None] = ContextVar(
    "stepline_write_ahead", default=None
)


@contextmanager
def write_ahead(check: Callable[[bytes | None], None]) -> Iterator[None]:
    """Call ``check(body)`` before each request sent in this context; an exception it raises stops it.

    ``body`` is the exact request body about to leave, or None for the embedded model, whose
    requests never leave the process.
    """
    token = _WRITE_AHEAD.set(check)
    try:
        yield
    finally:
        _WRITE_AHEAD.reset(token)


def check_write_ahead(body: bytes | None) -> None:
    """Ask this context's ``write_ahead`` check whether a request with ``body`` may be sent."""
    check = _WRITE_AHEAD.get()
    if check is not None:
        check(body)


@contextmanager
def capture_bodies() -> Iterator[list[bytes]]:
    """Collect the raw response bodies received in this context."""
    bodies: list[bytes] = []
    token = _BODIES.set(bodies)
    try:
        yield bodies
    finally:
        _BODIES.reset(token)


def record_body(body: bytes) -> None:
    """Keep ``body`` as this context's latest raw response (if a caller is collecting them)."""
    bodies = _BODIES.get()
    if bodies is not None:
        bodies.append(body)


def _httpx_request(request: httpx2.Request) -> None:
    check_write_ahead(request.content)


def http_client_options(provider: ProviderConfig) -> dict[str, Any]:
    """What every HTTP vendor gives its SDK's ``DefaultHttpxClient``: the write-ahead check before
    each request, each response body read within ``provider``'s bounds and captured."""
    from steps.providers.bounds import http_options

    return http_options(provider, _httpx_request, record_body)


def sampling_kwargs(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling values an OpenAI-shaped ``create`` accepts, those that are set."""
    return {
        name: sampling[name]
        for name in ("temperature", "top_p", "max_tokens", "seed")
        if sampling.get(name) is not None
    }


class Vendor(Protocol):
    """What one provider kind supplies; ``steps.providers.registry`` maps each kind to one.

    The pool builds clients through it, ``ModelClient`` asks it for request arguments, the step
    runtime reads responses through it, and ``steps.classify`` assembles the one failure table
    from every vendor's ``failures`` and ``error_types``.
    """

    @property
    def kind(self) -> ProviderKind:
        """The catalog's ``kind`` this vendor serves."""
        ...

    @property
    def failures(self) -> tuple[FailureRow, ...]:
        """Its SDK's exceptions, most specific first (status errors are classified by status)."""
        ...

    @property
    def error_types(self) -> Mapping[str, FailureClass]:
        """Error types its error bodies name, which win over a 5xx status."""
        ...

    @property
    def sdk_modules(self) -> tuple[str, ...]:
        """The SDK modules whose exceptions ``failures`` must place (the gap test reads it)."""
        ...

    def modes(self) -> Mapping[StructuredMode, instructor.Mode]:
        """The Instructor mode for each structured mode it serves (imports Instructor)."""
        ...

    def build(
        self, config: ModelConfig, provider: ProviderConfig, closers: list[Callable[[], None]]
    ) -> instructor.Instructor:
        """An Instructor client for ``config``, SDK retries off; appends what closes it."""
        ...

    def request_kwargs(
        self, config: ModelConfig, sampling: Mapping[str, Any], schema: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The model name, the sampling its API accepts and any structured-output argument
        Instructor does not send itself."""
        ...

    def output_text(self, response: Any) -> str | None:
        """The model's answer as text, exactly as it arrived in the response's fields."""
        ...

    def usage(self, response: Any) -> tuple[int | None, int | None]:
        """Tokens in and out, as the response reports them."""
        ...

    def response_failure(self, response: Any) -> FailureClass | None:
        """A failure signalled in a successful response's fields (refusal, stop reason), or None."""
        ...
