"""Prompts: every step's versions, and an editor that saves a new version after showing the diff.

The steps list also shows each step's latest consistency probe (``stepline consistency``): a
column with its verdict, and a pane with the highlighted step's newest probes field by field.
"""

from __future__ import annotations

import difflib
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static, TextArea

from steps.consistency import FieldAgreement, FieldKind, judged
from storage.models import ConsistencyRun, PromptVersion, as_utc
from storage.store import Store
from tui import actions
from tui.editor import edit_or_say
from tui.literal import literal
from tui.screens.error import ActionFailed, guarded
from tui.tables import refill, refresh_while_shown

__all__ = ["PromptScreen", "PromptsScreen"]


class PromptsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "app.pop_screen", "Back", id="back", tooltip="Back to the instances"),
        Binding("R", "replay_step", "Replay failures", id="replay-step", tooltip="Replay all stopped here"),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the prompt versions again", show=False),
    ]

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "No prompts yet. A step's prompt from code is recorded as its first version when the "
            "step first runs (`stepline run`, a batch or a schedule); then it can be edited here.",
            id="prompts-empty",
            classes="empty",
            markup=False,
        )
        yield DataTable(id="steps", cursor_type="row", zebra_stripes=True)
        with Vertical(id="consistency-pane", classes="pane") as pane:
            pane.border_title = "consistency"
            yield Static(id="consistency-empty", classes="empty", markup=False)
            yield DataTable(id="consistency", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#steps", DataTable)
        table.add_columns("step", "versions", "in use", "newest (UTC)", "consistency")
        probes = self.query_one("#consistency", DataTable)
        probes.add_columns("when (UTC)", "t", "field", "agreement", "verdict")
        self.action_reload()
        table.focus()
        refresh_while_shown(self, self.action_reload)

    def on_screen_resume(self) -> None:
        self.action_reload()  # a version saved in the step's screen counts at once

    @guarded("the prompts could not be read")
    def action_reload(self) -> None:
        versions: dict[str, list[PromptVersion]] = {}
        for version in self.store.prompt_versions():
            versions.setdefault(version.step, []).append(version)
        probes = self.store.latest_consistency()
        rows = [
            (
                step,
                (
                    literal(step),
                    str(len(found)),
                    "chosen in the TUI" if self.store.current_prompt(step, fresh=True) else "from code",
                    found[0].created_at.strftime("%Y-%m-%d %H:%M"),
                    _verdict(probes[step]) if step in probes else Text("not probed", style="dim"),
                ),
            )
            for step, found in sorted(versions.items())
        ]
        table = self.query_one("#steps", DataTable)
        refill(table, rows)
        self.query_one("#prompts-empty", Static).display = not rows
        self._show_consistency(self._step_at_cursor())

    def _step_at_cursor(self) -> str | None:
        table = self.query_one("#steps", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    @on(DataTable.RowHighlighted, "#steps")
    @guarded("the consistency probes could not be read")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_consistency(None if event.row_key.value is None else str(event.row_key.value))

    def _show_consistency(self, step: str | None) -> None:
        """The step's newest probes, field by field at each temperature sampled."""
        pane = self.query_one("#consistency-pane", Vertical)
        table = self.query_one("#consistency", DataTable)
        empty = self.query_one("#consistency-empty", Static)
        pane.display = step is not None
        if step is None:
            return
        pane.border_title = f"consistency: {step}"
        probes = self.store.consistency_runs(step, limit=_PROBES_SHOWN)
        table.clear()
        for probe in probes:
            for row in _probe_rows(probe):
                table.add_row(*row)
        table.display = bool(probes)
        empty.display = not probes
        empty.update(
            f"Not probed yet. `stepline consistency <workflow> {step} --input F --samples 10` runs "
            "it 10 times on one input and shows how often its answers agree."
        )

    @guarded("the replays did not start")
    def action_replay_step(self) -> None:
        from tui.screens.confirm import Confirm
        from tui.screens.replays import ReplayScreen

        table = self.query_one("#steps", DataTable)
        if not table.row_count:
            return
        step = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        stopped = len(self.store.stopped_at_step(step))
        if not stopped:
            self.notify(f"no instance is stopped at {step}")
            return

        def start(yes: bool | None) -> None:
            if yes:
                self.app.push_screen(ReplayScreen(step, stopped))

        self.app.push_screen(
            Confirm(
                f"Replay the {stopped} instance(s) stopped at {step}? Each runs again from that step "
                "with the step's current prompt; x stops the replays between two instances."
            ),
            start,
        )

    @on(DataTable.RowSelected, "#steps")
    @guarded("the prompt could not be opened")
    def _open(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(PromptScreen(self.store, event.row_key.value))


_PROBES_SHOWN = 3
"""The newest probes the pane shows (each a few rows: one per field and temperature)."""


def _verdict(probe: ConsistencyRun) -> Text:
    """``0.80 low``: the least agreeing judged field, against the step's threshold."""
    fields = [FieldAgreement.from_json(path, data) for path, data in (probe.agreement or {}).items()]
    lowest = min((f.agreement for f in judged(fields)), default=0.0)
    ok = probe.verdict == "consistent"
    return Text(f"{lowest:.2f} {'ok' if ok else 'low'}", style="green" if ok else "red")


def _probe_rows(probe: ConsistencyRun) -> list[tuple[str | Text, ...]]:
    when = as_utc(probe.created_at).strftime("%m-%d %H:%M")
    rows: list[tuple[str | Text, ...]] = []
    for temperature, agreement, verdict in (
        (probe.temperature, probe.agreement, probe.verdict),
        (probe.compare_temperature, probe.compare_agreement, probe.compare_verdict),
    ):
        if agreement is None or verdict is None:
            continue
        judgement = Text(verdict, style="green" if verdict == "consistent" else "red")
        for path, data in agreement.items():
            found = FieldAgreement.from_json(path, data)
            share = (
                f"{found.distinct} distinct"
                if found.kind is FieldKind.TEXT
                else f"{found.agreement:.2f} ({round(found.agreement * probe.samples)}/{probe.samples})"
            )
            rows.append(
                (
                    when,
                    "?" if temperature is None else f"{temperature:g}",
                    literal(path),
                    share,
                    judgement if found.kind is not FieldKind.TEXT else Text("not judged", "dim"),
                )
            )
    return rows


class PromptScreen(Screen[None]):
    """Both parts of a step's prompt, editable, beside its versions, with the diff against the
    prompt in use; saving checks it as a prompt in code is checked."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape", "app.pop_screen", "Back", id="back", tooltip="Back to the steps; the edit is dropped"
        ),
        Binding("ctrl+s", "save", "Save version", id="save", tooltip="Save the edit as the step's prompt"),
        # ctrl+o, not e: a text area has the focus, and e is a letter in it.
        Binding(
            "ctrl+o",
            "external_edit",
            "Editor",
            id="editor",
            tooltip="Edit the focused text (system or user template) in $VISUAL / $EDITOR",
        ),
    ]

    def __init__(self, store: Store, step: str) -> None:
        super().__init__()
        self.store = store
        self.step = step
        self.versions = list(store.prompt_versions(step))
        self.base = store.current_prompt(step, fresh=True) or self.versions[0]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="prompt-edit"):
            with Vertical(id="prompt-texts"):
                system = TextArea(self.base.system, id="system", classes="pane")
                system.border_title = f"{self.step}: system prompt"
                yield system
                template = TextArea(self.base.template, id="template", classes="pane")
                template.border_title = "user template ($field placeholders)"
                yield template
                yield Input(placeholder="note: why this change", id="note")
            with Vertical(classes="pane", id="history") as history:
                history.border_title = "versions (* in use)"
                yield DataTable(id="versions", cursor_type="row")
                with VerticalScroll(id="version-pane"):
                    yield Static(id="version-text")
        with VerticalScroll(id="diff-pane", classes="pane", can_maximize=True) as diff:
            diff.border_title = "diff against the prompt in use"
            yield Static(id="diff")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#versions", DataTable)
        table.add_columns("created (UTC)", "author", "note")
        for version in self.versions:
            marker = " *" if version.id == self.base.id else ""
            table.add_row(
                version.created_at.strftime("%m-%d %H:%M") + marker,
                literal(version.author),
                literal(version.note or ""),
                key=version.id,
            )
        self._version_text(self.versions[0])  # the cursor's row, before its event arrives
        self._show_diff()
        self.query_one("#template", TextArea).focus()

    def _edited(self) -> tuple[str, str]:
        return self.query_one("#system", TextArea).text, self.query_one("#template", TextArea).text

    @on(DataTable.RowHighlighted, "#versions")
    def _show_version(self, event: DataTable.RowHighlighted) -> None:
        version = next((v for v in self.versions if v.id == event.row_key.value), None)
        if version is not None:
            self._version_text(version)

    def _version_text(self, version: PromptVersion) -> None:
        text = Text("system\n", style="bold") + literal(version.system)
        text += Text("\nuser\n", style="bold") + literal(version.template)
        self.query_one("#version-text", Static).update(text)

    @on(TextArea.Changed)
    def _show_diff(self) -> None:
        system, template = self._edited()
        text = Text()
        for part, before, after in (
            ("system", self.base.system, system),
            ("user", self.base.template, template),
        ):
            lines = difflib.unified_diff(
                before.splitlines(), after.splitlines(), f"{part} in use", f"{part} edited", lineterm=""
            )
            for line in lines:
                style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
                text.append_text(literal(line + "\n", style=style))
        self.query_one("#diff", Static).update(text or Text("no change yet", style="dim"))

    def action_external_edit(self) -> None:
        """The focused text (the user template unless the system prompt has the focus)."""
        focused = self.focused
        area = focused if isinstance(focused, TextArea) else self.query_one("#template", TextArea)
        edited = edit_or_say(self.app, area.text)
        if edited is not None:
            area.text = edited

    @guarded("the prompt was not saved")
    def action_save(self) -> None:
        system, template = self._edited()
        if (system, template) == (self.base.system, self.base.template):
            self.notify("no change to save")
            return
        note = self.query_one("#note", Input).value.strip() or None
        self._save(system, template, actions.operator(), note)

    @work(thread=True, exclusive=True, group="save", exit_on_error=False)
    def _save(self, system: str, template: str, author: str, note: str | None) -> None:
        outcome = actions.save_prompt(self.step, system, template, author, note)
        self.app.call_from_thread(self._saved, outcome)

    def _saved(self, outcome: actions.Outcome) -> None:
        if outcome.ok:
            self.notify(outcome.message, timeout=8)
            self.app.pop_screen()
        else:
            self.app.push_screen(ActionFailed("the prompt was not saved", outcome.message, outcome.action))
