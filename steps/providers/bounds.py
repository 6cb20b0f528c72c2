"""Bounds on what a provider may send back: a deadline for the whole response, a size for its body.

httpx's ``timeout`` bounds each read, not the response: a peer sending one byte every two seconds
keeps a request alive for ever under ``timeout=10``, and a gzip body is inflated whole before
anyone looks at its size (1 MB became 1 GiB and 7 GB of memory). So every HTTP vendor's client
gets ``http_options(provider)``:

- a network backend whose every connect, read and write is cut to the time left before the
  request's deadline (``ProviderConfig.response_deadline_s``, from the moment it is sent), reading
  at most ``READ_CHUNK`` bytes at a time so that one read never inflates to much;
- a response hook that reads the body, decompressed, chunk by chunk and stops as soon as it
  passes ``ProviderConfig.max_response_bytes``.

Either limit raises a ``ResponseLimit``, which the SDKs wrap (``APIConnectionError``) and
``steps.classify`` looks through: each has its own ``FailureClass``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from steps.errors import FailureClass

if TYPE_CHECKING:
    import ssl

    import httpcore2
    import httpx2

    from steps.settings import ProviderConfig

__all__ = ["READ_CHUNK", "BodyTooLarge", "DeadlinePassed", "ResponseLimit", "http_options"]

READ_CHUNK = 16 * 1024
"""Bytes read from the socket at a time: a gzip chunk of this size inflates to at most ~17 MB."""

_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("stepline_response_deadline", default=None)
"""(``time.monotonic()`` by which the request in flight in this context must have been read
whole, the provider's ``deadline_s`` it came from, for the message)."""


class ResponseLimit(Exception):
    """A provider's response passed one of Stepline's bounds; ``failure`` says which."""

    failure: FailureClass = FailureClass.UNKNOWN


class DeadlinePassed(ResponseLimit):
    """The response was not in whole within the provider's deadline."""

    failure = FailureClass.DEADLINE


class BodyTooLarge(ResponseLimit):
    """The response body, decompressed, passed the provider's size limit."""

    failure = FailureClass.TOO_LARGE


def _passed(what: str) -> DeadlinePassed:
    bound = _DEADLINE.get()
    seconds = f" (deadline_s = {bound[1]:g} s)" if bound is not None else ""
    return DeadlinePassed(f"{what} at the deadline{seconds}")


def _left(timeout: float | None) -> float | None:
    """``timeout`` cut to the time left before this context's deadline; past it, raise."""
    bound = _DEADLINE.get()
    if bound is None:
        return timeout
    left = bound[0] - time.monotonic()
    if left <= 0:
        raise _passed("the response was not complete")
    return left if timeout is None else min(timeout, left)


def _past_deadline() -> bool:
    bound = _DEADLINE.get()
    return bound is not None and time.monotonic() >= bound[0] - 0.01


def _network_types() -> tuple[type[Any], type[Any]]:
    """The stream and backend classes, built when first needed so httpcore2 loads with an SDK."""
    import httpcore2

    class Stream(httpcore2.NetworkStream):
        def __init__(self, inner: httpcore2.NetworkStream) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            try:
                return self._inner.read(min(max_bytes, READ_CHUNK), _left(timeout))
            except httpcore2.ReadTimeout:
                if _past_deadline():
                    raise _passed("the response was still arriving") from None
                raise

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            try:
                self._inner.write(buffer, _left(timeout))
            except httpcore2.WriteTimeout:
                if _past_deadline():
                    raise _passed("the request was still being sent") from None
                raise

        def close(self) -> None:
            self._inner.close()

        def start_tls(
            self,
            ssl_context: ssl.SSLContext,
            server_hostname: str | None = None,
            timeout: float | None = None,
        ) -> httpcore2.NetworkStream:
            return Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore2.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore2.SyncBackend()

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore2.NetworkStream:
            try:
                inner = self._inner.connect_tcp(host, port, _left(timeout), local_address, socket_options)
            except httpcore2.ConnectTimeout:
                if _past_deadline():
                    raise _passed("no connection yet") from None
                raise
            return Stream(inner)

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
        ) -> httpcore2.NetworkStream:
            return Stream(self._inner.connect_unix_socket(path, _left(timeout), socket_options))

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return Stream, Backend


def _transport(deadline_s: float) -> httpx2.BaseTransport:
    """httpx's own transport over the bounded backend; every request gets ``deadline_s``."""
    import httpx2

    _, backend = _network_types()

    class Body(httpx2.SyncByteStream):
        """The body's chunks, each read under the request's deadline (set per chunk: a generator
        must not hold a context variable across its yields)."""

        def __init__(self, inner: httpx2.SyncByteStream, deadline: tuple[float, float]) -> None:
            self._inner = inner
            self._deadline = deadline

        def __iter__(self) -> Iterator[bytes]:
            chunks = iter(self._inner)
            while True:
                token = _DEADLINE.set(self._deadline)
                try:
                    chunk = next(chunks, None)
                finally:
                    _DEADLINE.reset(token)
                if chunk is None:
                    return
                yield chunk

        def close(self) -> None:
            self._inner.close()

    class Transport(httpx2.HTTPTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            deadline = (time.monotonic() + deadline_s, deadline_s)
            token = _DEADLINE.set(deadline)
            try:
                response = super().handle_request(request)
            finally:
                _DEADLINE.reset(token)
            assert isinstance(response.stream, httpx2.SyncByteStream)
            return httpx2.Response(
                status_code=response.status_code,
                headers=response.headers,
                stream=Body(response.stream, deadline),
                extensions=response.extensions,
            )

    # The SDKs' own connection limits (openai and anthropic both use these).
    transport = Transport(limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100))
    pool: httpcore2.ConnectionPool = transport._pool
    assert hasattr(pool, "_network_backend"), "httpcore2 changed: the bounded backend would not be used"
    pool._network_backend = backend()
    return transport


def read_bounded(response: httpx2.Response, max_bytes: int) -> bytes:
    """The body, decompressed, read chunk by chunk; ``BodyTooLarge`` once it passes ``max_bytes``."""
    if hasattr(response, "_content"):
        return response.content
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            response.close()
            raise BodyTooLarge(
                f"the response body passed the provider's max_response_bytes ({max_bytes:,} bytes, "
                "decompressed); reading stopped there"
            )
        chunks.append(chunk)
    # What ``Response.read()`` would have kept: the SDK reads it from here.
    response._content = b"".join(chunks)
    return response._content


def http_options(
    provider: ProviderConfig,
    on_request: Callable[[httpx2.Request], None],
    on_body: Callable[[bytes], None],
) -> dict[str, Any]:
    """Keyword arguments for an SDK's ``DefaultHttpxClient``: the bounded transport, and hooks
    that call ``on_request`` before each request and ``on_body`` with each body, read bounded."""
    limit = provider.max_response_bytes

    def on_response(response: httpx2.Response) -> None:
        on_body(read_bounded(response, limit))

    return {
        "transport": _transport(provider.response_deadline_s),
        "event_hooks": {"request": [on_request], "response": [on_response]},
    }
