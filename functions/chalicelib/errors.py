"""One base exception for the pipeline, narrow subclasses for what callers handle (the
domain's own, domain/errors.py, are on the same base)."""

from __future__ import annotations

from chalicelib.domain.errors import CsvInvalid, InvalidRequest, PipelineError
from chalicelib.domain.models import ImageErrorCode

# PipelineError, InvalidRequest and CsvInvalid are the domain's (a CSV's validation raises
# them); imported here so that every error of the pipeline is found in this one module.
__all__ = [
    "Conflict",
    "CsvInvalid",
    "ImageFailure",
    "InvalidRequest",
    "JobGone",
    "NotFound",
    "PayloadTooLarge",
    "PipelineError",
    "TooManyRequests",
    "TransientError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
]


class PayloadTooLarge(InvalidRequest):
    """HTTP 413."""


class UnsupportedMediaType(InvalidRequest):
    """HTTP 415."""


class NotFound(PipelineError):
    """HTTP 404."""


class JobGone(NotFound):
    """The job a message is about no longer exists (deleted, or expired by retention): the
    message is let go (acknowledged and counted, never a failure)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"job {request_id} does not exist")
        self.request_id = request_id


class Conflict(PipelineError):
    """HTTP 409."""


class Unauthorized(PipelineError):
    """HTTP 401: no valid API key."""


class TooManyRequests(PipelineError):
    """HTTP 429, with when to try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class Unavailable(PipelineError):
    """HTTP 503: a dependency refused for now; asking again after `retry_after` seconds may
    succeed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ImageFailure(PipelineError):
    """One image could not be turned into an output; carries the contract's error code."""

    def __init__(self, code: ImageErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


class TransientError(PipelineError):
    """A dependency failed in a way that a retry may fix (the message goes back to the queue)."""
