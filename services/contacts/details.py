"""A contact's details as people type them, checked and normalized: phones, e-mails, account.

Stored normalized, so that "same phone" and "same e-mail" are plain equality: a phone keeps its
digits and a leading "+", an e-mail is lowercased.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

PHONE_SEPARATORS = re.compile(r"[\s().\-/]")
PHONE = re.compile(r"\+?\d{5,15}")  # E.164 has at most 15 digits
EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
MAX_POINTS = 20


def normalize_phone(raw: str) -> str:
    phone = PHONE_SEPARATORS.sub("", raw)
    if phone.startswith("00"):  # the international prefix typed the long way
        phone = "+" + phone[2:]
    if not PHONE.fullmatch(phone):
        raise ValueError(f"not a phone number: {raw[:40]!r} (5 to 15 digits, optionally a +)")
    return phone


def normalize_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > 320 or not EMAIL.fullmatch(email):
        raise ValueError(f"not an e-mail address: {raw[:60]!r}")
    return email


def account_key(account: str | None) -> str | None:
    """What "same account" compares: case and spacing do not make two companies."""
    return " ".join(account.casefold().split()) or None if account else None


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


Phone = Annotated[str, Field(max_length=40), AfterValidator(normalize_phone)]
Email = Annotated[str, Field(max_length=320), AfterValidator(normalize_email)]
Phones = Annotated[list[Phone], Field(max_length=MAX_POINTS), AfterValidator(_unique)]
Emails = Annotated[list[Email], Field(max_length=MAX_POINTS), AfterValidator(_unique)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Account = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class ContactPatch(BaseModel):
    """New details for a contact; fields left out stay as they are. `phones` and `emails`
    replace the lists; `account: null` (or "") clears the account."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    phones: Phones | None = None
    emails: Emails | None = None
    account: Account | None = None

    @model_validator(mode="after")
    def _name_stays(self) -> ContactPatch:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be cleared: give a new one or leave it out")
        return self
