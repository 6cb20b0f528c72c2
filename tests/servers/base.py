"""Shared machinery of the fake LLM servers: scripted replies, recording, HTTP.

Tests drive the real ``openai``/``anthropic`` SDK clients over real HTTP, so
retries, timeouts, header parsing and response validation are the SDKs' own.
Each server is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port)
in a background thread.  What it answers is scripted per request: a FIFO queue
of :class:`Reply` values, then a default reply (a ``Reply``, a callable
``(request_json) -> Reply``, or ``None`` for "a minimal valid instance of the
requested schema").

Two latency details matter and are handled here: ``TCP_NODELAY`` is set on
every accepted socket, and each response goes out in a single ``write``.
Without them every response stalls ~40 ms (Nagle + delayed ACK).
"""

from __future__ import annotations

import abc
import contextlib
import email.utils
import json
import secrets
import socket
import string
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self, TypeAlias, cast, get_args
from urllib.parse import urlsplit

from .schema_example import SchemaError, example_from_schema

__all__ = [
    "FakeLLMServer",
    "RecordedRequest",
    "Reply",
    "ReplyFactory",
    "ReplyKind",
    "ScriptItem",
    "Usage",
    "content_filter",
    "error",
    "gzip_bomb",
    "invalid_json",
    "ok",
    "refusal",
    "reset",
    "slow",
    "trickle",
    "truncated",
]

ReplyKind: TypeAlias = Literal[
    "ok",
    "invalid_json",
    "truncated",
    "refusal",
    "content_filter",
    "error",
    "slow",
    "reset",
    "trickle",
    "gzip_bomb",
]
_REPLY_KINDS: frozenset[str] = frozenset(get_args(ReplyKind))


@dataclass(frozen=True)
class Usage:
    """Token counts reported in ``usage`` (OpenAI: prompt/completion tokens)."""

    input_tokens: int = 20
    output_tokens: int = 10


@dataclass(frozen=True)
class Reply:
    """One scripted answer.  Build it with the module-level constructors.

    ``text`` holds the exact characters the model "produced": for ``ok`` the
    JSON text of the payload, for the other text kinds the given text.  Keeping
    the JSON as text (not a dict) keeps the reply immutable and lets tests send
    malformed JSON byte for byte.
    """

    kind: ReplyKind
    text: str = ""
    status: int = 200
    retry_after: float | None = None
    retry_after_ms: int | None = None
    body_type: str | None = None
    message: str | None = None
    code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    then: Reply | None = None
    usage: Usage | None = None
    inflated: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reply:
        """Build a reply from a JSONL script line, e.g. ``{"kind": "error", "status": 429}``."""
        data = dict(data)
        kind = data.pop("kind", None)
        if kind not in _REPLY_KINDS:
            raise ValueError(f"unknown reply kind {kind!r}; expected one of {sorted(_REPLY_KINDS)}")
        usage_raw = data.pop("usage", None)
        usage = Usage(**usage_raw) if isinstance(usage_raw, Mapping) else None

        def done(reply: Reply) -> Reply:
            if data:
                raise ValueError(f"unexpected keys for {kind!r} reply: {sorted(data)}")
            return replace(reply, usage=usage) if usage is not None else reply

        if kind == "ok":
            if "payload" not in data:
                raise ValueError("an 'ok' reply needs a 'payload'")
            payload = data.pop("payload")
            return done(ok(payload if isinstance(payload, (str, Mapping)) else json.dumps(payload)))
        if kind in ("invalid_json", "truncated", "refusal"):
            text = data.pop("text", "")
            builder = {"invalid_json": invalid_json, "truncated": truncated, "refusal": refusal}[kind]
            return done(builder(str(text)))
        if kind == "content_filter":
            return done(content_filter(str(data.pop("text", ""))))
        if kind == "error":
            extra = data.pop("headers", None) or {}
            return done(
                error(
                    int(data.pop("status")),
                    retry_after=data.pop("retry_after", None),
                    retry_after_ms=data.pop("retry_after_ms", None),
                    body_type=data.pop("body_type", None),
                    message=data.pop("message", None),
                    code=data.pop("code", None),
                    headers=cast(Mapping[str, str], extra),
                )
            )
        if kind == "slow":
            then_raw = data.pop("then", None)
            then = Reply.from_dict(then_raw) if isinstance(then_raw, Mapping) else None
            return done(slow(float(data.pop("seconds")), then=then))
        if kind == "trickle":
            then_raw = data.pop("then", None)
            then = Reply.from_dict(then_raw) if isinstance(then_raw, Mapping) else None
            return done(trickle(float(data.pop("seconds")), then=then))
        if kind == "gzip_bomb":
            return done(gzip_bomb(int(data.pop("inflated"))))
        return done(reset())


