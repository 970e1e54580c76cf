"""Inputs and outputs of the referral desk. Validation that needs no database lives here."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.events import REFERRAL_STATUSES, Stage
from shared.types import InputBool, InputDate

Support = Literal["accompanied_by_peer", "accompanied_by_keyworker", "transport", "none"]
ReminderDetail = Literal["discreet", "full"]
Status = Literal[REFERRAL_STATUSES]  # type: ignore[valid-type]

# UK numbering: Great Britain plus the Crown Dependencies sharing +44.
UK_REGIONS = {"GB", "GG", "JE", "IM"}
REFUSED_TYPES = {
    phonenumbers.PhoneNumberType.FIXED_LINE: "a landline cannot receive text messages; give a mobile number",
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "premium-rate numbers are refused",
    phonenumbers.PhoneNumberType.SHARED_COST: "shared-cost numbers are refused",
    phonenumbers.PhoneNumberType.TOLL_FREE: "freephone numbers cannot receive text messages",
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER: "personal (070) numbers are refused; give a mobile number",
    phonenumbers.PhoneNumberType.PAGER: "pager numbers are refused",
    phonenumbers.PhoneNumberType.VOIP: "VoIP numbers are refused; give a mobile number",
    phonenumbers.PhoneNumberType.UAN: "non-geographic numbers are refused; give a mobile number",
}
EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
                      r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
CLIENT_REFERENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{1,23}$")


def normalise_uk_mobile(value: str) -> str:
    """A UK mobile number in E.164 (+447...), or ValueError saying why not."""
    try:
        number = phonenumbers.parse(value, "GB")
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    if phonenumbers.region_code_for_number(number) not in UK_REGIONS:
        raise ValueError("only UK mobile numbers can receive reminders")
    kind = phonenumbers.number_type(number)
    if kind != phonenumbers.PhoneNumberType.MOBILE:
        raise ValueError(REFUSED_TYPES.get(kind, "only mobile numbers can receive text messages"))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def check_client_reference(value: str) -> str:
    """A pseudonymous code such as ``BHM-0042``: short, no spaces, never a name or contact detail."""
    value = value.strip()
    if not CLIENT_REFERENCE_RE.match(value):
        raise ValueError("use 2-24 letters, digits, '.', '_', '/' or '-' with no spaces")
    if not any(c.isdigit() for c in value):
        raise ValueError("a pseudonymous reference has at least one digit (e.g. BHM-0042); do not use names")
    if sum(c.isdigit() for c in value) >= 9:
        raise ValueError("this looks like a phone number; use a pseudonymous reference")
    return value


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_reminders: InputBool = Field(description="The client agreed to reminders, after hearing the wording verbatim")
    wording_version: str = Field(min_length=1, max_length=20, description="The consent wording read to the client")


class ReferralIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    meeting_slug: str = Field(min_length=1, max_length=200)
    planned_date: InputDate | None = Field(None, description="Default: the meeting's next occurrence")
    support: Support = "none"
    client_reference: str = Field(min_length=2, max_length=24, description="Pseudonymous, e.g. BHM-0042")
    mobile: str | None = Field(None, max_length=32, description="UK mobile, for text reminders")
    email: str | None = Field(None, max_length=254)
    consent: ConsentIn | None = Field(None, validate_default=True)
    reminder_detail: ReminderDetail = Field("discreet", description="full: reminders may name the fellowship")
    site_id: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$",
                                 description="Admins only; others act for their own site")

    @field_validator("client_reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        return check_client_reference(value)

    @field_validator("mobile")
    @classmethod
    def _mobile(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return normalise_uk_mobile(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not EMAIL_RE.match(value):
            raise ValueError("not a valid email address")
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"

    @field_validator("consent")
    @classmethod
    def _consent(cls, consent: ConsentIn | None, info: ValidationInfo) -> ConsentIn | None:
        # Runs after mobile and email (declared earlier); a field that failed is absent.
        has_contact = bool(info.data.get("mobile") or info.data.get("email"))
        if has_contact and (consent is None or not consent.to_reminders):
            raise ValueError("a mobile or email is kept only with the client's consent to reminders")
        if consent is not None and consent.to_reminders and not has_contact \
                and "mobile" in info.data and "email" in info.data:
            raise ValueError("consent to reminders needs a mobile or an email to send them to")
        return consent


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Stage = Field(description="The FAMA stage (business status) to move to; it fixes the FHIR status")
    reason: str | None = Field(None, max_length=500, description="Required for on-hold, did-not-engage, declined")
    accompanied: InputBool | None = Field(None, description="Required for first-meeting-attended")
    planned_date: InputDate | None = Field(None, description="For first-meeting-planned: a new date")


class ContactOut(BaseModel):
    mobile: str | None = None
    email: str | None = None
    masked: bool = True
    unreachable: bool = False
    erased_at: dt.datetime | None = None


class ConsentOut(BaseModel):
    to_reminders: bool
    recorded_by: str | None = None
    recorded_at: dt.datetime | None = None
    wording_version: str | None = None
    withdrawn_at: dt.datetime | None = None
    withdrawn_by: str | None = None


class HistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    by: str
    action: str
    from_status: str | None
    from_stage: str | None
    to_status: str
    to_stage: str
    reason: str | None
    accompanied: bool | None


class ReminderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reminder_id: uuid.UUID
    kind: str
    channel: str
    due_at: dt.datetime | None
    status: str
    reason: str | None


class ReferralOut(BaseModel):
    id: uuid.UUID
    site_id: str
    meeting_slug: str
    fellowship: str
    planned_date: dt.date
    support: str
    client_reference: str
    status: str
    business_status: str
    accompanied: bool | None
    reminder_detail: str
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    ended_at: dt.datetime | None
    contact: ContactOut
    consent: ConsentOut
    allowed_transitions: list[str]


class ReferralDetailOut(ReferralOut):
    history: list[HistoryOut]
    reminders: list[ReminderOut]


class ReferralPage(BaseModel):
    items: list[ReferralOut]
    total: int
    limit: int
    offset: int


class ConsentWordingOut(BaseModel):
    version: str
    text: str
    current: bool


class ConsentWordingList(BaseModel):
    current: str
    versions: list[ConsentWordingOut]


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    actor: str = Field(description="The staff member's subject (from their sign-in), or system:...")
    actor_role: str | None
    site_id: str
    referral_id: uuid.UUID
    action: str = Field(description="contact_viewed, created, transition, consent_withdrawn, contact_unreachable, "
                                    "contact_erased")
    detail: str | None = Field(description="What: the fields viewed or the stages; never a value or a reason")
    via: str = Field(description="api, desk, staff (a change) or system")


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    total: int
    limit: int
    offset: int
