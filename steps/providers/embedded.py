"""An in-process llama.cpp model (llama-cpp-python) behind an OpenAI-shaped ``create``.

Written by hand because Instructor has no llama-cpp-python provider. Its answers are OpenAI
``ChatCompletion`` objects, so the readers are ``steps.providers.openai``'s. It maps no exception
of its own: llama.cpp raises plain ``ValueError``/``RuntimeError`` (context overflow, a bad
grammar), which stay ``unknown``, as they were.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from steps.errors import ConfigError, FailureClass
from steps.providers import openai as openai_vendor
from steps.providers.base import FailureRow, check_write_ahead, record_body
from steps.settings import ModelConfig, ProviderConfig, ProviderKind, StructuredMode, default_gguf_path

if TYPE_CHECKING:
    import instructor

__all__ = ["VENDOR", "EmbeddedVendor"]

_GRAMMAR_MAX_LENGTH = 512


class EmbeddedVendor(openai_vendor.OpenAIShaped):
    """llama.cpp in this process: grammar-constrained JSON, calls serialised per model."""

    kind: ClassVar[ProviderKind] = ProviderKind.EMBEDDED
    failures: ClassVar[tuple[FailureRow, ...]] = ()
    error_types: ClassVar[Mapping[str, FailureClass]] = {}
    sdk_modules: ClassVar[tuple[str, ...]] = ()

    def modes(self) -> Mapping[StructuredMode, instructor.Mode]:
        from instructor import Mode

        # llama.cpp decodes under a grammar built from the JSON schema.
        return {StructuredMode.JSON_SCHEMA: Mode.JSON_SCHEMA}

    def build(
        self, config: ModelConfig, provider: ProviderConfig, closers: list[Callable[[], None]]
    ) -> instructor.Instructor:
        import instructor

        mode = self.modes()[config.structured_mode]
        create = _llama_create(config, closers)
        return instructor.Instructor(
            client=None, create=instructor.patch(create=create, mode=mode), mode=mode
        )


def _grammar_safe(schema: Any) -> Any:
    """The schema with string ``maxLength`` capped for llama.cpp's grammar compiler.

    llama.cpp expands ``{0,n}`` into n nested rules and, past a few hundred,
    rejects the grammar and crashes the process (SIGSEGV with llama-cpp-python
    0.3.36). Capping only narrows what the model may write; Pydantic still
    validates the output against the real schema.
    """
    if isinstance(schema, dict):
        safe = {key: _grammar_safe(value) for key, value in schema.items()}
        if isinstance(safe.get("maxLength"), int) and safe["maxLength"] > _GRAMMAR_MAX_LENGTH:
            safe["maxLength"] = _GRAMMAR_MAX_LENGTH
        return safe
    if isinstance(schema, list):
        return [_grammar_safe(item) for item in schema]
    return schema


def _llama_create(config: ModelConfig, closers: list[Callable[[], None]]) -> Callable[..., Any]:
    """An OpenAI-shaped ``create`` over an in-process llama.cpp model.

    It translates the OpenAI ``response_format`` Instructor sends into llama.cpp's
    ``json_object`` + ``schema`` (grammar-constrained decoding) and returns an OpenAI
    ``ChatCompletion``. llama.cpp contexts are not thread-safe, so calls are serialised by a lock.
    """
    from llama_cpp import Llama
    from openai.types.chat import ChatCompletion

    path = config.gguf_path or default_gguf_path()
    if not path.is_file():
        raise ConfigError(f"embedded model file {path} does not exist; fix gguf_path in the catalog")
    llama = Llama(
        model_path=str(path),
        n_ctx=config.context_window,
        n_threads=max(1, os.cpu_count() or 1),
        verbose=False,
    )
    lock = threading.Lock()
    closers.append(llama.close)

    def create(**kwargs: Any) -> ChatCompletion:
        check_write_ahead(None)  # never leaves the process: nothing for the pii guard to read
        response_format = kwargs.pop("response_format", None)
        if response_format and response_format.get("type") == "json_schema":
            schema = _grammar_safe(response_format["json_schema"]["schema"])
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        kwargs.pop("model", None)
        kwargs.pop("timeout", None)
        with lock:
            result = llama.create_chat_completion(**kwargs)
        completion = ChatCompletion.model_validate(result)
        record_body(json.dumps(result, ensure_ascii=False).encode())
        return completion

    return create


VENDOR = EmbeddedVendor()
