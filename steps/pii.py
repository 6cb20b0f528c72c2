"""The second line: each public request's exact bytes, checked for the instance's own personal values.

Privacy follows from structure (``steps.privacy``): a step whose prompt renders anything that
may be personal runs on private models only. This guard is defence in depth for what structure
cannot see: a declassifier that let a value through, text a clean step wrote that happens to be
a value of this instance. It holds the personal values of one instance, and nothing else (no
list of words that look like names, no model's judgement):

- each value of an input field marked ``Personal`` and of a personal step output, whole when it
  is short, and each word of it when it is as short as a name, an address or an id (never the
  words of a sentence: they are the language itself);
- in any of them, however long, what has a shape of its own: e-mail addresses, handles, web
  addresses, and runs of 4 or more digits.

Both sides are normalised before they are compared: Unicode NFKC (full-width digits and
letters), case-folded, any whitespace (no-break and narrow spaces included) as one space, one
apostrophe, and digits spelled out in words (English, German, French, Spanish, Italian,
Portuguese, Dutch, Polish, Japanese) read as digits. Digit runs are compared without their
separators: one inside another (the last four digits of a card) or ending in the same 7 digits
(a phone written nationally and internationally) is the same number. Kana, CJK ideographs and
Hangul, written without spaces, are compared as runs rather than words.

It never matches text that every instance's request carries for that step: the system prompt,
the template, the output schema, the option values of the fields it renders, the provider's
model name, and the words of the wire format (roles, keys such as ``text``). Nor does it match
inside a rendered field whose type cannot carry free text (a Literal, a bounded number, a
``Code``): the analysis cleared that by type and the engine validated it, so an order number
quoted in the customer's message is not a finding where a ``Code`` field renders it. What it
checks is the text that was cleared by declaration: ``Declassified`` fields, and anything the
request carries that no step rendered.

A finding stops the request unsent (``pii_blocked``). The record names the step, each value's
kind, the field it came from, and the rendered field (or the place in the request) it was found
in: never the value.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from string import Template
from typing import Any

from pydantic import BaseModel

from steps.definition import Prompt

__all__ = ["Constants", "Leak", "PiiGuard", "Rendered", "normalise"]

_WHOLE_MAX = 200
"""Longer values (a whole message) are not matched whole: only their shaped parts (e-mails,
digit runs...) are."""
_WORDS_MAX = (6, 60)
"""A value is matched word by word (a first name alone, a street) only when it is as short as a
name, an address or an id: at most 6 words and 60 characters. The words of a sentence are the
language itself ("please", "invoice"), never the instance's own."""

_DIGIT_WORDS = {
    **dict.fromkeys(["zero", "oh", "null", "nul", "zéro", "cero"], "0"),
    **dict.fromkeys(["one", "eins", "un", "une", "uno", "una", "um", "uma", "een", "jeden", "jedna"], "1"),
    **dict.fromkeys(["two", "zwei", "deux", "dos", "due", "dois", "duas", "twee", "dwa", "dwie"], "2"),
    **dict.fromkeys(["three", "drei", "trois", "tres", "tre", "três", "drie", "trzy"], "3"),
    **dict.fromkeys(["four", "vier", "quatre", "cuatro", "quattro", "quatro", "cztery"], "4"),
    **dict.fromkeys(["five", "fünf", "cinq", "cinco", "cinque", "vijf", "pięć"], "5"),
    **dict.fromkeys(["six", "sechs", "seis", "sei", "zes", "sześć"], "6"),
    **dict.fromkeys(["seven", "sieben", "sept", "siete", "sette", "sete", "zeven", "siedem"], "7"),
    **dict.fromkeys(["eight", "acht", "huit", "ocho", "otto", "oito", "osiem"], "8"),
    **dict.fromkeys(["nine", "neun", "neuf", "nueve", "nove", "negen", "dziewięć"], "9"),
}
_KANJI_DIGITS = str.maketrans("〇零一二三四五六七八九’‘ʼ`´", "00123456789'''''")
"""Kanji digits as digits, and every apostrophe as one (O’Connor is O'Connor)."""
_DIGIT_WORD = re.compile(r"(?<!\w)(" + "|".join(sorted(_DIGIT_WORDS, key=len, reverse=True)) + r")(?!\w)")
_SPACES = re.compile(r"\s+")
_CJK_CLASS = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
_CJK = re.compile(_CJK_CLASS)
_CJK_RUN = re.compile(f"{_CJK_CLASS}+")
"""Kana, CJK ideographs and Hangul: no spaces between words, so compared as runs, not words."""
_LETTER = rf"(?:(?!{_CJK_CLASS})[^\W\d_])"
_WORD = re.compile(rf"{_LETTER}+(?:'{_LETTER}+)*")
"""A word of a script written with spaces; a CJK run beside it (``メールhiroshi``) is not part of it."""
_WORD_CHAR = rf"(?:(?!{_CJK_CLASS})\w)"
_DIGIT_RUN = re.compile(r"\d(?:[ .\-/()]*\d)*")
_SHAPES = (  # ASCII classes, so that text of another script written against them stays out
    ("e-mail", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")),
    ("web address", re.compile(r"(?:https?://|www\.)[A-Za-z0-9._~:/?#@!$&*+,;=%-]+")),
    ("handle", re.compile(r"(?<![A-Za-z0-9_@])@[A-Za-z0-9_.]{2,}")),
)
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_ ]*\]")
_WIRE_WORDS = frozenset(
    """system user assistant developer tool tools function functions text content type role
    object string integer number boolean array null auto any required properties items enum
    description title json json_schema json_object tool_use tool_result input_schema schema
    parameters name strict additionalproperties anyof allof oneof default format pattern ref
    defs minlength maxlength minimum maximum const true false""".split()  # noqa: SIM905 (a word list)
)
"""Words of the chat-completions and messages wire formats and of JSON schemas."""


