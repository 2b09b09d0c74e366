"""The server's own user-caused errors and the OpenAI-shaped error body.

Every :class:`~gencraft.errors.GencraftError` becomes ``{"error": {"message", "type", "param",
"code"}}`` with the error's ``status`` (one exception handler in :mod:`gencraft.server.app`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gencraft.errors import GencraftError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          503: "server_error", 504: "server_error"}


class Unauthenticated(GencraftError):
    """No API key, or one that is unknown or revoked."""

    status = 401
    code = "invalid_api_key"


class RateLimited(GencraftError):
    """This key (or client) sent requests faster than its rate limit."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after


class QueueFull(GencraftError):
    """The model's request queue is at its bound."""

    status = 429
    code = "queue_full"


class Overloaded(GencraftError):
    """The server cannot take the request now (waited too long in the queue, shutting down)."""

    status = 503
    code = "overloaded"


class PayloadTooLarge(GencraftError):
    status = 413
    code = "request_too_large"


def error_body(message: str, status: int, code: str | None, param: str | None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def gencraft_error_body(e: GencraftError) -> dict[str, Any]:
    return error_body(str(e), e.status, e.code, e.param)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, documented on every route of the OpenAPI schema."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "A request the server cannot honour: the message names the field."},
    "5XX": {"model": ErrorResponse, "description": "Overloaded or timed out (503, 504)."},
}
