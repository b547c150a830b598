"""Rule detectors for personal data in text: payment card numbers (Luhn), IBANs (mod 97), e-mail
addresses and phone numbers, each found with its span and shown only masked.

The checksums are what keeps the rules useful: sixteen digits on a receipt or an order number are
everywhere, a Luhn-valid sixteen digits far less so, and a near-miss (one digit off) is not a card.
Masking keeps what a moderator needs to recognise the kind and the instance (the last four digits of
a card, the country of an IBAN, the domain of an address) and nothing that could be used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CARD = "payment_card"
IBAN = "iban"
EMAIL = "email"
PHONE = "phone"

# 13 to 19 digits, in groups separated by single spaces or dashes (as printed on cards and forms).
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# Two letters, two check digits, then 11 to 30 letters and digits, optionally in groups of four.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}\b")
# An international number (+ and 8 to 15 digits) or a national one with separators: 9 to 15 digits.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d(?:[ ./-]?\(?\d\)?){7,14}|\(?0\d(?:[ ./-]?\(?\d\)?){8,13})(?![\w])")

# IBAN lengths by country (the registry's), for the common countries; others need only 15-34.
_IBAN_LENGTHS = {
    "AT": 20, "BE": 16, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18, "FR": 27,
    "GB": 22, "GR": 27, "IE": 22, "IT": 27, "LU": 20, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "SE": 24, "SK": 24,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int
    masked: str


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    expected = _IBAN_LENGTHS.get(compact[:2])
    if not 15 <= len(compact) <= 34 or (expected is not None and len(compact) != expected):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def find_personal_data(text: str) -> list[Finding]:
    """Every finding, in text order, none overlapping (a card number is not also a phone number)."""
    found: list[Finding] = []

    def free(start: int, end: int) -> bool:
        return all(end <= f.start or start >= f.end for f in found)

    for match in _IBAN.finditer(text):
        if iban_valid(match.group()):
            compact = match.group().replace(" ", "")
            found.append(Finding(IBAN, *match.span(), f"{compact[:4]} **** {compact[-4:]}"))
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits) and free(*match.span()):
            found.append(Finding(CARD, *match.span(), f"**** **** **** {digits[-4:]}"))
    for match in _EMAIL.finditer(text):
        if free(*match.span()):
            local, _, domain = match.group().partition("@")
            found.append(Finding(EMAIL, *match.span(), f"{local[0]}***@{domain}"))
    for match in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 8 <= len(digits) <= 15 and free(*match.span()):
            prefix = "+" if match.group().startswith("+") else ""
            found.append(Finding(PHONE, *match.span(), f"{prefix}{'*' * (len(digits) - 2)}{digits[-2:]}"))
    return sorted(found, key=lambda f: f.start)


def mask(text: str, findings: list[Finding] | None = None) -> str:
    """The text with every finding replaced by its masked form."""
    findings = find_personal_data(text) if findings is None else findings
    pieces, position = [], 0
    for finding in findings:
        pieces += [text[position : finding.start], f"[{finding.kind}: {finding.masked}]"]
        position = finding.end
    pieces.append(text[position:])
    return "".join(pieces)
