"""Telling an instance's owner that it paused or needs review, through Apprise.

Every message is persisted with its delivery result. Delivery problems are
recorded, never raised: a notification must not fail the instance it is about.
"""

from __future__ import annotations

import hashlib
import os
from string import Template

from steps.settings import NotifyConfig
from storage.models import Notification
from storage.store import Fence, Store

__all__ = ["notify_owner"]


def _target_label(url: str) -> str:
    """The scheme and a short hash: any other part of an Apprise URL may be a token."""
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"{scheme}://#{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def notify_owner(
    store: Store,
    config: NotifyConfig,
    *,
    instance_id: str,
    owner: str,
    event: str,
    title: str,
    body: str,
    fence: Fence | None = None,
) -> list[Notification]:
    """Send ``title``/``body`` to every target for ``owner``; one persisted row per target.

    ``fence`` is the token of the worker sending it: a worker that lost the
    instance sends nothing (``LeaseLost``), and its records are fenced.
    """
    targets = config.targets_for(owner)
    if not targets:
        return []
    import apprise

    if fence is not None:
        store.check_lease(fence)
    sent = []
    for raw_url in targets:
        url = Template(raw_url).safe_substitute(os.environ)
        row = Notification(
            instance_id=instance_id, event=event, target=_target_label(raw_url), title=title, body=body
        )
        try:
            target = apprise.Apprise()
            if not target.add(url):
                row.error = "not a valid Apprise URL (check the scheme and its arguments)"
            else:
                row.delivered = bool(target.notify(title=title, body=body))
                if not row.delivered:
                    row.error = "the target did not accept the message"
        except Exception as exc:
            row.error = f"{type(exc).__name__}: {exc}"[:1000]
        store.add_notification(row, fence)
        sent.append(row)
    return sent
