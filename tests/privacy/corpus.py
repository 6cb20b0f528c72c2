"""Customer messages nobody on the project wrote: generated with Faker in 12 locales.

Each personal record plants the values a customer really sends (names, an address, a phone, an
e-mail, an IBAN, a card, a date of birth, a national id, a passport, a licence plate, an IP, a
relative's name, an account id) in a message in the locale's language, written in one of eight
ways people write:

    plain · all lowercase · digits spelled out in words · no-break spaces inside numbers ·
    a first name that is a common word · a relative's name in another script · social
    handles and a profile URL · full-width digits

``planted`` keeps every value as it was written, so a test can look for each at the wire.
The clean records carry no personal data at all: complaints with order numbers, in several
languages, with the words that a guard learning from capitals once blocked ("System", "Name",
"High", "text", "Bill", "May").
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field

from faker import Faker

__all__ = [
    "CLEAN_MESSAGES",
    "LOCALES",
    "STYLES",
    "Record",
    "clean_records",
    "forms",
    "personal_records",
]

LOCALES = (
    "en_US",
    "en_GB",
    "de_DE",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
    "pt_BR",
    "ja_JP",
    "pl_PL",
    "zh_CN",
    "ko_KR",
)
STYLES = ("plain", "lowercase", "words", "nbsp", "common-word-name", "other-script", "handles", "fullwidth")

# Two messages per language; between them every kind of value appears.
TEMPLATES: dict[str, tuple[str, str]] = {
    "en": (
        "Hi, this is {name}, {address}. My card {card} was charged twice for order {order}. Call me "
        "on {phone} or write to {email}. Date of birth {dob}, ID {national_id}. My brother {relative} "
        "set up the account. Thanks, {first}",
        "Hello support, {name} here (account {account}). Please change my IBAN to {iban}. Passport "
        "{passport}, car {plate}. Logging in from {ip} fails. Reach me at {phone}. Regards, {first}",
    ),
    "de": (
        "Hallo, hier ist {name}, {address}. Meine Karte {card} wurde für die Bestellung {order} doppelt "
        "belastet. Rufen Sie mich unter {phone} an oder schreiben Sie an {email}. Geburtsdatum {dob}, "
        "Ausweis {national_id}. Mein Bruder {relative} hat das Konto eröffnet. Grüße, {first}",
        "Guten Tag, {name} (Kundennummer {account}). Bitte ändern Sie meine IBAN auf {iban}. Reisepass "
        "{passport}, Kennzeichen {plate}. Die Anmeldung von {ip} schlägt fehl. Telefon {phone}. Mit "
        "freundlichen Grüßen, {first}",
    ),
    "fr": (
        "Bonjour, je suis {name}, {address}. Ma carte {card} a été débitée deux fois pour la commande "
        "{order}. Appelez-moi au {phone} ou écrivez à {email}. Né le {dob}, numéro {national_id}. Mon "
        "frère {relative} a ouvert le compte. Merci, {first}",
        "Bonjour, {name} (client {account}). Merci de changer mon IBAN en {iban}. Passeport {passport}, "
        "plaque {plate}. La connexion depuis {ip} échoue. Téléphone {phone}. Cordialement, {first}",
    ),
    "es": (
        "Hola, soy {name}, {address}. Mi tarjeta {card} se cobró dos veces por el pedido {order}. "
        "Llámame al {phone} o escribe a {email}. Fecha de nacimiento {dob}, DNI {national_id}. Mi "
        "hermano {relative} abrió la cuenta. Gracias, {first}",
        "Buenos días, {name} (cliente {account}). Cambien mi IBAN a {iban}, por favor. Pasaporte "
        "{passport}, matrícula {plate}. No puedo entrar desde {ip}. Teléfono {phone}. Saludos, {first}",
    ),
    "it": (
        "Buongiorno, sono {name}, {address}. La mia carta {card} è stata addebitata due volte per "
        "l'ordine {order}. Chiamatemi al {phone} o scrivete a {email}. Nato il {dob}, codice fiscale "
        "{national_id}. Mio fratello {relative} ha aperto il conto. Grazie, {first}",
        "Salve, {name} (cliente {account}). Per favore cambiate il mio IBAN in {iban}. Passaporto "
        "{passport}, targa {plate}. L'accesso da {ip} non funziona. Telefono {phone}. Saluti, {first}",
    ),
    "nl": (
        "Hallo, met {name}, {address}. Mijn kaart {card} is twee keer belast voor bestelling {order}. "
        "Bel me op {phone} of mail naar {email}. Geboortedatum {dob}, BSN {national_id}. Mijn broer "
        "{relative} heeft het account geopend. Groeten, {first}",
        "Goedendag, {name} (klantnummer {account}). Wijzig mijn IBAN naar {iban} alstublieft. Paspoort "
        "{passport}, kenteken {plate}. Inloggen vanaf {ip} lukt niet. Telefoon {phone}. Groet, {first}",
    ),
    "pt": (
        "Olá, sou {name}, {address}. Meu cartão {card} foi cobrado duas vezes no pedido {order}. "
        "Liguem para {phone} ou escrevam para {email}. Nascimento {dob}, CPF {national_id}. Meu irmão "
        "{relative} abriu a conta. Obrigado, {first}",
        "Bom dia, {name} (cliente {account}). Por favor alterem meu IBAN para {iban}. Passaporte "
        "{passport}, placa {plate}. Não consigo entrar a partir de {ip}. Telefone {phone}. Até, {first}",
    ),
    "pl": (
        "Dzień dobry, tu {name}, {address}. Moja karta {card} została obciążona dwa razy za zamówienie "
        "{order}. Proszę dzwonić pod {phone} lub pisać na {email}. Data urodzenia {dob}, PESEL "
        "{national_id}. Mój brat {relative} założył konto. Pozdrawiam, {first}",
        "Witam, {name} (klient {account}). Proszę zmienić mój IBAN na {iban}. Paszport {passport}, "
        "tablica {plate}. Logowanie z {ip} nie działa. Telefon {phone}. Z poważaniem, {first}",
    ),
    "ja": (
        "お世話になっております。{name}です。住所は{address}です。注文{order}でカード{card}が二重に請求"
        "されました。電話{phone}、メール{email}までご連絡ください。生年月日{dob}、番号{national_id}。"
        "兄の{relative}がアカウントを作りました。{first}",
        "{name}と申します（顧客番号{account}）。IBANを{iban}に変更してください。パスポート{passport}、"
        "車のナンバー{plate}。{ip}からログインできません。電話{phone}。よろしくお願いします。{first}",
    ),
    "zh": (
        "你好，我是{name}，住在{address}。订单{order}我的银行卡{card}被扣了两次。请打{phone}或发邮件到"
        "{email}。出生日期{dob}，身份证{national_id}。我哥哥{relative}开的账户。谢谢，{first}",
        "您好，我是{name}（客户号{account}）。请把我的IBAN改成{iban}。护照{passport}，车牌{plate}。"
        "从{ip}登录失败。电话{phone}。{first}",
    ),
    "ko": (
        "안녕하세요, {name}입니다. 주소는 {address}입니다. 주문 {order}에서 카드 {card}가 두 번 결제"
        "되었습니다. {phone}로 전화하거나 {email}로 메일 주세요. 생년월일 {dob}, 주민번호 "
        "{national_id}. 형 {relative}이 계정을 만들었습니다. 감사합니다, {first}",
        "{name}입니다 (고객번호 {account}). IBAN을 {iban}로 바꿔 주세요. 여권 {passport}, 차량번호 "
        "{plate}. {ip}에서 로그인이 안 됩니다. 전화 {phone}. {first}",
    ),
}

COMMON_WORD_NAMES = ("Bill", "May", "June", "Will", "Rose", "Hope", "Grace", "Mark", "Faith", "Joy")
DIGIT_WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
    "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "it": ["zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"],
    "pt": ["zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove"],
    "nl": ["nul", "een", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen"],
    "pl": ["zero", "jeden", "dwa", "trzy", "cztery", "pięć", "sześć", "siedem", "osiem", "dziewięć"],
}
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_EAST_ASIAN = {"ja", "zh", "ko"}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


@dataclass
class Record:
    """One generated message and what was planted in it."""

    index: int
    locale: str
    style: str
    message: str
    planted: dict[str, str] = field(default_factory=dict)
    """Kind -> the value as written in the message."""
    original: dict[str, str] = field(default_factory=dict)
    """Kind -> the value before it was written some way (its digits, its case)."""
    person: dict[str, str | None] = field(default_factory=dict)
    """What a private model that extracts correctly answers for extract-contact."""

    @property
    def payload(self) -> dict[str, str]:
        return {"channel": "email", "message": self.message}


def _spelled(value: str, language: str) -> str:
    words = DIGIT_WORDS.get(language, DIGIT_WORDS["en"])
    return " ".join(words[int(c)] if c.isdigit() else c for c in value if not c.isspace())


def _nbsp(value: str) -> str:
    """Digit groups joined by no-break and narrow no-break spaces instead of spaces or dashes."""
    digits = re.sub(r"\D", "", value)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "".join(g + ("\u00a0" if n % 2 else "\u202f") for n, g in enumerate(groups)).rstrip()


def _name(language: str, first: str, last: str) -> str:
    if language == "ja":
        return f"{last} {first}"
    if language in ("zh", "ko"):
        return f"{last}{first}"
    return f"{first} {last}"


def personal_records(count: int = 72, seed: int = 20261207) -> list[Record]:
    """``count`` records, locales and styles in turn, the same for the same seed and Faker."""
    records = []
    pick = random.Random(seed)
    for index in range(count):
        locale = LOCALES[index % len(LOCALES)]
        style = STYLES[index % len(STYLES)]
        language = locale.split("_")[0]
        fake = Faker(locale)
        fake.seed_instance(seed + index)
        first, last = fake.first_name(), fake.last_name()
        if style == "common-word-name":
            first = pick.choice(COMMON_WORD_NAMES)
        relative = fake.first_name()
        name_language = language
        if style == "other-script":  # the customer's name and their relative's in another script
            other_locale = "en_US" if language in _EAST_ASIAN else pick.choice(["ja_JP", "zh_CN", "ko_KR"])
            other = Faker(other_locale)
            other.seed_instance(seed + index)
            first, last, relative = other.first_name(), other.last_name(), other.name()
            name_language = other_locale.split("_")[0]
        user = fake.user_name()
        values = {
            "name": _name(name_language, first, last),
            "first": first,
            "last": last,
            "address": f"{fake.street_address()}, {fake.postcode()} {fake.city()}".replace("\n", ", "),
            "phone": fake.phone_number(),
            "email": fake.email(),
            "iban": fake.iban(),
            "card": fake.credit_card_number(),
            "dob": fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat(),
            "national_id": fake.ssn(),
            "passport": fake.passport_number(),
            "plate": fake.license_plate(),
            "ip": fake.ipv4_public(),
            "relative": relative,
            "account": fake.bothify("??-#####").upper(),
        }
        template = TEMPLATES[language][index % 2]
        used = set(re.findall(r"\{(\w+)\}", template)) - {"order"}
        written = {kind: values[kind] for kind in used}
        person: dict[str, str | None] = {
            "name": values["name"],
            "email": values["email"] if "email" in used else None,
            "phone": values["phone"],
            "account_id": values["account"] if "account" in used else None,
        }
        if style == "words":
            for kind in ("phone", "card"):
                if kind in written:
                    written[kind] = _spelled(written[kind], language)
        elif style == "nbsp":
            for kind in ("phone", "national_id"):
                if kind in written:
                    written[kind] = _nbsp(written[kind])
        message = template.format(order=fake.numerify("#####"), **written)
        if style == "handles":
            written["handle"] = f"@{user}"
            written["profile"] = f"linkedin.com/in/{user}"
            message += f" (X: @{user}, https://www.linkedin.com/in/{user})"
        elif style == "lowercase":
            message = message.lower()
            written = {kind: value.lower() for kind, value in written.items()}
        elif style == "fullwidth":
            message = message.translate(_FULLWIDTH)
            written = {kind: value.translate(_FULLWIDTH) for kind, value in written.items()}
        original = {kind: values.get(kind, value) for kind, value in written.items()}
        records.append(Record(index, locale, style, message, written, original, person))
    return records


def half(record: Record) -> dict[str, str | None]:
    """What a private model that extracts only half answers: part of the name, nothing else
    but the e-mail."""
    name = record.person["name"] or ""
    part = name.split()[0] if " " in name else name[: max(1, len(name) // 2)]
    return {"name": part, "email": record.person["email"], "phone": None, "account_id": None}


CLEAN_MESSAGES = (
    "The System keeps logging me out. High priority please, order 48213 is stuck.",
    "Name field on the invoice form is empty and the text is cut off. Technical issue since Monday.",
    "Normal delivery was promised but order 55120 arrived damaged. Please send a replacement.",
    "High urgency: the export to CSV fails with error 500 on every attempt.",
    "Bill for order 41002 was sent twice, please cancel one of them.",
    "May I get a copy of the invoice for order 51003? The PDF link is broken.",
    "Text messages with the login code never arrive. Technical support please.",
    "Refund requested for order 88123: the product was not as described.",
    "Das System zeigt bei Bestellung 77310 einen Fehler. Name und Adresse sind im Formular leer.",
    "Die Rechnung für Auftrag 20931 ist doppelt. Bitte prüfen Sie das System.",
    "Hohe Priorität: Die App stürzt beim Öffnen ab. Technischer Fehler seit dem Update.",
    "システムにログインできません。注文番号48213の状況を教えてください。",
    "請求書の金額が間違っています。注文77310です。",
    "アプリが起動しません。至急対応をお願いします。",
    "Le système affiche une erreur pour la commande 30044. Merci de vérifier.",
    "El sistema no funciona desde ayer. Pedido 19922 sin entregar.",
    "Il sistema non accetta il mio ordine 48810. Priorità alta.",
    "Het systeem geeft een foutmelding bij bestelling 66012.",
    "O sistema cobrou duas vezes o pedido 70211.",
    "System nie działa od rana. Zamówienie 33412 nie dotarło.",
    "系统无法登录，订单号48213一直显示处理中。",
    "시스템 오류로 주문 55012를 확인할 수 없습니다.",
    "Will the new version fix the sync problem? Order 90210 is still pending.",
    "Grace period for the subscription ended early; the account shows Normal plan, not Premium.",
)


def clean_records() -> list[Record]:
    return [Record(i, "-", "clean", message) for i, message in enumerate(CLEAN_MESSAGES)]


def eager(record: Record) -> dict[str, str | None]:
    """An over-eager private model on a clean message: its first capitalised words as a "name"."""
    words = re.findall(r"[A-Z][\w]+", record.message)
    return {"name": " ".join(words[:2]) or None, "email": None, "phone": None, "account_id": None}


_WORDY = {"name", "first", "last", "relative", "address"}


def forms(kind: str, written: str, original: str) -> set[str]:
    """Ways a planted value could be found in text, case-folded: as written and as it was, each
    word of a name or an address, and the digits of anything with 4 or more."""
    found: set[str] = set()
    for value in {written, original}:
        text = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
        found.add(text)
        if kind in _WORDY:
            found.update(p for p in re.split(r"[\s,]+", text) if not p.isdigit())
        digits = re.sub(r"\D", "", text)
        if len(digits) >= 4:
            found.add(digits)
    return {f for f in found if len(f) >= 2 or _CJK.fullmatch(f)}  # a one-character given name: 凯
