"""JSON logs (structlog) that never carry personal data.

Keys that can hold contact details are dropped, and phone numbers or email addresses
that slip into any string are masked before a line is written.
"""

from __future__ import annotations

import logging
import os
import re
import sys

import structlog

SENSITIVE_KEYS = {
    "phone", "mobile", "phone_number", "email", "email_address", "contact", "to", "recipient",
    "password", "token", "authorization", "secret", "body", "content", "personalisation",
}
# "@" also URL-encoded (a query string in an access log).
EMAIL_RE = re.compile(r"[\w.+%-]+(?:@|%40)[\w-]+\.[\w.-]+")
# UK numbers however written: 07812 345678, +44 7812 345678, 0044 7812..., +44 (0)7812...,
# %2B44... (URL-encoded), and a bare 7812345678 (a mobile without its 0).
PHONE_RE = re.compile(
    r"(?<![\w-])(?:(?:\+|%2[bB]|00)\s?44[\s-]?(?:\(0\)[\s-]?)?|0)(?:\d[\s-]?){9,10}(?!\d)"
    r"|(?<![\w-])7(?:\d[\s-]?){8}\d(?!\d)")


def scrub_text(value: str) -> str:
    return PHONE_RE.sub("[phone]", EMAIL_RE.sub("[email]", value))


def scrub(_logger, _name, event_dict: dict) -> dict:
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], str):
            event_dict[key] = scrub_text(event_dict[key])
    return event_dict


_configured = False

SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    scrub,
]


def json_formatter() -> logging.Formatter:
    """Renders structlog and plain stdlib records alike as scrubbed JSON lines."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED_PROCESSORS,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
    )


def configure_logging(level: str | None = None) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    level = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Uvicorn and Celery set up their own plain-text handlers: route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        logger = logging.getLogger(name)
        if name == "uvicorn.access" and not logger.handlers and not logger.propagate:
            continue  # `uvicorn --no-access-log` turned it off: it stays off
        logger.handlers[:] = []
        logger.propagate = True
