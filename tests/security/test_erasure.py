"""Erasure erases: after every erasure path, no copy of the contact anywhere that a key opens.

Real Postgres, Redis and Celery workers (referrals, notifications, directory, the sender and
the schedulers). Four referrals, each with its own mobile and email and a text the client sent
back (which reaches the desk), each erased a different way: consent withdrawn at the desk, STOP
replied by text, entered in error, ended and then purged after the retention period. Each had a
reminder really sent (the dev provider keeps what it sent). Then every column of every table of
the three databases and every Redis key of this run is read, every Fernet token found is opened
with every key any service holds (at-rest field keys and contact transit keys), and nothing may
show the mobile (in any of its forms), the email or the client's words. The scan is shown to
work by finding planted sealed copies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select, text, update

from services.directory.api import app as directory_app
from services.directory.runtime import runtime as directory
from services.notifications.api import app as notifications_app
from services.notifications.models import DevMessage, ReferralContact, Reminder
from services.notifications.models import meeting_replica as notifications_replica
from services.notifications.runtime import runtime as notifications
from services.referrals.api import app as referrals_app
from services.referrals.models import ClientReply, Referral
from services.referrals.models import meeting_replica as referrals_replica
from services.referrals.runtime import runtime as referrals
from shared.crypto import FieldCipher
from shared.events import ContactDetails, utcnow
from shared.meeting_time import meeting_guide_weekday
from tests.support.auth import auth
from tests.support.pii_scan import scan_text
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state")

KEYWORKER = auth("keyworker", "croydon")
# No quiet hours (start == end), so the forced reminders go whatever the time of the test run.
ENV = {"NOTIFICATIONS_QUIET_START": "00:00", "NOTIFICATIONS_QUIET_END": "00:00", "NOTIFICATIONS_DISPATCH_SECONDS": "0.5",
       "REFERRALS_ERASURE_INTERVAL_SECONDS": "1",
       # Delivered events are not confirmed (and so not cleared) during the test: the erasure itself
       # must clear the sealed contact from the outbox.
       "OUTBOX_RESEND_SECONDS": "3600"}
MEETING = {
    "slug": "croydon-smart-tuesday", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 2,
    "time": "14:00", "end_time": "15:30", "types": ["O"], "attendance_option": "in_person",
    "location": "Community Recovery Hub", "postcode": "CR0", "latitude": 51.372, "longitude": -0.074,
    "site_id": "croydon",
}
PATHS = ("consent withdrawn", "STOP", "entered in error", "retention purge")
CONTACTS = {path: (f"07812 345{611 + i}", f"client.{611 + i}@example.org") for i, path in enumerate(PATHS)}
# What each client texts back before erasure: their words must go with their contact details.
REPLIES = {path: f"Words of the {path} client about the side door" for path in PATHS}
NOTIFY = {"Authorization": f"Bearer {notifications.settings.callback_token}"}
FERNET = re.compile(r"gAAAAA[A-Za-z0-9_\-]+=*")
BASE64 = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


# --- the scan -------------------------------------------------------------------------------

def all_keys() -> list[str]:
    """Every Fernet key any service holds: the at-rest field keys and the contact transit keys."""
    keys = set()
    for runtime in (directory, referrals, notifications):
        keys.update(k.strip() for k in runtime.settings.encryption_keys.split(","))
        keys.update(k.strip() for k in getattr(runtime.settings, "contact_transit_keys", "").split(",") if k.strip())
    return sorted(keys)


def opened(blob: str, ciphers: list[FieldCipher], depth: int = 0) -> str:
    """``blob`` with everything inside it made readable: Fernet tokens opened with every key,
    base64 (as Celery messages carry their bodies) decoded, again inside what that reveals."""
    if depth > 4:
        return blob
    found = []
    for token in set(FERNET.findall(blob)):
        for cipher in ciphers:
            try:
                found.append(cipher.decrypt(token))
            except ValueError:
                continue
    for chunk in set(BASE64.findall(blob)):
        try:
            found.append(base64.b64decode(chunk, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            continue
    return blob + "".join(" " + opened(f, ciphers, depth + 1) for f in found)


def scan(contacts: list[str], *, extra_redis_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Every place (database table column, Redis key) where a contact can be read."""
    ciphers = [FieldCipher(k) for k in all_keys()]
    hits = []
    for runtime in (directory, referrals, notifications):
        with runtime.engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                if table == "alembic_version":
                    continue
                for row in conn.execute(text(f'SELECT * FROM "{table}"')).mappings():
                    for column, value in row.items():
                        if value is None:
                            continue
                        raw = json.dumps(value) if isinstance(value, dict | list) else str(value)
                        hits += scan_text(f"{runtime.name}.{table}.{column}", opened(raw, ciphers), contacts)
    client = referrals.redis
    prefix = referrals.settings.redis_key_prefix
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        kind = client.type(key).decode()
        values = {"string": lambda: [client.get(key)], "list": lambda: client.lrange(key, 0, -1),
                  "hash": lambda: [*client.hgetall(key).keys(), *client.hgetall(key).values()],
                  "set": lambda: list(client.smembers(key)), "zset": lambda: client.zrange(key, 0, -1)}.get(kind, list)()
        blob = " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values)
        hits += scan_text(f"redis {key.decode()}", opened(f"{key.decode()} {blob}", ciphers), contacts)
    return hits


