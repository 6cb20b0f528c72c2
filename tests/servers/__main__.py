"""Run one fake server in the foreground for manual trials.

    python -m tests.servers openai|anthropic [--port N] [--script FILE.jsonl] [--rpm N] [--quiet]

Each non-blank script line is one reply, e.g. ``{"kind": "error", "status":
429, "retry_after": 2}`` or ``{"kind": "ok", "payload": {...}}`` (see
``Reply.from_dict``); lines starting with ``#`` are comments.  Once the script
is used up the server answers with a minimal valid instance of the requested
tool / response schema.  With ``--rpm`` it enforces a requests-per-minute limit
as a provider would (429 with retry-after).  Ctrl-C (SIGINT) or SIGTERM stops it,
and it prints one JSON line: requests received, answered 429, first and last arrival.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .anthropic_server import AnthropicServer
from .base import FakeLLMServer, Reply
from .openai_server import OpenAIServer

_SERVERS: dict[str, type[FakeLLMServer]] = {"openai": OpenAIServer, "anthropic": AnthropicServer}


def load_script(path: Path) -> list[Reply]:
    """Parse a JSONL script; errors name the offending line."""
    replies: list[Reply] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            replies.append(Reply.from_dict(json.loads(stripped)))
        except (ValueError, TypeError, KeyError) as exc:
            raise SystemExit(f"{path}:{number}: {exc}") from exc
    return replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers", description=__doc__.split("\n\n")[0])
    parser.add_argument("vendor", choices=sorted(_SERVERS))
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--script", type=Path, help="JSONL file of replies to send first, in order")
    parser.add_argument("--quiet", action="store_true", help="do not log each request to stderr")
    parser.add_argument("--rpm", type=int, help="enforce this many requests per minute (429 + retry-after)")
    args = parser.parse_args(argv)

    script = load_script(args.script) if args.script else []
    server = _SERVERS[args.vendor](script=script, port=args.port, verbose=not args.quiet, rpm=args.rpm)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed explicitly: a shell's background job inherits SIGINT *ignored*,
    # and a process manager stops things with SIGTERM.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with server:
        print(f"{args.vendor} fake server: base_url={server.base_url}", flush=True)
        if script:
            print(f"{len(script)} scripted replies queued, then schema-guessed defaults", flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping", file=sys.stderr)
        received = server.requests
        limited = [r for r in received if r.reply is not None and r.reply.status == 429]
        summary = {
            "requests": len(received),
            "rate_limited": len(limited),
            "first": received[0].timestamp if received else None,
            "last": received[-1].timestamp if received else None,
        }
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