class _ModelLike(Protocol):
    def model_dump_json(self) -> str: ...


def ok(payload: Mapping[str, Any] | str | _ModelLike, *, usage: Usage | None = None) -> Reply:
    """The model's structured answer.

    A mapping (or a Pydantic model) is serialised to JSON; a ``str`` is sent
    verbatim, so it can be invalid JSON on purpose.  When the request offered
    tools the answer is a tool call to the requested tool with these arguments
    (Anthropic: the text is parsed into ``tool_use.input``; text that is not a
    JSON object goes out as a text block instead, see AnthropicServer),
    otherwise it is the message content.
    """
    if isinstance(payload, str):
        text = payload
    elif isinstance(payload, Mapping):
        text = json.dumps(dict(payload), ensure_ascii=False)
    else:
        text = payload.model_dump_json()
    return Reply(kind="ok", text=text, usage=usage)


def invalid_json(text: str = '{"unterminated": ') -> Reply:
    """Verbatim non-JSON output, where the JSON would have been."""
    return Reply(kind="invalid_json", text=text)


def truncated(text: str = '{"partial": "out') -> Reply:
    """Output cut off by the token limit (finish_reason length / stop_reason max_tokens)."""
    return Reply(kind="truncated", text=text)


def refusal(text: str = "I'm sorry, I can't help with that.") -> Reply:
    """The model declines (OpenAI ``message.refusal``; Anthropic stop_reason ``refusal``)."""
    return Reply(kind="refusal", text=text)


def content_filter(text: str = "") -> Reply:
    """OpenAI finish_reason ``content_filter`` (Anthropic has none: sent as a refusal)."""
    return Reply(kind="content_filter", text=text)


