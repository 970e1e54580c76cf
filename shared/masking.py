"""How contact details look to anyone but the owning site's staff (admins included)."""

from __future__ import annotations

import phonenumbers


def mask_mobile(e164: str) -> str:
    """+447812345678 -> 07*** ***678."""
    national = phonenumbers.format_number(phonenumbers.parse(e164, "GB"), phonenumbers.PhoneNumberFormat.NATIONAL)
    digits = national.replace(" ", "")
    return f"{digits[:2]}*** ***{digits[-3:]}"


def mask_email(email: str) -> str:
    """eleanor@example.org -> e***@example.org."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_contact(contact: str) -> str:
    """A mobile (E.164) or an email address, masked."""
    return mask_email(contact) if "@" in contact else mask_mobile(contact)
