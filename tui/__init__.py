"""The operator's terminal UI (Textual): browse instances, open a failure, compare it with its schema.

It reads ``storage`` and uses ``steps.diagnose``; nothing in ``steps``,
``storage`` or ``flows`` imports it. Prefect and the provider SDKs stay off
its start-up path.
"""