def error(
    status: int,
    retry_after: float | None = None,
    retry_after_ms: int | None = None,
    body_type: str | None = None,
    *,
    message: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An HTTP error in the vendor's error body format.

    ``body_type`` overrides ``error.type`` (default derived from ``status``),
    ``code`` sets OpenAI's ``error.code``; ``retry_after`` (seconds) and
    ``retry_after_ms`` become the ``retry-after`` / ``retry-after-ms`` headers
    that both SDKs honour when they retry.
    """
    if status < 400:
        raise ValueError(f"error status must be >= 400, got {status}")
    return Reply(
        kind="error",
        status=status,
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
        body_type=body_type,
        message=message,
        code=code,
        headers=tuple((headers or {}).items()),
    )


def slow(seconds: float, then: Reply | None = None) -> Reply:
    """Wait ``seconds`` before answering with ``then`` (default reply if None).

    The wait ends early when the server stops, so a test whose client timed out
    does not keep a thread sleeping.
    """
    return Reply(kind="slow", seconds=seconds, then=then)


def trickle(seconds: float, then: Reply | None = None) -> Reply:
    """Send ``then`` (default reply if None), status line and headers included, one byte every
    ``seconds``: a peer that never goes quiet long enough for a read timeout."""
    return Reply(kind="trickle", seconds=seconds, then=then)


def gzip_bomb(inflated: int) -> Reply:
    """A 200 whose ``Content-Encoding: gzip`` body inflates to ``inflated`` bytes of a JSON
    string (about 1,000 times smaller on the wire). Built here, once per size (1 GiB: ~5 s), so
    that the server answers at once."""
    _bomb(inflated)
    return Reply(kind="gzip_bomb", inflated=inflated)


_BOMBS: dict[int, bytes] = {}


def _bomb(inflated: int) -> bytes:
    """gzip of ``{"x": "000...0"}`` inflating to ``inflated`` bytes, built once per size."""
    if inflated not in _BOMBS:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
        parts = [packer.compress(b'{"x": "')]
        zeros = b"0" * (1 << 20)
        left = max(0, inflated - 9)
        while left > 0:
            parts.append(packer.compress(zeros[: min(left, len(zeros))]))
            left -= len(zeros)
        parts.append(packer.compress(b'"}'))
        parts.append(packer.flush())
        _BOMBS[inflated] = b"".join(parts)
    return _BOMBS[inflated]


def reset() -> Reply:
    """Drop the connection without a response (TCP RST via SO_LINGER 0)."""
    return Reply(kind="reset")


ReplyFactory: TypeAlias = Callable[[dict[str, Any]], Reply]
"""Computes a reply from the parsed request body."""

ScriptItem: TypeAlias = Reply | ReplyFactory


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it, before it answered.

    ``headers`` keys are lower-cased.  ``body`` is the parsed JSON (None if the
    body was not JSON).  ``reply`` is what the script chose (None when the
    request was rejected before reaching the script, e.g. a bad path).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    raw: bytes
    timestamp: float
    monotonic: float
    reply: Reply | None = None


@dataclass
class _Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


_ALNUM = string.ascii_letters + string.digits


def random_id(prefix: str, length: int) -> str:
    """An id shaped like the vendor's (prefix + base62), unique per call."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that sets TCP_NODELAY and tracks open connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    """The listen backlog: socketserver's default of 5 overflows when 16 clients connect at once."""

    def __init__(self, address: tuple[str, int], owner: FakeLLMServer) -> None:
        self.owner = owner
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.sockets_lock:
            self.open_sockets.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_sockets(self) -> None:
        """Wake handler threads parked on idle keep-alive connections."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or self.owner.stopping:
            return  # clients hanging up (timeouts, resets) are expected here
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request and hands it to the owning FakeLLMServer."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    def do_GET(self) -> None:
        self.server.owner._handle(self)

    def do_PUT(self) -> None:
        self.server.owner._handle(self)

    def do_DELETE(self) -> None:
        self.server.owner._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, response: _Response) -> None:
        """Write status line, headers and body with one ``write`` call."""
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Overloaded" if response.status == 529 else "Error"
        connection = "close" if self.close_connection else "keep-alive"
        lines = [f"HTTP/1.1 {response.status} {phrase}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines += [
            f"Content-Length: {len(response.body)}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Connection: {connection}",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)
            return
        if self.server.owner.verbose:
            self.log_request(response.status)

    def trickle(self, response: _Response, seconds: float, stop: threading.Event) -> None:
        """Like ``send``, one byte every ``seconds`` until done, the client hangs up or the server stops."""
        lines = [f"HTTP/1.1 {response.status} OK"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines += [f"Content-Length: {len(response.body)}", "Connection: close"]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
        self.close_connection = True
        for i in range(len(data)):
            try:
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            if stop.wait(seconds):
                return

    def abort(self) -> None:
        """Close with SO_LINGER 0 so the kernel sends RST instead of FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop makefile()'s reference, or close() would not close the fd
        self.connection.close()


class RateLimit:
    """A provider's requests-per-minute, enforced as a token bucket holding one second's worth.

    Providers quantise their per-minute limits into shorter windows (OpenAI: "60,000 RPM may
    be enforced as 1,000 requests per second"), so a client that sends a minute's budget in a
    burst is refused even though it stays under the per-minute figure.
    """

    def __init__(self, rpm: int) -> None:
        self.rate = rpm / 60.0
        self.capacity = max(1.0, self.rate)
        self._tokens = self.capacity
        self._at: float | None = None
        self._lock = threading.Lock()

    def admit(self, now: float) -> float:
        """0 if a request arriving at ``now`` is within the limit, else the seconds to wait."""
        with self._lock:
            if self._at is not None:
                self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class FakeLLMServer(abc.ABC):
    """A scripted vendor API on 127.0.0.1, run in a background thread.

    Use it as a context manager; ``base_url`` is what the SDK client takes::

        with OpenAIServer() as server:
            server.enqueue(error(429, retry_after=1), ok({"name": "x"}))
            client = openai.OpenAI(base_url=server.base_url, api_key="test")
            ...
            assert server.requests[-1].body["temperature"] == 0.1
    """

    vendor: ClassVar[str]
    base_path: ClassVar[str]
    endpoint: ClassVar[str]
    default_model: ClassVar[str]

    def __init__(
        self,
        *,
        script: Iterable[ScriptItem] = (),
        default: ScriptItem | None = None,
        usage: Usage | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
        rpm: int | None = None,
    ) -> None:
        self.usage = usage if usage is not None else Usage()
        self.limit = RateLimit(rpm) if rpm else None
        """Enforced like a provider's requests-per-minute: over it, 429 with retry-after."""
        self.verbose = verbose
        self.stopping = False
        self._host = host
        self._port = port
        self._initial_default = default
        self._default: ScriptItem | None = default
        self._queue: deque[ScriptItem] = deque(script)
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop_event = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stop_event.clear()
        self.stopping = False
        self._httpd = _HTTPServer((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"fake-{self.vendor}-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self.stopping = True
        self._stop_event.set()
        httpd.shutdown()
        httpd.close_open_sockets()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` without any API prefix."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What the vendor SDK's ``base_url`` expects."""
        return self.origin + self.base_path

    # -- scripting -----------------------------------------------------------

    def enqueue(self, *items: ScriptItem) -> None:
        """Append replies to the FIFO; each request consumes one."""
        with self._lock:
            self._queue.extend(items)

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        with self._lock:
            return len(self._queue)

    @property
    def default(self) -> ScriptItem | None:
        with self._lock:
            return self._default

    @default.setter
    def default(self, item: ScriptItem | None) -> None:
        with self._lock:
            self._default = item

    def reset_script(self) -> None:
        """Drop queued replies and restore the constructor's default."""
        with self._lock:
            self._queue.clear()
            self._default = self._initial_default

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    # -- inspection ----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("no request received")
            return self._requests[-1]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (for clients in other threads)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._requests)} of {count} requests arrived")
                self._changed.wait(remaining)
            return list(self._requests)

    # -- vendor hooks --------------------------------------------------------

    @abc.abstractmethod
    def validate(self, body: dict[str, Any]) -> tuple[str, str | None] | None:
        """Return (message, param) when the vendor would reject the request with a 400."""

    @abc.abstractmethod
    def render(self, reply: Reply, body: dict[str, Any], usage: Usage) -> dict[str, Any]:
        """The 200 response body for a content reply (not error/slow/reset)."""

    @abc.abstractmethod
    def error_body(
        self,
        status: int,
        body_type: str | None = None,
        message: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        """The vendor's error JSON for ``status`` (defaults derived from the status)."""

    @abc.abstractmethod
    def response_headers(self) -> list[tuple[str, str]]:
        """Vendor headers sent with every response (request ids and the like)."""

    @abc.abstractmethod
    def requested_schema(self, body: dict[str, Any]) -> Mapping[str, Any] | None:
        """The JSON schema the request asks the answer to follow, if any."""

    # -- request handling ----------------------------------------------------

    def auto_reply(self, body: dict[str, Any]) -> Reply:
        """The built-in default: a minimal valid instance of the requested schema."""
        schema = self.requested_schema(body)
        if schema is None:
            return ok({})
        try:
            return ok(json.dumps(example_from_schema(schema), ensure_ascii=False))
        except SchemaError:
            return ok({})

    def _resolve(self, item: ScriptItem | None, body: dict[str, Any]) -> Reply:
        if item is None:
            return self.auto_reply(body)
        if isinstance(item, Reply):
            return item
        reply = item(body)
        if not isinstance(reply, Reply):
            raise TypeError(f"reply factory returned {type(reply).__name__}, expected Reply")
        return reply

    def _next_item(self) -> ScriptItem | None:
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _json_response(
        self, status: int, payload: Mapping[str, Any], extra: Iterable[tuple[str, str]] = ()
    ) -> _Response:
        headers = [("Content-Type", "application/json"), *self.response_headers(), *extra]
        return _Response(status, json.dumps(payload).encode(), headers)

    def _error_response(self, status: int, message: str, *, param: str | None = None) -> _Response:
        return self._json_response(status, self.error_body(status, message=message, param=param))

    def _handle(self, handler: _Handler) -> None:
        arrived, arrived_wall = time.monotonic(), time.time()  # before the body is read
        raw = handler.read_body()
        path = urlsplit(handler.path).path
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None

        def record(reply: Reply | None) -> None:
            self._record(
                RecordedRequest(
                    method=handler.command,
                    path=path,
                    headers=headers,
                    body=body,
                    raw=raw,
                    timestamp=arrived_wall,
                    monotonic=arrived,
                    reply=reply,
                )
            )

        if handler.command != "POST" or path.rstrip("/") != self.endpoint:
            record(None)
            handler.send(self._error_response(404, f"Unknown request URL: {handler.command} {path}"))
            return
        if not isinstance(body, dict):
            record(None)
            handler.send(self._error_response(400, "The request body is not valid JSON."))
            return
        problem = self.validate(body)
        if problem is not None:
            record(None)
            message, param = problem
            handler.send(self._error_response(400, message, param=param))
            return
        wait = self.limit.admit(arrived) if self.limit is not None else 0.0
        if wait > 0:
            reply = error(429, retry_after=wait, message="Rate limit reached for requests per minute.")
            record(reply)
            self._perform(handler, reply, body)
            return
        try:
            reply = self._resolve(self._next_item(), body)
        except Exception as exc:  # a broken reply factory must not hang the client
            record(None)
            handler.send(self._error_response(500, f"reply factory failed: {exc!r}"))
            return
        record(reply)
        if self.verbose:
            handler.log_message("scripted reply: %s", reply.kind)
        self._perform(handler, reply, body)

    def _perform(self, handler: _Handler, reply: Reply, body: dict[str, Any]) -> None:
        if reply.kind == "slow":
            # Pick the follow-up now, not after the sleep: by then a test that
            # timed out has moved on and may have scripted a different default.
            then: Reply | _Response
            try:
                then = reply.then if reply.then is not None else self._resolve(self.default, body)
            except Exception as exc:
                then = self._error_response(500, f"reply factory failed: {exc!r}")
            if self._stop_event.wait(reply.seconds):
                handler.close_connection = True
                return
            if isinstance(then, _Response):
                handler.send(then)
            else:
                self._perform(handler, then, body)
            return
        if reply.kind == "reset":
            handler.abort()
            return
        if reply.kind == "trickle":
            then = reply.then if reply.then is not None else self._resolve(self.default, body)
            usage = then.usage if then.usage is not None else self.usage
            rendered = self._json_response(200, self.render(then, body, usage))
            handler.trickle(rendered, reply.seconds, self._stop_event)
            return
        if reply.kind == "gzip_bomb":
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                *self.response_headers(),
            ]
            handler.send(_Response(200, _bomb(reply.inflated), headers))
            return
        if reply.kind == "error":
            extra = list(reply.headers)
            if reply.retry_after is not None:
                extra.append(("retry-after", _format_seconds(reply.retry_after)))
            if reply.retry_after_ms is not None:
                extra.append(("retry-after-ms", str(reply.retry_after_ms)))
            payload = self.error_body(reply.status, reply.body_type, reply.message, reply.code)
            handler.send(self._json_response(reply.status, payload, extra))
            return
        usage = reply.usage if reply.usage is not None else self.usage
        handler.send(self._json_response(200, self.render(reply, body, usage)))
