"""From a key press in the TUI to the provider request it causes: replay and approve, warmed up.

What it measures, in one process driving the real app through Textual's Pilot, on Prefect's
warm local server against a loopback OpenAI server: ``--rounds`` paused instances of a one-step
workflow (their request refused with 401) and as many needing review (an answer that fails
the schema), then the app as ``stepline tui`` opens it (``warm=True``: the engine loads in a
worker thread after the first paint). For each round:

  - replay: ``enter`` on a paused instance, then ``R``; the clock stops when the loopback
    server receives the replay's request;
  - approve: ``v``, ``enter`` on the review, the corrected output typed, ``ctrl+s``; one step,
    so approval sends nothing: the clock stops when the instance is completed in the store.

The first round is the first action after warm-up; printed per action: first, p50, max (s).

How to run:

    uv run python bench/tui_actions.py             # 5 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import console, open_runtime, print_table, start_prefect
from common import loopback_catalog as bench_catalog


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="actions of each kind (default 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import bench_workflow
    from textual.widgets import DataTable, TextArea

    from flows.instances import run_workflow
    from storage.models import InstanceStatus
    from tests.flows.helpers import INPUT, VALID
    from tests.servers import OpenAIServer, error, ok
    from tui import actions
    from tui.app import StepLineApp
    from tui.screens.instance import InstanceScreen
    from tui.screens.reviews import ReviewScreen

    workflow = bench_workflow.WORKFLOW
    console.print(f"Prefect API ready in {start_prefect():.1f} s")
    bad = ok({**VALID, "total": "lots"})
    with (
        tempfile.TemporaryDirectory(prefix="stepline-bench-") as tmp,
        OpenAIServer(default=ok(VALID)) as server,
    ):
        url = f"sqlite:///{Path(tmp) / 'stepline.db'}"
        runtime = open_runtime(Path(tmp), bench_catalog(server.base_url), url)
        paused, reviews = [], []
        for _ in range(args.rounds):
            server.enqueue(error(401))
            paused.append(run_workflow(workflow, INPUT, runtime).instance_id)
            server.enqueue(bad, bad, bad)
            result = run_workflow(workflow, INPUT, runtime)
            assert result.status is InstanceStatus.NEEDS_REVIEW, result
            reviews.append(result.instance_id)
        store = runtime.store
        replay_s: list[float] = []
        approve_s: list[float] = []

        def arrived(seen: int) -> bool:
            return len(server.requests) > seen

        def completed(instance_id: str) -> bool:
            found = store.get_instance(instance_id)
            return found is not None and found.status == "completed"

        async def until(condition: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + 60
            while not condition():
                if time.monotonic() > deadline:
                    raise SystemExit(f"no {what} within 60 s (screen: {type(app_screen[0]).__name__})")
                await asyncio.sleep(0.005)

        app_screen: list[object] = [None]

        async def scenario() -> None:
            app = StepLineApp(store, warm=True)
            async with app.run_test(size=(160, 48)) as pilot:
                app_screen[0] = app
                for _ in range(600):
                    warmed = actions.shared_runtime()
                    if warmed is not None and warmed.executor.pool.built(workflow.steps[0].model or ""):
                        break
                    await asyncio.sleep(0.1)
                for instance_id in paused:
                    await pilot.press("r")
                    await app.workers.wait_for_complete()
                    await pilot.pause()
                    table = app.screen.query_one("#instances", DataTable)
                    table.move_cursor(row=table.get_row_index(instance_id))
                    await pilot.press("enter")
                    await pilot.pause()
                    assert isinstance(app.screen, InstanceScreen)
                    seen = len(server.requests)
                    pressed = time.time()
                    await pilot.press("R")
                    await until(functools.partial(arrived, seen), "the replay's request")
                    replay_s.append(server.requests[seen].timestamp - pressed)
                    await app.workers.wait_for_complete()
                    await pilot.press("escape")
                    await pilot.pause()
                for _ in reviews:
                    await pilot.press("v")
                    await pilot.pause()
                    await pilot.press("enter")
                    await pilot.pause()
                    assert isinstance(app.screen, ReviewScreen)
                    instance_id = app.screen.item.instance_id  # the queue's first, whichever it is
                    app.screen.query_one("#editor", TextArea).text = json.dumps(VALID)
                    await pilot.pause()
                    pressed = time.time()
                    await pilot.press("ctrl+s")
                    await until(
                        functools.partial(completed, instance_id), f"instance {instance_id} completed"
                    )
                    approve_s.append(time.time() - pressed)
                    await app.workers.wait_for_complete()
                    await pilot.press("escape")
                    await pilot.pause()

        try:
            asyncio.run(scenario())
        finally:
            actions.shutdown()
            runtime.close()
    rows = [
        [name, values[0], statistics.median(values), max(values)]
        for name, values in (
            ("replay: R to its request", replay_s),
            ("approve: ctrl+s to completed", approve_s),
        )
    ]
    print_table("TUI actions after warm-up (s)", ("action", "first", "p50", "max"), rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
