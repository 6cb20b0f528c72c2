"""Prefect flows: each workflow is a plain ``@flow`` composing task-wrapped steps.

Import from the submodules (``flows.engine``, ``flows.registry``); this
package's import stays free of Prefect so that tools can list it cheaply.
"""
