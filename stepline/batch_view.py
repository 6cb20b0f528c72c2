"""How a batch run looks in a terminal: a Rich progress bar with outcome counts, then a summary."""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stepline.untrusted import for_terminal

if TYPE_CHECKING:
    from flows.batch import BatchReport, ItemOutcome

__all__ = ["BatchView"]

_SHOWN = ("completed", "needs_review", "paused", "failed", "rejected")
_STYLE = {"completed": "green", "needs_review": "yellow", "paused": "magenta", "skipped": "dim"}


class BatchView:
    """Progress while the batch runs (on stderr), then what happened and what needs a person."""

    def __init__(self, console: Console, workflow: str, total: int) -> None:
        self.workflow = workflow
        self.counts: Counter[str] = Counter()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(workflow, total=total, counts=self._counts_text())

    def __enter__(self) -> BatchView:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        """A line above the progress bar."""
        self.progress.console.print(text, markup=False, highlight=False)

    def advance(self, outcome: ItemOutcome) -> None:
        self.counts[outcome.status] += 1
        self.progress.update(self.task, advance=1, counts=self._counts_text())

    def _counts_text(self) -> str:
        shown = [s for s in _SHOWN if s in ("completed", "needs_review", "paused") or self.counts[s]]
        extra = [s for s in self.counts if s not in _SHOWN]
        return "  ".join(
            f"[{_STYLE.get(status, 'red')}]{status.replace('_', ' ')} {self.counts[status]}[/]"
            for status in [*shown, *extra]
        )

    def summary(self, console: Console, report: BatchReport) -> None:
        counts = report.counts()
        table = Table(title=f"{self.workflow}: {sum(counts.values())} inputs", title_justify="left")
        table.add_column("outcome")
        table.add_column("count", justify="right")
        for status, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"[{_STYLE.get(status, 'red')}]{status}[/]", str(count))
        console.print(table)
        attention = report.needing_attention()
        if attention:
            # Lines, not a table: messages are long, and a wrapped cell is hard to copy or grep.
            console.print(f"needs attention ({len(attention)}):", markup=False)
            for outcome in attention:
                where = f"instance {outcome.instance_id[:12]}" if outcome.instance_id else "no instance"
                if outcome.failed_step:
                    where += f" at {outcome.failed_step}: {outcome.failure_class}"
                # A source names an input file or line, a message may quote the input or the model.
                line = for_terminal(f"  {outcome.status:<12} {outcome.item.source}  ({where})")
                console.print(line, markup=False, highlight=False)
                if outcome.message:
                    message = for_terminal(outcome.message)
                    console.print(f"  {'':<12} {message}", markup=False, highlight=False)
        if report.interrupted:
            console.print(
                "stopped before the end: paused instances resume with `stepline replay <id>`; "
                "run the same command with --new-only to start only the inputs not yet run",
                markup=False,
            )
        console.print(_next_steps(report), markup=False)


def _next_steps(report: BatchReport) -> str:
    attention = report.needing_attention()
    lines = [
        "next:",
        "  stepline tui                     browse, compare failures with their schema, replay",
        "  stepline instances               every instance, newest first",
    ]
    review = next((o.review_id for o in attention if o.review_id), None)
    paused = next((o.instance_id for o in attention if o.status == "paused" and o.instance_id), None)
    if review:
        lines.append(f"  stepline review show {review[:12]:<11} the raw output beside its schema")
    if paused:
        lines.append(f"  stepline replay {paused[:12]:<16} once the cause is fixed")
    shown = [o.instance_id for o in [*attention, *report.outcomes] if o.instance_id]
    if shown:
        lines.append(f"  stepline show {shown[0][:12]:<18} its output, every step run and attempt")
    return "\n".join(lines)
