"""Errors a user can cause.

Every failure a user can trigger raises a subclass of :class:`GencraftError` whose
message names the file, field or parameter and says what to do. The CLI prints the
message on one line and exits 2; the server turns it into an OpenAI-style 4xx JSON
error (``status`` and ``param`` tell it how).
"""

from __future__ import annotations


class GencraftError(Exception):
    """Base class of every error a user can cause. ``str(err)`` is the one-line message."""

    status: int = 400  # HTTP status the server answers with
    code: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def __str__(self) -> str:  # always one line, whatever the message held
        return " ".join(super().__str__().split())


class UsageError(GencraftError):
    """A bad option, parameter or override (``--set key=value``, ``top_p=2``...)."""


class ConfigError(UsageError):
    """A configuration field that is unknown or has a value of the wrong type."""


class DataError(GencraftError):
    """Input data that cannot be read or used: a binary file, an undecodable file, an empty corpus."""


class NotFoundError(GencraftError):
    """A dataset, run, model or file that does not exist."""

    status = 404
    code = "model_not_found"


class RunError(GencraftError):
    """A run directory that is incomplete, corrupted or of an unknown format."""


class GuardError(GencraftError):
    """A generation refused by policy (moderation block, copy risk, strict licenses)."""

    code = "content_policy_violation"


class TrainingDiverged(GencraftError):
    """Training produced NaN/inf or diverged; the last good checkpoint is kept."""
