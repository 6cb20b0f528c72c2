"""Prompt versions: every prompt text a step was run with, and the one an operator chose."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.base import StoreBase, insert_rows
from storage.models import PromptCurrent, PromptVersion, utcnow

__all__ = ["PromptStore"]


class PromptStore(StoreBase):
    """Prompt versions, cached: each step run asks for its prompt's version id."""

    CURRENT_PROMPT_TTL_S = 1.0
    """How long a step's chosen prompt is reused before it is read again (it is read per step run)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._prompt_ids: dict[tuple[str, str], str] = {}
        self._current: dict[str, tuple[float, PromptVersion | None]] = {}
        self._prompt_lock = threading.Lock()

    def prompt_version(self, step: str, system: str, template: str, content_hash: str, author: str) -> str:
        """The id of the version with this hash, creating it on first use."""
        key = (step, content_hash)
        cached = self._prompt_ids.get(key)
        if cached is not None:
            return cached
        with self._prompt_lock:
            found = self._find_prompt(step, content_hash)
            if found is None:
                version = PromptVersion(
                    step=step, content_hash=content_hash, system=system, template=template, author=author
                )
                found = self._run(
                    "recording a prompt version", lambda session: self._add_version(session, version)
                )
            self._prompt_ids[key] = found
        return found

    def _add_version(self, session: Session, version: PromptVersion) -> str:
        try:
            insert_rows(session, version)
            session.commit()
        except IntegrityError:  # another process (or an earlier, unacknowledged try) created it
            session.rollback()
            found = self._find_in(session, version.step, version.content_hash)
            assert found is not None
            return found
        return version.id

    def prompt_versions(self, step: str | None = None) -> Sequence[PromptVersion]:
        query = select(PromptVersion).order_by(col(PromptVersion.created_at).desc())
        if step:
            query = query.where(PromptVersion.step == step)
        return self._run("reading prompt versions", lambda session: list(session.exec(query).all()))

    def set_current_prompt(
        self, step: str, system: str, template: str, content_hash: str, author: str, note: str | None
    ) -> str:
        """Make this text the step's prompt from now on (a new version if the text is new)."""
        version_id = self.prompt_version(step, system, template, content_hash, author)

        def work(session: Session) -> str:
            version = session.get(PromptVersion, version_id)
            if version is not None and note and not version.note:
                version.note = note
                session.add(version)
            current = session.get(PromptCurrent, step) or PromptCurrent(
                step=step, prompt_version_id=version_id, set_by=author
            )
            current.prompt_version_id = version_id
            current.set_by = author
            current.set_at = utcnow()
            session.add(current)
            session.commit()
            return version_id

        self._run("choosing a prompt", work)
        self._current.pop(step, None)
        return version_id

    def current_prompt(self, step: str, *, fresh: bool = False) -> PromptVersion | None:
        """The version an operator chose for ``step``, if any.

        Read at most once a second per step: a choice made here applies at once,
        one made in another process from its next step run a second later.
        ``fresh`` reads it now (a screen shows what is stored, not what a step used).
        """
        now = time.monotonic()
        cached = self._current.get(step)
        if not fresh and cached is not None and now - cached[0] < self.CURRENT_PROMPT_TTL_S:
            return cached[1]

        def work(session: Session) -> PromptVersion | None:
            current = session.get(PromptCurrent, step)
            return session.get(PromptVersion, current.prompt_version_id) if current else None

        found = self._run("reading the chosen prompt", work)
        self._current[step] = (now, found)
        return found

    def _find_prompt(self, step: str, content_hash: str) -> str | None:
        return self._run(
            "reading prompt versions", lambda session: self._find_in(session, step, content_hash)
        )

    @staticmethod
    def _find_in(session: Session, step: str, content_hash: str) -> str | None:
        return session.exec(
            select(PromptVersion.id).where(
                PromptVersion.step == step, PromptVersion.content_hash == content_hash
            )
        ).first()
