"""Keeping personal data out of requests to non-private models, whatever a model extracted.

An instance of a workflow with a pii step gets one ``PiiGuard``. It learns the
instance's own personal data from every string in its input and in the
inputs and outputs of its pii steps, and it finds more by pattern in any
text. Before a request goes to a non-private model, its messages are redacted
(each finding becomes a placeholder such as ``[NAME 1]``, put back locally
in the answer); as the request leaves the process the exact body is checked
again, and anything still found stops it (``pii_blocked``): it fails closed.

What it learns from the instance (so it does not depend on what a model extracted):
- every whole value of a pii step's output (a name, an e-mail, an account id);
- name-like words: capitalised words that are not common words, so a first or
  last name alone, a relative's name, a street or a town;
- address lines: a line (or comma-separated part) with a house number or a
  postcode beside a street word, kept whole and word by word;
- digit runs of 4 or more, compared on their digits alone, so the last four
  digits of a card or a postcode written another way are still found.

What it finds by pattern, in any text:
- phone numbers: ``phonenumbers`` (Google's libphonenumber: the numbering plans of
  every region, not a regex that also matches dates and amounts);
- IBANs, payment cards, US social security numbers and other national ids:
  ``python-stdnum`` (checksums for 200+ identifier formats);
- e-mail addresses, IP addresses (validated by ``ipaddress``) and dates.

Why these and not Presidio: its analyzer needs spaCy and a language model that is
not published on PyPI (so not installable here), and pattern recognizers are all
this guard needs from it; the two libraries above are well kept, offline and
deterministic.

What it cannot catch, said plainly: personal data that is in neither the
instance's input nor a pii step's input or output and matches no pattern (a name
written in lowercase in text a model invented, a description of a person without
a name, an identifier with no checksum and fewer than 4 digits). Route a step to
a private model when its prompt carries more than these.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finding", "PiiGuard", "Redaction"]

_WORD = re.compile(r"[^\W\d_][\w'’-]*", re.UNICODE)
_DIGITS = re.compile(r"\d(?:[\d \t./-]*\d)?")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){10,30}\b")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_ID = re.compile(r"\b(?=[A-Z0-9]*\d)[A-Z0-9]{8,13}\b")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_IPV6 = re.compile(r"\b[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b")
_DATE = re.compile(
    r"\b(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}"
    r"|\d{1,2}\.? (?:jan|feb|m[aä]r|apr|ma[iy]|jun|jul|aug|sep|o[ck]t|nov|de[cz])[a-zä]*\.? \d{4})\b",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"\[(?:NAME|ADDRESS|EMAIL|PHONE|IBAN|CARD|ID|IP|DATE|NUMBER|PII) \d+\]")
_NAME_PART = r"[A-ZÀ-ÖØ-Ý][\w'’-]*"
_ADDRESSES = (
    # Hauptstraße 12, Lindenweg 3a, Marktplatz 7: the street word is a suffix, the number follows.
    re.compile(
        r"\b[^\W\d_][\w'’-]*(?i:stra(?:ss|ß)e|str\.|gasse|weg|platz|allee|damm|ufer)\s*\d+\s?[a-zA-Z]?\b"
    ),
    # 221B Baker Street, 1600 Pennsylvania Avenue: the number leads, the street word ends.
    re.compile(
        rf"\b\d+\s?[a-zA-Z]?\s+(?:{_NAME_PART}\s+){{1,3}}(?i:street|st|road|rd|avenue|ave|lane|ln"
        r"|drive|dr|boulevard|blvd|way|court|ct|close|place|pl|square|sq|terrace|crescent)\b\.?"
    ),
    # 12 rue de la Paix, Via Roma 10, Calle Mayor 5, Rua Augusta 200: the street word leads a name.
    re.compile(
        r"(?:\b\d+\s?[a-zA-Z]?,?\s+)?\b(?i:rue|chemin|quai|via|viale|piazza|corso|calle|avenida|plaza"
        r"|paseo|rua|straat|laan|gracht|plein)\s+(?:(?i:de|del|della|di|da|la|le|les|du|des|do|dos|das"
        rf"|van|der|den)\s+)*{_NAME_PART}(?:\s+{_NAME_PART})*(?:,?\s+\d+\s?[a-zA-Z]?\b)?"
    ),
)
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}\b")
_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "CH", "AT")
"""Regions whose national formats are recognised without a +country prefix."""

# Words that start sentences, greet, sign off or name the business, in the languages the
# samples use: capitalised, they are not names. Kept short on purpose: a word missing here is
# redacted when it is in the customer's own text, which costs the model a word, never a leak.
_COMMON = frozenset(
    """
    a about after again all also am an and any are as at be because been before being below but by
    can could did do does doing down during each few for from further had has have having he her
    here hers him his how i if in into is it its just me more most my no nor not now of off on once
    only or other our ours out over own same she should so some such than that the their theirs
    them then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours yes ok okay hello hi hey dear
    thanks thank regards best kind sincerely cheers please sorry urgent asap re fw fwd subject
    attachment attached message email e-mail mail phone call chat form reply customer client
    account invoice order payment refund charge charged card bank billing bill support service team
    help issue problem question request ticket number id reference monday tuesday wednesday
    thursday friday saturday sunday today tomorrow yesterday january february march april may june
    july august september october november december mr mrs ms miss dr prof sir madam iban bic swift
    ssn dob pin cvv zip postcode passport licence license tax vat id no nr hallo guten tag danke
    grüße gruß mit freundlichen liebe lieber sehr geehrte geehrter bitte bonjour merci cordialement
    madame monsieur hola gracias saludos buongiorno grazie ciao
    i'm i’m i've i’ve i'll i’ll i'd i’d we're we’re we've you're it's it’s that's don't can't won't
    """.split()  # noqa: SIM905 (a word list reads best as words)
)


@dataclass(frozen=True)
class Finding:
    """One piece of personal data in a text: what kind, where."""

    kind: str
    start: int
    end: int


@dataclass
class Redaction:
    """What placeholders stand for (kept in this process only), and what was hidden, by kind."""

    originals: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def placeholder(self, kind: str, value: str) -> str:
        for placeholder, original in self.originals.items():
            if original.casefold() == value.casefold() and placeholder.startswith(f"[{kind} "):
                return placeholder
        placeholder = f"[{kind} {len(self.originals) + 1}]"
        self.originals[placeholder] = value
        return placeholder

    def restore(self, value: Any) -> Any:
        """``value`` (an output model's dump) with every placeholder put back, here, locally."""
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: self.originals.get(m.group(0), m.group(0)), value)
        if isinstance(value, list):
            return [self.restore(item) for item in value]
        if isinstance(value, dict):
            return {key: self.restore(item) for key, item in value.items()}
        return value