# --- the stack --------------------------------------------------------------------------------

def next_tuesday() -> dt.date:
    start = utcnow().date() + dt.timedelta(days=7)
    return next(start + dt.timedelta(days=i) for i in range(7) if meeting_guide_weekday(start + dt.timedelta(days=i)) == 2)


def replica_ready() -> bool:
    for runtime, table in ((referrals, referrals_replica), (notifications, notifications_replica)):
        with runtime.sessions() as session:
            if session.scalar(select(func.count()).select_from(table)) != 1:
                return False
    return True


def reminders_planned(referral_ids: list[str]) -> bool:
    with notifications.sessions() as session:
        planned = set(session.scalars(select(Reminder.referral_id).distinct()))
    return {uuid.UUID(i) for i in referral_ids} <= planned


def force_one_reminder_due(referral_ids: list[str]) -> None:
    """One reminder of each referral due now, so the dispatcher and the sender really send it."""
    with notifications.transaction() as session:
        for referral_id in referral_ids:
            first = session.scalar(select(Reminder.id).where(Reminder.referral_id == uuid.UUID(referral_id))
                                   .order_by(Reminder.due_at).limit(1))
            session.execute(update(Reminder).where(Reminder.id == first).values(due_at=utcnow()))


def dev_messages() -> int:
    with notifications.sessions() as session:
        return session.scalar(select(func.count()).select_from(DevMessage))


def replies_kept() -> int:
    with referrals.sessions() as session:
        return session.scalar(select(func.count()).select_from(ClientReply).where(ClientReply.text.is_not(None)))


def all_erased(referral_ids: list[str]) -> bool:
    ids = [uuid.UUID(i) for i in referral_ids]
    with referrals.sessions() as session:
        erased = session.scalars(select(Referral.contact_erased_at).where(Referral.id.in_(ids))).all()
    with notifications.sessions() as session:
        contacts = session.scalars(select(ReferralContact.contact).where(ReferralContact.referral_id.in_(ids))).all()
        recipients = session.scalars(select(DevMessage.recipient)).all()
    return (len(erased) == len(ids) and all(erased) and len(contacts) == len(ids) and not any(contacts)
            and recipients and all(r == "(erased)" for r in recipients) and replies_kept() == 0)


