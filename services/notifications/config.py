from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_HASH_KEY, DEV_TRANSIT_KEY, ServiceSettings, common, secret_problems

DEV_CALLBACK_TOKEN = "dev-only-callback-token-change-me"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./var/notifications.db"
    port: int = 8003
    # Keys sealing contact details inside events; held only by referrals and notifications.
    contact_transit_keys: str = common("CONTACT_TRANSIT_KEYS", DEV_TRANSIT_KEY)
    # Key of the keyed hash that identifies opted-out numbers without storing them.
    hash_key: str = DEV_HASH_KEY

    # Planning (local wall-clock times in the meeting's timezone).
    day_before_time: str = "18:00"
    hours_before: float = 2.0
    follow_up_days: int = 1
    follow_up_time: str = "10:00"
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    # Checked again at send time: a reminder before a meeting (day-before, hours-before, a
    # change notice) is not sent later than this many minutes before the start.
    send_margin_minutes: float = Field(default=30.0, ge=0)
    # How long a meeting is taken to last when its feed gives no end time (a follow-up waits).
    meeting_minutes: int = Field(default=90, ge=1)
    # Planned reminders per contact per local day (change notices are always sent).
    daily_cap: int = 3
    # Messages per number (or address) per rolling hour, checked at send time.
    hourly_cap: int = 4
    # The confirmation at referral goes this long after the referral (a wrong number can still be
    # corrected: the referral entered in error cancels it), and never in quiet hours.
    confirmation_delay_minutes: float = Field(default=5.0, ge=0, le=120)
    confirmation_at_referral: bool = True  # off: the first message a client gets is the first reminder
    # Who the confirmation and HELP texts say is texting (discreet: no service or fellowship name).
    sender_name: str = Field(default="FAMA reminders", min_length=1, max_length=40)
    # A folder whose template files replace the built-in ones of the same name.
    templates_dir: str | None = None

    # Providers: "dev" records messages in the database for GET /outbox.
    sms_provider: Literal["dev", "notify"] = "dev"
    email_provider: Literal["dev", "notify", "smtp"] = "dev"
    notify_api_key: str | None = None
    notify_base_url: str = "https://api.notifications.service.gov.uk"
    # GOV.UK Notify templates with ((body)) (and ((subject)) for email) placeholders.
    notify_sms_template_id: str | None = None
    notify_email_template_id: str | None = None
    notify_sms_sender_id: str | None = None
    notify_timeout_seconds: float = 20.0
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "FAMA reminders <reminders@fama.invalid>"
    smtp_timeout_seconds: float = 20.0
    # Seconds the dev provider waits before recording (to test a crash mid-send).
    dev_send_delay_seconds: float = 0.0

    # Sending.
    rate_limit_per_minute: int = 3000  # shared by all send workers; 0 = no limit
    rate_burst: int = 5
    dispatch_seconds: float = 1.0
    dispatch_batch: int = 1000
    # Reminders per send task: a burst (every evening-before reminder is due at 18:00) costs
    # one broker message per chunk, not per reminder. 1 = one task per reminder.
    send_chunk: int = Field(default=10, ge=1, le=100)
    sweep_seconds: float = 30.0
    # A row in "sending" this long is presumed abandoned by a dead worker.
    sending_stale_seconds: float = 120.0
    # A row "queued" this long lost its task (e.g. the broker dropped it).
    queued_stale_seconds: float = 600.0
    max_send_attempts: int = 5
    retry_base_seconds: float = 5.0

    # Bearer token GOV.UK Notify sends with its delivery and inbound callbacks.
    callback_token: str = DEV_CALLBACK_TOKEN

    def production_problems(self) -> list[str]:
        problems = super().production_problems() + self.transit_key_problems(self.contact_transit_keys)
        problems += secret_problems(self.env_name("callback_token"), self.callback_token,
                                    dev_value=DEV_CALLBACK_TOKEN)
        problems += secret_problems(self.env_name("hash_key"), self.hash_key)
        for env, provider in (("NOTIFICATIONS_SMS_PROVIDER", self.sms_provider),
                              ("NOTIFICATIONS_EMAIL_PROVIDER", self.email_provider)):
            if provider == "dev":
                problems.append(f"{env} is the development provider, which sends nothing; use notify"
                                + (" or smtp" if "EMAIL" in env else ""))
        if "notify" in (self.sms_provider, self.email_provider) and not self.notify_api_key:
            problems.append("NOTIFICATIONS_NOTIFY_API_KEY is not set, and a provider is notify")
        return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