class PiiGuard:
    """The personal data of one instance, and the patterns that find more: thread-safe enough
    (learning only adds; a step reads the sets as they are when it starts)."""

    def __init__(self) -> None:
        self._phrases: dict[str, tuple[str, str]] = {}
        """Whole values and addresses: lowercased -> (as written, kind)."""
        self._phrase_pattern: re.Pattern[str] | None = None
        self._names: set[str] = set()
        """Name-like words, casefolded."""
        self._digits: set[str] = set()
        """Digit runs of 4 or more, digits only."""

    def learn(self, value: Any, *, whole: bool = False) -> None:
        """Take every string in ``value`` (a payload, a model dump) as this instance's personal data.

        ``whole``: the strings are values in their own right (a pii step's output fields), so
        each is kept whole too, not only its words and digits.
        """
        for text in _strings(value):
            self._learn_text(text, whole=whole)

    def _learn_text(self, text: str, *, whole: bool) -> None:
        text = text.strip()
        if not text:
            return
        if whole and len(text) >= 3 and not text.isdigit():
            self._phrase(text, _kind_of(text))
        for word in _WORD.findall(text):
            if word[0].isupper() and len(word) >= 2 and word.casefold() not in _COMMON:
                self._names.add(word.casefold().rstrip("'’-"))
            elif whole and len(word) >= 3 and word.casefold() not in _COMMON:
                self._names.add(word.casefold())
        for run in _DIGITS.findall(text):
            digits = re.sub(r"\D", "", run)
            if len(digits) >= 4:
                self._digits.add(digits)
        for pattern in (*_ADDRESSES, _UK_POSTCODE):
            for match in pattern.finditer(text):
                self._phrase(match.group(0).strip(" ,"), "ADDRESS")
        for finding in self.patterns(text):
            self._phrase(text[finding.start : finding.end], finding.kind)

    def _phrase(self, text: str, kind: str) -> None:
        if text.lower() not in self._phrases:
            self._phrases[text.lower()] = (text, kind)
            self._phrase_pattern = None

    # Finding ---------------------------------------------------------------------------

    def find(self, text: str) -> list[Finding]:
        """Every piece of this instance's personal data, and every pattern, in ``text``."""
        found = list(self.patterns(text))
        if self._phrases:
            if self._phrase_pattern is None:  # longest first, so a whole address beats its street
                written = sorted((p for p, _ in self._phrases.values()), key=len, reverse=True)
                # Whitespace in a phrase matches any run of it: a value re-wrapped on two lines.
                alternatives = (r"\s+".join(map(re.escape, p.split())) for p in written)
                self._phrase_pattern = re.compile("|".join(alternatives), re.IGNORECASE)
            for match in self._phrase_pattern.finditer(text):
                kind = self._phrases.get(" ".join(match.group(0).split()).lower(), ("", "PII"))[1]
                found.append(Finding(kind, match.start(), match.end()))
        for match in _WORD.finditer(text):
            if match.group(0).casefold().rstrip("'’-") in self._names:
                found.append(Finding("NAME", match.start(), match.end()))
        for match in _DIGITS.finditer(text):
            digits = re.sub(r"\D", "", match.group(0))
            if len(digits) >= 4 and any(digits in known or known in digits for known in self._digits):
                found.append(Finding("NUMBER", match.start(), match.end()))
        return _outermost(found, text)

    def patterns(self, text: str) -> Iterator[Finding]:
        """Personal data found by pattern alone (no knowledge of the instance)."""
        import phonenumbers
        from stdnum import iban, luhn
        from stdnum.us import ssn

        for match in _EMAIL.finditer(text):
            yield Finding("EMAIL", match.start(), match.end())
        for match in _IBAN.finditer(text):
            if iban.is_valid(match.group(0)):
                yield Finding("IBAN", match.start(), match.end())
        for match in _CARD.finditer(text):
            if luhn.is_valid(re.sub(r"\D", "", match.group(0))):
                yield Finding("CARD", match.start(), match.end())
        for match in _SSN.finditer(text):
            if ssn.is_valid(match.group(0)):
                yield Finding("ID", match.start(), match.end())
        for match in _ID.finditer(text):
            if _national_id(match.group(0)):
                yield Finding("ID", match.start(), match.end())
        for pattern in (_IPV4, _IPV6):
            for match in pattern.finditer(text):
                if _is_ip(match.group(0)):
                    yield Finding("IP", match.start(), match.end())
        for match in _DATE.finditer(text):
            yield Finding("DATE", match.start(), match.end())
        seen: set[tuple[int, int]] = set()
        for region in _PHONE_REGIONS:
            for phone in phonenumbers.PhoneNumberMatcher(text, region):
                if (phone.start, phone.end) not in seen:
                    seen.add((phone.start, phone.end))
                    yield Finding("PHONE", phone.start, phone.end)

    # Redacting -------------------------------------------------------------------------

    def redact(self, text: str, redaction: Redaction) -> str:
        """``text`` with every finding replaced by its placeholder (counted in ``redaction``)."""
        parts: list[str] = []
        at = 0
        for finding in self.find(text):
            value = text[finding.start : finding.end]
            parts.append(text[at : finding.start])
            parts.append(redaction.placeholder(finding.kind, value))
            redaction.counts[finding.kind.lower()] += 1
            at = finding.end
        parts.append(text[at:])
        return "".join(parts)

    def redact_messages(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Redaction]:
        """The messages with their text redacted, and what the placeholders stand for."""
        redaction = Redaction()
        redacted = [
            {**message, "content": self.redact(message["content"], redaction)}
            if isinstance(message.get("content"), str)
            else message
            for message in messages
        ]
        return redacted, redaction

    def leaks(self, body: bytes) -> Counter[str]:
        """What personal data is still in a request body about to be sent (by kind, no values).

        Every string of the JSON body is checked (messages, system prompt, tool schemas and their
        examples), decoded, so an escaped ``\\u00fc`` hides nothing; a body that is not JSON is
        checked as text.
        """
        try:
            texts = list(_strings(json.loads(body)))
        except ValueError:
            texts = [body.decode("utf-8", "replace")]
        counts: Counter[str] = Counter()
        for text in texts:
            for finding in self.find(_PLACEHOLDER.sub(" ", text)):
                counts[finding.kind.lower()] += 1
        return counts


