"""Field encryption with key rotation, keyed hashes, and logs that carry no personal data."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from shared.crypto import FieldCipher, generate_key, keyed_hash
from shared.logs import configure_logging, json_formatter, scrub_text


def test_encrypts_and_rotates_keys():
    old, new = generate_key(), generate_key()
    token = FieldCipher(old).encrypt("+447700900123")
    assert "447700900123" not in token
    rotated_cipher = FieldCipher(f"{new},{old}")
    assert rotated_cipher.decrypt(token) == "+447700900123"
    rotated = rotated_cipher.rotate(token)
    assert FieldCipher(new).decrypt(rotated) == "+447700900123"
    with pytest.raises(ValueError):
        FieldCipher(new).decrypt(token)


def test_any_secret_string_can_serve_as_a_key():
    cipher = FieldCipher("a passphrase from a secrets manager")
    assert cipher.decrypt(cipher.encrypt("x@example.org")) == "x@example.org"


def test_keyed_hash_matches_without_revealing():
    h = keyed_hash("+447700900123", "k")
    assert h == keyed_hash(" +447700900123 ", "k")
    assert h != keyed_hash("+447700900123", "other key")
    assert "7700900123" not in h


@pytest.mark.parametrize("text", [
    "sent to 07700 900123 ok", "sent to +447700900123", "client 07700900123", "mail jo.bloggs@example.org now",
])
def test_scrub_masks_phone_numbers_and_emails(text):
    out = scrub_text(text)
    assert "900123" not in out and "example.org" not in out


def test_log_lines_are_json_and_drop_contact_fields():
    configure_logging("INFO")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter())
    logging.getLogger().addHandler(handler)
    try:
        structlog.get_logger("t").info("referral.created", mobile="+447700900123", email="a@b.org", site_id="croydon")
        logging.getLogger("plain").warning("failed for 07700 900123")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().strip().splitlines()[-2:]]
    assert lines[0]["event"] == "referral.created" and lines[0]["site_id"] == "croydon"
    assert lines[0]["mobile"] == "[redacted]" and lines[0]["email"] == "[redacted]"
    assert "900123" not in json.dumps(lines)
