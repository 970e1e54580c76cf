"""One way for the domain to refuse a request: raise a ``DomainError``; one handler answers it.

Each subclass says its HTTP status and body, so every service answers a refusal the same way
(and the body a client already reads stays as it is). Pages catch them to re-show a form."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class DomainError(Exception):
    """A request the domain refuses: answered with ``status_code`` and ``body()``."""

    status_code = 422

    def body(self) -> dict:
        return {"detail": str(self)}


class InvalidInput(DomainError, ValueError):
    """Input the caller must correct: 422 naming ``field`` (a ValueError, so pydantic validators may raise it)."""

    error_type = "invalid"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def error(self) -> dict:
        return {"field": self.field, "message": self.message, "type": self.error_type}

    def body(self) -> dict:
        return {"detail": f"{self.field or 'request'}: {self.message}", "errors": [self.error()]}


class NotFound(DomainError, LookupError):
    status_code = 404


class Conflict(DomainError, ValueError):
    """The request clashes with the current state (409)."""

    status_code = 409


class Forbidden(DomainError, PermissionError):
    status_code = 403


async def answer(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return JSONResponse(exc.body(), status_code=exc.status_code)


def register(app: FastAPI) -> None:
    """The one handler of domain refusals, registered by every service's app (shared/web.py make_app)."""
    app.add_exception_handler(DomainError, answer)
