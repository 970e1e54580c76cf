"""API inputs and outputs. Callback bodies follow GOV.UK Notify's callback formats."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field

from shared.types import InputDateTime


class DeliveryCallbackIn(BaseModel):
    """GOV.UK Notify delivery receipt (docs: 'Delivery receipts')."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=100, description="Notify's notification id")
    reference: str | None = Field(None, max_length=100, description="Our reference: the reminder id")
    to: str | None = None
    status: str = Field(min_length=1, max_length=40)
    created_at: InputDateTime | None = None
    completed_at: InputDateTime | None = None
    sent_at: InputDateTime | None = None
    notification_type: str | None = None


class InboundSmsIn(BaseModel):
    """GOV.UK Notify received text message callback."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=100)
    source_number: str = Field(min_length=3, max_length=32)
    destination_number: str | None = None
    message: str = Field(max_length=2000)
    date_received: InputDateTime | None = None


class CallbackResult(BaseModel):
    outcome: str


class OutboxMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    reference: str
    channel: str
    recipient: str | None = Field(description="masked: 07*** ***678 (erased: null)")
    subject: str | None
    body: str
    created_at: dt.datetime


class ReminderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    referral_id: uuid.UUID
    kind: str
    channel: str
    meeting_start: dt.datetime
    due_at: dt.datetime
    status: str
    reason: str | None
    attempts: int
    sent_at: dt.datetime | None
    completed_at: dt.datetime | None
