"""Time to the first provider request, from process start: `stepline run` against a bare Prefect flow.

What it measures, interleaved round by round in one run, on Prefect's warm local server
(started first if none is running) against one loopback OpenAI server:

  (a) a bare script (``bench/bare_flow.py``): ``import openai`` and ``prefect``, one ``@flow``
      with one ``@task`` that makes the same tools request and parses the answer;
  (a') the same script started as ``stepline`` starts (``stepline/launch.py``): the cyclic
      collector off while it imports, on (with what was built frozen) as the task starts. Not
      a target: it shows how much of the gap is Stepline's own code once both start alike;
  (b) ``stepline run bench-invoice --input invoice.json``: the real command (its entry point,
      settings, catalog, store, routing, Instructor, the step as a Prefect task), on a one-step
      workflow that ``bench/bench_workflow.py`` registers through ``STEPLINE_WORKFLOW_MODULES``;
  (c) ``stepline replay <id>`` of an instance that paused at that step (the server refused its
      key with a 401 in an untimed ``stepline run`` just before): the replay sends the step again.

Each is a fresh process, with bytecode cached as on a user's machine. The clock starts just
before ``Popen`` and stops at the request's arrival at the server (the server's own timestamp);
the process's whole run is printed too.
(a) gets ``PREFECT_API_URL``; (b) does not, so it finds the warm local server as a user's
command does. Both share one SQLite store file across rounds (warm, as on a user's machine).

Printed: p50 / max seconds to first request and to exit per variant, and the ratios (b)/(a),
(c)/(a) (the targets) and (b)/(a').

How to run:

    uv run python bench/first_request.py               # 7 rounds
    uv run python bench/first_request.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from common import BENCH_KEY_ENV, console, print_table, start_prefect
from common import loopback_catalog as bench_catalog

if TYPE_CHECKING:
    from tests.servers import OpenAIServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from prefect.settings import PREFECT_API_URL

    from tests.flows.helpers import INPUT, VALID
    from tests.servers import OpenAIServer, ok

    console.print(f"Prefect API ready in {start_prefect():.1f} s")
    api_url = str(PREFECT_API_URL.value())
    with (
        tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp,
        OpenAIServer(default=ok(VALID)) as server,
    ):
        folder = Path(tmp)
        catalog = folder / "stepline.toml"
        catalog.write_text(bench_catalog(server.base_url), encoding="utf-8")
        invoice = folder / "invoice.json"
        invoice.write_text(json.dumps(INPUT), encoding="utf-8")
        base = {
            k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PYTHONDONTWRITEBYTECODE")
        }
        # Bytecode cached as on a user's machine (round 0 writes it), though this environment may
        # set PYTHONDONTWRITEBYTECODE: without it, every start compiles Stepline's own modules
        # again, the bare script's one file not. In the temporary folder, not the sources'.
        base["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        base[BENCH_KEY_ENV] = "sk-bench"
        base["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
        bare_env = {**base, "PREFECT_API_URL": api_url, "BENCH_BASE_URL": server.base_url}
        stepline_env = {
            **base,
            "STEPLINE_CONFIG": str(catalog),
            "STEPLINE_WORKFLOW_MODULES": '["bench_workflow"]',
            "STEPLINE_DATABASE_URL": f"sqlite:///{folder / 'stepline.db'}",
        }
        stepline = str(Path(sys.executable).with_name("stepline"))
        run = [stepline, "run", "bench-invoice", "--input", str(invoice)]
        variants = {
            "(a) bare Prefect flow + task": ([sys.executable, str(HERE / "bare_flow.py")], bare_env),
            "(a') bare, started as stepline": (
                [sys.executable, str(HERE / "bare_flow.py")],
                {**bare_env, "BENCH_GC_STARTUP": "1"},
            ),
            "(b) stepline run": (run, stepline_env),
            "(c) stepline replay": ([stepline, "replay", REPLAY_ID], stepline_env),
        }
        first: dict[str, list[float]] = {name: [] for name in variants}
        whole: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds + 1):  # round 0 warms the page cache and the store
            order = list(variants) if round_ % 2 else list(reversed(variants))
            for name in order:
                command, env = variants[name]
                if REPLAY_ID in command:  # untimed: an instance paused at its step, to replay
                    command = [*command[:-1], paused_instance(run, env, tmp, server)]
                seen = len(server.requests)
                started = time.time()
                done = subprocess.run(  # noqa: S603 (our own interpreter, entry point and arguments)
                    command, env=env, cwd=tmp, capture_output=True, text=True, timeout=300
                )
                ended = time.time()
                if done.returncode != 0 or len(server.requests) <= seen:
                    raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
                if round_ == 0:
                    continue
                first[name].append(server.requests[seen].timestamp - started)
                whole[name].append(ended - started)
    (a, a_alike, b, c) = variants
    rows: list[list[object]] = []
    for name in variants:
        rows.append(
            [
                name,
                statistics.median(first[name]),
                max(first[name]),
                statistics.median(first[name]) / statistics.median(first[a]),
                statistics.median(whole[name]),
            ]
        )
    print_table(
        f"from process start, {args.rounds} rounds interleaved (s)",
        ("variant", "first request p50", "max", "ratio p50", "exit p50"),
        rows,
    )
    for other in (b, c):
        ratio = statistics.median(first[other]) / statistics.median(first[a])
        console.print(f"{other[:3]}/(a) first request: {ratio:.2f}x (target 1.2x)")
    alike = statistics.median(first[b]) / statistics.median(first[a_alike])
    console.print(f"(b)/(a') first request: {alike:.2f}x (both started with the collector off)")
    return 0


REPLAY_ID = "<paused instance>"


def paused_instance(run: list[str], env: dict[str, str], cwd: str, server: OpenAIServer) -> str:
    """Run the workflow once with the server refusing the key: the instance pauses (auth)."""
    from tests.servers import error

    server.enqueue(error(401))
    done = subprocess.run(  # noqa: S603 (our own entry point and arguments)
        run, env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    found = re.search(r"instance ([0-9a-f]{32})", done.stderr + done.stdout)
    if done.returncode == 0 or found is None:
        raise SystemExit(f"the set-up run did not pause (exit {done.returncode}):\n{done.stderr}")
    return found.group(1)


if __name__ == "__main__":
    raise SystemExit(main())
