"""The ``stepline`` command line: the composition root that uses flows, steps, storage (and, later, tui)."""