def normalise(text: str) -> str:
    """Text as the guard compares it: NFKC, case-folded, one kind of space and of apostrophe,
    digits as digits."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_KANJI_DIGITS)
    text = _SPACES.sub(" ", text).strip()
    return _DIGIT_WORD.sub(lambda m: _DIGIT_WORDS[m.group(1)], text)


def _digits(run: str) -> str:
    return re.sub(r"\D", "", run)


@dataclass(frozen=True)
class Leak:
    """One of the instance's personal values found in a request: what kind, from where, where."""

    kind: str
    """``value`` (a whole value), ``word`` (one word of one), ``e-mail``, ``handle``,
    ``web address`` or ``number``."""
    source: str
    """The field it was learned from: ``input.message``, ``extract-contact.name``."""
    where: str
    """Where in the request body: ``messages[1].content``."""
    field: str | None = None
    """The rendered field it came through (``customer``), when it was inside one."""

    def describe(self) -> str:
        article = "an" if self.kind[0] in "aeiou" else "a"
        return f"{article} {self.kind} from {self.source}, in " + (
            f"${self.field}" if self.field else self.where
        )


@dataclass(frozen=True)
class Rendered:
    """One step run's user message as sent, and what of it the guard looks at.

    ``masked`` is the same message with each field whose type cannot carry free text blanked
    out where it was inserted (not wherever its text happens to occur); ``fields`` is every
    other rendered field's text, to say which one a value came through.
    """

    message: str
    masked: str
    fields: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, template: str, values: Mapping[str, str], typed: Collection[str]) -> Rendered:
        substitute = Template(template).substitute
        return cls(
            message=substitute(values),
            masked=substitute({k: "\x00" if k in typed else v for k, v in values.items()}),
            fields={k: v for k, v in values.items() if k not in typed},
        )

    def field_of(self, found: str) -> str | None:
        """The field whose text holds ``found`` (normalised), if one does."""
        digits = _digits(found) if len(_digits(found)) >= 4 else None
        for name, text in self.fields.items():
            norm = normalise(text)
            if found in norm or (digits is not None and digits in _digits(norm)):
                return name
        return None


@dataclass(frozen=True)
class Constants:
    """What every request of one step carries, whichever instance: never a finding."""

    phrases: re.Pattern[str] | None
    """Raw text masked before matching: the system prompt, template segments, schema strings."""
    words: frozenset[str]
    """Normalised words that are never a finding (the wire format's, the prompt's, the schema's)."""

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def of(prompt: Prompt, output_model: type[BaseModel], options: frozenset[str]) -> Constants:
        schema = output_model.model_json_schema()
        texts = [prompt.system, *_template_segments(prompt.user), *options]
        texts.extend([*_keys(schema), *(text for _, text in _leaves(schema))])
        texts.extend({json.dumps(schema, ensure_ascii=a, indent=i) for a in (True, False) for i in (None, 2)})
        phrases = sorted({t for t in texts if t.strip()}, key=len, reverse=True)
        words = set(_WIRE_WORDS)
        for text in texts:
            words.update(_WORD.findall(normalise(text)))
        pattern = re.compile("|".join(map(re.escape, phrases))) if phrases else None
        return Constants(pattern, frozenset(words))


def _template_segments(template: str) -> list[str]:
    """The literal text between a template's placeholders."""
    return [part for part in Template.pattern.split(template) if part and not part.isidentifier()]


