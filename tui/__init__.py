"""The operator's terminal UI (Textual). Not built yet: see issue 6.

It will read ``storage`` and trigger replays through ``flows``; nothing in
``steps``, ``storage`` or ``flows`` may import it.
"""
