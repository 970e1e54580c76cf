"""The broker contract: ReferralStatusChanged carries no free text."""

import uuid

import pytest
from pydantic import ValidationError

from shared.events import ReferralStatusChanged

FIELDS = {"referral_id": str(uuid.uuid4()), "site_id": "croydon", "meeting_slug": "m-1", "fellowship": "AA",
          "from_status": "created", "to_status": "closed"}


def test_status_change_has_no_reason_field():
    assert "reason" not in ReferralStatusChanged.model_fields
    assert "reason" not in ReferralStatusChanged(**FIELDS).model_dump()


def test_an_old_message_with_a_reason_still_parses_and_the_reason_is_dropped():
    parsed = ReferralStatusChanged.model_validate({**FIELDS, "reason": "spoke to her sister"})
    assert parsed.to_status == "closed"
    assert "spoke to her sister" not in parsed.model_dump_json()


def test_other_unknown_fields_are_still_refused():
    with pytest.raises(ValidationError, match="mobile"):
        ReferralStatusChanged.model_validate({**FIELDS, "mobile": "07700900123"})