class PiiGuard:
    """The personal values of one instance, and the check every public request's bytes pass.

    Learning only adds; a check reads the sets as they are when it starts.
    """

    def __init__(self) -> None:
        self._phrases: dict[str, tuple[str, str]] = {}
        """Normalised whole values and shaped parts -> (kind, source)."""
        self._phrase_pattern: re.Pattern[str] | None = None
        self._words: dict[str, str] = {}
        """Normalised words of short values (Latin and other scripts with spaces) -> source."""
        self._fragments: dict[str, str] = {}
        """Runs of CJK characters from short values (no spaces to split on) -> source."""
        self._numbers: dict[str, str] = {}
        """Digit runs of 4 or more, digits only -> source."""

    def __bool__(self) -> bool:
        return bool(self._phrases or self._words or self._fragments or self._numbers)

    def learn(self, value: Any, source: str) -> None:
        """Take every string in ``value`` (a model, a dump, a string) as this instance's personal
        data, learned from ``source`` (``input``, ``extract-contact``) and the path within it."""
        for path, text in _leaves(value):
            self._learn_text(text, f"{source}.{path}" if path else source)

    def _learn_text(self, text: str, source: str) -> None:
        text = _PLACEHOLDER.sub(" ", text)
        norm = normalise(text)
        if not norm:
            return
        for kind, pattern in _SHAPES:
            for match in pattern.finditer(norm):
                self._phrase(match.group(0).rstrip(".,;:!?)"), kind, source)
        for run in _DIGIT_RUN.findall(norm):
            digits = _digits(run)
            if len(digits) >= 4:
                self._numbers.setdefault(digits, source)
        if len(norm) > _WHOLE_MAX:
            return
        if len(norm) >= 2 and not norm.replace(" ", "").isdigit():  # numbers: compared as digit runs
            self._phrase(norm, "value", source)
        words, chars = _WORDS_MAX
        if len(norm.split()) > words or len(norm) > chars:
            return
        for word in _WORD.findall(norm):
            if len(word) >= 2:
                self._words.setdefault(word, source)
        for fragment in _CJK_RUN.findall(norm):
            if len(fragment) >= 2:
                self._fragments.setdefault(fragment, source)

    def _phrase(self, norm: str, kind: str, source: str) -> None:
        if norm and norm not in self._phrases:
            self._phrases[norm] = (kind, source)
            self._phrase_pattern = None

    def leaks(
        self,
        body: bytes,
        constants: Constants,
        *,
        also_constant: frozenset[str] = frozenset(),
        rendered: Rendered | None = None,
    ) -> list[Leak]:
        """Every personal value of this instance in a request body about to be sent.

        Every string of the JSON body is checked (messages, system prompt, tool schemas),
        decoded, so an escaped ``\\u00fc`` hides nothing; a body that is not JSON is checked as
        text. ``also_constant``: more text that is the same for every instance (the model name);
        ``rendered``: the user message as sent, checked as its masked copy.
        """
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        keys = {normalise(key) for key in _keys(parsed)}
        constant_words = set(constants.words | keys)
        for text in also_constant:
            constant_words.update(_WORD.findall(normalise(text)))
        extra = re.compile("|".join(map(re.escape, sorted(also_constant, key=len, reverse=True))))
        found: dict[tuple[str, str, str, str], Leak] = {}
        for where, text in _leaves(parsed):
            if rendered is not None and text == rendered.message:
                text = rendered.masked
            if also_constant:
                text = extra.sub("\x00", text)
            for kind, source, match in self._find(text, constants, constant_words):
                into = rendered.field_of(match) if rendered is not None else None
                leak = Leak(kind, source, where or "the body", into)
                found.setdefault((leak.kind, leak.source, leak.where, into or ""), leak)
        return list(found.values())

    def _find(
        self, text: str, constants: Constants, constant_words: frozenset[str] | set[str]
    ) -> Iterator[tuple[str, str, str]]:
        """(kind, source, the normalised text matched) for each of this instance's values in ``text``."""
        if constants.phrases is not None:
            text = constants.phrases.sub("\x00", text)
        text = _PLACEHOLDER.sub("\x00", text)
        norm = normalise(text)
        if not norm.strip("\x00 "):
            return
        if self._phrases:
            if self._phrase_pattern is None:
                alternatives = sorted(self._phrases, key=len, reverse=True)
                self._phrase_pattern = re.compile(
                    "|".join(
                        re.escape(p)
                        if _CJK.search(p)
                        else rf"(?<!{_WORD_CHAR}){re.escape(p)}(?!{_WORD_CHAR})"
                        for p in alternatives
                    )
                )
            for match in self._phrase_pattern.finditer(norm):
                value = match.group(0)
                if " " not in value and value in constant_words:
                    continue
                kind, source = self._phrases[value]
                yield kind, source, value
        for word in _WORD.findall(norm):
            learned = self._words.get(word)
            if learned is not None and word not in constant_words:
                yield "word", learned, word
        for fragment, source in self._fragments.items():
            if fragment in norm:
                yield "word", source, fragment
        for run in _DIGIT_RUN.findall(norm):
            digits = _digits(run)
            if len(digits) < 4:
                continue
            for known, source in self._numbers.items():
                if digits in known or known in digits or _same_line(digits, known):
                    yield "number", source, run
                    break


def _same_line(a: str, b: str) -> bool:
    """One phone number written nationally and internationally (020 7946 0958, +44 20 7946 0958):
    the same last 7 digits or more."""
    return len(a) >= 7 and len(b) >= 7 and a[-7:] == b[-7:]


def _leaves(value: Any, root: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like value (or a model), with its path: ``messages[1].content``."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, BaseModel):
            stack.append((path, item.model_dump(mode="json")))
        elif isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), child) for key, child in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))


def _keys(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from (str(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
