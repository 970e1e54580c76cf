"""The kinds of reminder message, each with its timing, how its wording names the time, its
generic wording and its priority: the one place planning, the send-time clock, wording, the
hourly cap and the cancelled-meeting notice read them. The kind names and the desk's labels
are part of the event contract (shared/events.py REMINDER_KIND_LABELS)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import REMINDER_KIND_LABELS

# timing: when a kind may go out (docs/REMINDER-TIMING.md)
BEFORE = "before"  # before the meeting: too late once it is near; dropped by the hourly cap if it cannot go before it
AFTER = "after"  # the follow-up: not before the meeting has ended
NOTICE = "notice"  # a change to the meeting: like a reminder before it
CONFIRMATION = "confirmation"  # who will text and how to stop: whenever it arrives, but not in quiet hours
ANSWER = "answer"  # an answer to the client's own text: at once, whatever the hour

# when: how the wording names the meeting's time
DATE_TIME, TODAY_OR_DATE_TIME, DATE = "date_time", "today_or_date_time", "date"


@dataclass(frozen=True)
class Kind:
    name: str
    timing: str
    when: str
    generic_body: str  # built in, never a deployment's file: what a client gets when nothing else may be sent
    generic_subject: str = "Reminder: {when}"
    planned_priority: int | None = None  # planned at referral, in this order under the daily cap
    despite_cancellation: bool = False  # goes out though the referral's reminders are cancelled

    @property
    def label(self) -> str:
        return REMINDER_KIND_LABELS[self.name]


KINDS = {kind.name: kind for kind in (
    Kind("day_before", BEFORE, DATE_TIME, "Reminder: your meeting is tomorrow, {when}.", planned_priority=2),
    Kind("hours_before", BEFORE, TODAY_OR_DATE_TIME, "Reminder: your meeting starts {when}.", planned_priority=1),
    Kind("follow_up", AFTER, DATE, "How did it go on {when}? Did you get there? Reply YES or NO. Your keyworker would "
                                   "be glad to hear from you.", "How did it go?", planned_priority=3),
    Kind("confirmation", CONFIRMATION, DATE_TIME, "Hello from {sender}. Your keyworker asked us to text you reminders "
                                                  "about your meeting on {when}. Reply HELP for help.",
         "Reminders about your meeting on {when}"),
    Kind("reply_ack", ANSWER, DATE, "Thank you. Your message has been passed to your keyworker."),
    Kind("help", ANSWER, DATE, "These texts are from {sender}, sent for your keyworker about your meeting. For "
                               "anything else, contact your keyworker."),
    Kind("opted_in", ANSWER, DATE, "You will get reminders about your meeting again."),
    Kind("meeting_moved", NOTICE, DATE_TIME, "Change: your meeting has moved from {previous_when} to {when}.",
         "Changed: now {when}"),
    Kind("meeting_cancelled", NOTICE, DATE_TIME, "Cancelled: your meeting on {when} will not take place. Your "
                                                 "keyworker can help you find another.", "Cancelled: {when}",
         despite_cancellation=True),
)}
assert KINDS.keys() == REMINDER_KIND_LABELS.keys(), "every kind of the contract has its timing and wording here"

# The kinds planned at referral, in priority order for the daily cap.
PLANNED = tuple(sorted((k.name for k in KINDS.values() if k.planned_priority), key=lambda n: KINDS[n].planned_priority))
ANSWERS = tuple(k.name for k in KINDS.values() if k.timing == ANSWER)
BEFORE_MEETING = tuple(k.name for k in KINDS.values() if k.timing == BEFORE)
FOLLOW_UP = "follow_up"
MEETING_CANCELLED = "meeting_cancelled"
CONFIRMATION_KIND = "confirmation"