def test_every_erasure_path_leaves_no_decryptable_copy_anywhere(processes):
    workers = [processes.worker("referrals", env=ENV), processes.worker("notifications", env=ENV),
               processes.worker("directory", env=ENV),
               processes.worker("notifications", ["notifications.send"], env=ENV),
               processes.scheduler("referrals", env=ENV), processes.scheduler("notifications", env=ENV)]
    assert TestClient(directory_app).post("/meetings", json=MEETING, headers=auth("admin")).status_code == 201
    wait_for(replica_ready, timeout=120, what="the meeting in both replicas")

    desk = TestClient(referrals_app)
    ids = {}
    for path, (mobile, email) in CONTACTS.items():
        body = {"meeting_slug": MEETING["slug"], "support": "accompanied_by_peer", "client_reference": "CRY-0042",
                "mobile": mobile, "email": email, "consent": {"to_reminders": True, "wording_version": "2025-01"},
                "reminder_detail": "discreet", "planned_date": next_tuesday().isoformat()}
        response = desk.post("/referrals", json=body, headers=KEYWORKER)
        assert response.status_code == 201, response.text
        ids[path] = response.json()["id"]
    wait_for(lambda: reminders_planned(list(ids.values())), timeout=120, what="reminders planned for each referral")
    force_one_reminder_due(list(ids.values()))
    wait_for(lambda: dev_messages() >= len(ids), timeout=120, what="a reminder really sent to each client")
    # Each client texts back: their words reach the desk (and are acknowledged by text).
    callbacks = TestClient(notifications_app)
    for path, words in REPLIES.items():
        answer = callbacks.post("/callbacks/inbound-sms", headers=NOTIFY, json={
            "id": str(uuid.uuid4()), "source_number": "44" + CONTACTS[path][0].replace(" ", "")[1:],
            "destination_number": "07700900000", "message": words, "date_received": "2026-11-21T10:00:00.000000Z"})
        assert answer.json() == {"outcome": "reply passed on"}, path
    wait_for(lambda: replies_kept() == len(ids), timeout=120, what="each reply on the desk")
    wait_for(lambda: dev_messages() >= 2 * len(ids), timeout=120, what="each reply acknowledged")
    secrets = [v for pair in CONTACTS.values() for v in pair] + list(REPLIES.values())
    assert scan(secrets), "before erasure the scan must find the contacts (else it proves nothing)"
    assert scan(list(REPLIES.values())), "before erasure the scan must find the replies (else it proves nothing)"

    # Every erasure path, each on its own referral.
    withdrawn = desk.post(f"/referrals/{ids['consent withdrawn']}/consent-withdrawal", headers=KEYWORKER)
    assert withdrawn.status_code == 200, withdrawn.text
    stop = {"id": str(uuid.uuid4()), "source_number": "44" + CONTACTS["STOP"][0].replace(" ", "")[1:],
            "destination_number": "07700900000", "message": "STOP", "date_received": "2026-11-21T10:00:00.000000Z"}
    inbound = TestClient(notifications_app).post("/callbacks/inbound-sms", json=stop, headers=NOTIFY)
    assert inbound.json() == {"outcome": "opted out"}
    in_error = desk.post(f"/referrals/{ids['entered in error']}/transitions", json={"to": "entered-in-error"},
                         headers=KEYWORKER)
    assert in_error.status_code == 200, in_error.text
    declined = desk.post(f"/referrals/{ids['retention purge']}/transitions",
                         json={"to": "declined", "reason": "moved away"}, headers=KEYWORKER)
    assert declined.status_code == 200, declined.text
    with referrals.transaction() as session:  # ended longer ago than the retention period
        session.execute(update(Referral).where(Referral.id == uuid.UUID(ids["retention purge"]))
                        .values(ended_at=utcnow() - dt.timedelta(days=referrals.settings.retention_days + 1)))

    wait_for(lambda: all_erased(list(ids.values())), timeout=180, what="every service to erase every contact")
    # Within one sweep interval (the workers may still be finishing): then nothing, anywhere.
    left = scan(secrets)
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = scan(secrets)
    assert left == []
    for path in PATHS:
        shown = desk.get(f"/referrals/{ids[path]}", headers=KEYWORKER).json()["contact"]
        assert (shown["mobile"], shown["email"]) == (None, None) and shown["erased_at"], path
    for worker in workers:  # and never in a log line
        assert scan_text(worker.name, worker.log(), secrets) == [], worker.name

    # The scan finds a sealed copy wherever one is left: a transit-sealed contact in a database
    # row, an at-rest-encrypted one inside a base64 Celery-like message in Redis.
    mobile, email = CONTACTS["STOP"]
    sealed = ContactDetails(mobile="+44" + mobile.replace(" ", "")[1:], email=email).seal(
        FieldCipher(referrals.settings.contact_transit_keys))
    with directory.transaction() as session:
        session.execute(directory.outbox_table.insert().values(
            event_id=uuid.uuid4(), event_type="referral.created", subscriber="notifications",
            body={"payload": {"contact_ciphertext": sealed}}, created_at=utcnow(), attempts=0))
    at_rest = FieldCipher(notifications.settings.encryption_keys).encrypt(email)
    message = json.dumps({"body": base64.b64encode(json.dumps([[{"recipient": at_rest}], {}, {}]).encode()).decode()})
    planted_key = f"{referrals.settings.redis_key_prefix}planted"
    referrals.redis.lpush(planted_key, message)
    hits = scan(secrets)
    assert any(h.startswith("directory.outbox.body") for h in hits), hits
    assert any(h.startswith(f"redis {planted_key}") and email in h for h in hits), hits
