"""One attempt: the raw output exactly as received beside the schema it had to match.

Each validation error is highlighted where it sits in the raw text; the
fields tab compares, field by field, what the schema expected with what came
back; text that is not JSON is marked from where parsing stopped.
"""

from __future__ import annotations

import json
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane, Tabs

from steps.diagnose import Diagnosis, FieldDiff, FieldStatus, diagnose, value_at
from storage.models import Attempt
from storage.store import Store
from tui.editor import edit_or_say
from tui.fold import FOLD_BINDING, Fold
from tui.literal import literal
from tui.screens.error import guarded

__all__ = ["AttemptScreen"]

_ERROR = "bold white on dark_red"
_STOPPED = "bold white on dark_orange3"
_STATUS_STYLE = {
    FieldStatus.OK: "green",
    FieldStatus.MISSING: "red",
    FieldStatus.EXTRA: "yellow",
    FieldStatus.WRONG_TYPE: "red",
    FieldStatus.CONSTRAINT: "magenta",
}


class AttemptScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="back", tooltip="Back to the instance"),
        Binding("1", "tab('raw')", "Raw", id="tab-raw", tooltip="The raw output beside the schema"),
        Binding(
            "2", "tab('fields')", "Fields", id="tab-fields", tooltip="Field by field: expected, returned"
        ),
        Binding("3", "tab('request')", "Request", id="tab-request", tooltip="The request as sent"),
        Binding(
            "e",
            "external_view",
            "Editor",
            id="editor",
            tooltip="Open what this tab shows in $VISUAL / $EDITOR (a copy: the record is not changed)",
            show=False,
        ),
        Binding(
            "y",
            "copy",
            "Copy",
            id="copy",
            tooltip="Copy the raw output (Request tab: the request; Fields: the selected field's value)",
            show=False,
        ),
        Binding(
            "left_square_bracket",
            "neighbour(-1)",
            "Previous attempt",
            id="previous-attempt",
            tooltip="The instance's attempt before this one",
            show=False,
        ),
        Binding(
            "right_square_bracket",
            "neighbour(1)",
            "Next attempt",
            id="next-attempt",
            tooltip="The instance's attempt after this one",
            show=False,
        ),
        FOLD_BINDING,
    ]

    def __init__(self, store: Store, instance_id: str, attempt_id: str) -> None:
        super().__init__()
        self.store = store
        self.instance_id = instance_id
        self.attempt_id = attempt_id
        # Read here, not in compose: a failed read is then the opening key's failure, shown in
        # its modal, instead of an exception in compose that would end the app.
        self.attempt: Attempt | None = self._attempt()
        self.schema = store.schema(self.attempt.schema_hash) if self.attempt else None
        self.found: Diagnosis = diagnose(None, None, None)
        self.shown_fields: list[FieldDiff] = []
        """The fields tab's rows, in order."""

    def _attempt(self) -> Attempt | None:
        detail = self.store.instance_detail(self.instance_id)
        return next((a for a in detail.attempts if a.id == self.attempt_id), None) if detail else None

    def compose(self) -> ComposeResult:
        attempt, schema = self.attempt, self.schema
        found = self.found = diagnose(
            attempt.raw_output if attempt else None,
            schema,
            attempt.validation_errors if attempt else None,
        )
        # A request the provider refused (429, 5xx, a reset) has no answer to hold against the
        # schema: say what the provider said, and show the error body it sent.
        unanswered = (
            attempt is not None
            and attempt.failure_class is not None
            and not (attempt.raw_output or "").strip()
        )
        yield Header()
        yield Fold(self._summary(attempt), lines=2, id="summary")
        yield Static(self._unanswered(attempt) if unanswered else self._verdict(found), id="verdict")
        with TabbedContent(initial="raw"):
            with TabPane("Raw vs schema", id="raw"), Horizontal():
                with VerticalScroll(classes="pane", id="raw-pane", can_maximize=True) as raw_pane:
                    raw_pane.border_title = (
                        "error body, as received" if unanswered else "raw output, as received"
                    )
                    body = self._error_body(attempt) if unanswered else self._raw(attempt, found)
                    yield Static(body, id="raw-output")
                with VerticalScroll(classes="pane", id="schema-pane", can_maximize=True) as schema_pane:
                    schema_pane.border_title = "expected schema"
                    yield Static(literal(json.dumps(schema, indent=2) if schema else "(none)"), id="schema")
            with TabPane("Fields", id="fields"):
                yield Static(id="fields-empty")
                yield DataTable(id="field-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Request", id="request"), VerticalScroll():
                yield Static(self._request(attempt), id="request-text")
        yield Footer()

    def on_mount(self) -> None:
        found = self.found
        table = self.query_one("#field-table", DataTable)
        table.add_columns("field", "verdict", "schema expects", "model returned", "error")
        empty = self.query_one("#fields-empty", Static)
        empty.display = not found.fields
        table.display = bool(found.fields)
        if not found.fields:
            empty.update(self._no_fields(self.attempt, found))
        self.shown_fields = sorted(found.fields, key=lambda f: f.status is FieldStatus.OK)
        for field in self.shown_fields:
            table.add_row(
                literal(field.path),
                Text(field.status.value, style=_STATUS_STYLE[field.status]),
                literal(field.expected),
                literal(field.got),
                literal(field.message or ""),
            )

    def action_tab(self, tab: str) -> None:
        tabbed = self.query_one(TabbedContent)
        # Focus off the pane being hidden first: Textual would move it to the next widget of
        # that pane, and TabbedContent would switch back to it (2 did nothing from a pane).
        tabbed.query_one(Tabs).focus()
        tabbed.active = tab

    def action_toggle_fold(self) -> None:
        self.query_one("#summary", Fold).toggle()

    @guarded("the editor did not run")
    def action_external_view(self) -> None:
        """The raw output (or the request) in the operator's editor, to search or save it."""
        attempt = self.attempt
        if attempt is None:
            return
        if self.query_one(TabbedContent).active == "request":
            text, suffix = json.dumps(attempt.request_messages, indent=2, ensure_ascii=False), ".json"
        else:
            text, suffix = attempt.raw_output or attempt.raw_response or "", ".txt"
        edit_or_say(self.app, text, suffix=suffix)

    @guarded("nothing was copied")
    def action_copy(self) -> None:
        """Copy what the tab shows through Textual's clipboard support (the terminal's OSC 52
        sequence: over SSH it reaches the operator's own clipboard if the terminal accepts it)."""
        attempt = self.attempt
        if attempt is None:
            self.notify("this attempt is gone: nothing to copy")
            return
        tab = self.query_one(TabbedContent).active
        if tab == "request":
            text, what = json.dumps(attempt.request_messages, indent=2, ensure_ascii=False), "the request"
        elif tab == "fields":
            table = self.query_one("#field-table", DataTable)
            if not self.shown_fields or table.cursor_row < 0:
                self.notify("no field to copy")
                return
            field = self.shown_fields[min(table.cursor_row, len(self.shown_fields) - 1)]
            text, what = _value_at(attempt.raw_output, field.path, field.got), field.path
        else:
            text, what = attempt.raw_output or "", "the raw output"
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {what} ({len(text):,} characters)")

    @guarded("the attempts could not be read")
    def action_neighbour(self, step: int) -> None:
        """Show the instance's previous (-1) or next (1) attempt in this screen's place, on the
        same tab, in the order the instance screen lists them."""
        detail = self.store.instance_detail(self.instance_id)
        ids = [a.id for a in detail.attempts] if detail else []
        here = ids.index(self.attempt_id) if self.attempt_id in ids else -1
        there = here + step
        if here < 0 or not 0 <= there < len(ids):
            self.notify("no attempt before this one" if step < 0 else "no attempt after this one")
            return
        tab = self.query_one(TabbedContent).active
        following = AttemptScreen(self.store, self.instance_id, ids[there])
        self.app.switch_screen(following)
        following.call_after_refresh(following.action_tab, tab)

    @staticmethod
    def _summary(attempt: Attempt | None) -> Text:
        """Most telling line first: folded, the first two are what shows."""
        if attempt is None:
            return Text("this attempt is gone")
        head = Text()
        head.append(f"{attempt.step} attempt {attempt.attempt_number} on {attempt.model_id}  ", style="bold")
        head.append(attempt.outcome, style="green" if attempt.outcome == "ok" else "red")
        head.append(
            f"  {attempt.tokens_in or 0}/{attempt.tokens_out or 0} tokens  ${attempt.cost_usd or 0:.6f}"
            f"  {attempt.latency_ms or 0:.0f} ms"
        )
        lines = [head]
        if attempt.error_message:
            lines.append(Text("error: ") + literal(attempt.error_message[:2000]))
        if attempt.routing_reason:
            lines.append(Text("routing: ") + literal(attempt.routing_reason))
        cleared = (attempt.pii or {}).get("declassified") or {}
        if cleared:  # which fields carried text cleared for a public model, and by what
            lines.append(Text("cleared: ") + literal("; ".join(f"${k} by {v}" for k, v in cleared.items())))
        lines.append(Text(f"sampling {json.dumps(attempt.sampling)}"))
        return Text("\n").join(lines)

    @staticmethod
    def _verdict(found: Diagnosis) -> Text:
        if not found.parsed and found.parse_error:
            stop = found.stopped_at
            where = f"; parsing stopped at character {stop.start} of {stop.end}" if stop else ""
            return Text(f"{found.parse_error}{where} (marked in the raw output)")
        problems = found.problems
        if not problems and not found.errors:
            return Text("valid against the schema")
        counts: dict[str, int] = {}
        for problem in problems:
            counts[problem.status.value] = counts.get(problem.status.value, 0) + 1
        listed = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in counts.items())
        return Text(f"{len(found.errors)} validation errors ({listed}); highlighted in the raw output")

    @staticmethod
    def _raw(attempt: Attempt | None, found: Diagnosis) -> Text:
        if attempt is None or attempt.raw_output is None:
            return Text("(no output: the request failed before the model answered)", style="dim")
        spans = [(e.span.start, e.span.end, _ERROR) for e in found.errors if e.span is not None]
        if found.stopped_at is not None:
            spans.append(
                (found.stopped_at.start, max(found.stopped_at.end, found.stopped_at.start + 1), _STOPPED)
            )
        text = literal(attempt.raw_output, spans)
        if found.errors:
            text.append("\n\nerrors:\n", style="bold")
            for error in found.errors:
                text.append_text(literal(f"  {error.path}: {error.message}\n"))
        return text

    @staticmethod
    def _no_fields(attempt: Attempt | None, found: Diagnosis) -> Text:
        """Why the fields tab has no rows, and where to look instead."""
        if attempt is None:
            return Text("this attempt is gone")
        if not (attempt.raw_output or "").strip():
            return Text("no fields: the provider sent no answer (tab 1 shows what it said)")
        if not found.parsed:
            return Text("no fields: the answer is not JSON (tab 1 marks where parsing stopped)")
        if attempt.schema_hash is None:
            return Text("no fields: no schema was stored for this attempt")
        return Text("no fields to compare: the answer holds no field the schema names (see tab 1)")

    @staticmethod
    def _unanswered(attempt: Attempt | None) -> Text:
        assert attempt is not None
        said = (attempt.error_message or "").strip() or "no message"
        return literal(f"no answer to check against the schema: {attempt.failure_class}: {said[:300]}")

    @staticmethod
    def _error_body(attempt: Attempt | None) -> Text:
        if attempt is None or not (attempt.raw_response or "").strip():
            return Text("(no body: the connection failed before the provider answered)", style="dim")
        return literal(attempt.raw_response or "")

    @staticmethod
    def _request(attempt: Attempt | None) -> Text:
        if attempt is None:
            return Text()
        return literal(json.dumps(attempt.request_messages, indent=2, ensure_ascii=False))


def _value_at(raw: str | None, path: str, shown: str) -> str:
    """The JSON value at ``path`` in the raw output, whole (a string as it is); ``shown`` (the
    fields tab's shortened text) when the output is not JSON or has no such field."""
    try:
        value = value_at(json.loads(raw or ""), path)
    except (ValueError, KeyError):
        return shown
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
