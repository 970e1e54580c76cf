"""Reminder kinds have one owner: every kind of the event contract has its timing and wording here."""

from services.notifications import kinds, wording
from services.notifications.wording import BUILT_IN_TEMPLATES, generic_message
from shared.events import REMINDER_KIND_LABELS


def test_every_contract_kind_has_timing_wording_a_template_and_a_label():
    assert kinds.KINDS.keys() == REMINDER_KIND_LABELS.keys()
    for name, kind in kinds.KINDS.items():
        assert (BUILT_IN_TEMPLATES / f"{name}.txt").is_file(), name
        message = generic_message(kind=name, channel="sms", when="Tuesday 3 March at 7pm", previous_when="Monday")
        assert "{" not in message.body and wording.STOP_LINE in message.body, name
        assert kind.label == REMINDER_KIND_LABELS[name]


def test_planned_kinds_in_their_priority_order_and_answers_go_at_once():
    assert kinds.PLANNED == ("hours_before", "day_before", "follow_up")
    assert set(kinds.ANSWERS) == {"reply_ack", "help", "opted_in"}
    assert kinds.BEFORE_MEETING == ("day_before", "hours_before")