def _strings(value: Any) -> Iterator[str]:
    """Every string value in a JSON-like value (not the keys: field names), without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif hasattr(item, "model_dump"):
            stack.append(item.model_dump(mode="json"))


def _kind_of(value: str) -> str:
    if _EMAIL.fullmatch(value):
        return "EMAIL"
    if sum(c.isdigit() for c in value) >= 4:
        return "NUMBER"
    return "NAME"


def _is_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (address.is_unspecified or (address.version == 6 and text.count(":") < 2))


def _national_id(text: str) -> bool:
    """A national identifier with a checksum: the formats customers most often quote."""
    from stdnum.de import idnr
    from stdnum.es import dni, nie
    from stdnum.fr import nir
    from stdnum.it import codicefiscale
    from stdnum.nl import bsn

    validators: Iterable[Any] = (idnr, nir, dni, nie, codicefiscale, bsn)
    return any(_valid(module, text) for module in validators)


def _valid(module: Any, text: str) -> bool:
    try:
        return bool(module.is_valid(text))
    except Exception:  # a validator that does not take this shape at all
        return False


def _outermost(found: list[Finding], text: str) -> list[Finding]:
    """Findings in order, overlaps merged into the widest (its first kind wins), no placeholders."""
    merged: list[Finding] = []
    for finding in sorted(found, key=lambda f: (f.start, -(f.end - f.start))):
        if _PLACEHOLDER.fullmatch(text[finding.start : finding.end]):
            continue
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Finding(last.kind, last.start, max(last.end, finding.end))
        else:
            merged.append(finding)
    return merged
