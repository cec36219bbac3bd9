"""A rows queue message, read and written: `RowTask` (one row of a job: its images' URLs, the
job's options and owner) and what an earlier delivery kept (`Kept`), so that a row resumed in
a later invocation (a continuation) does not redo what is done. The ingest writes these
messages, the worker reads them, the dead-letter function records them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.domain.models import ImageErrorCode, ImageResult
from chalicelib.domain.output_options import OutputOptions
from chalicelib.errors import InvalidRequest


@dataclass(frozen=True)
class Kept:
    """An image finished in an earlier delivery of its row: a success of a retried row (its
    output reused, not redone), or either outcome carried by a continuation message."""

    key: str
    bytes_in: int = 0
    bytes_out: int = 0
    error_code: ImageErrorCode | None = None
    error_message: str = ""
    quality: int | None = None  # `auto`'s choice and the score it reached
    score: float | None = None

    @property
    def done(self) -> bool:
        return bool(self.key) or self.error_code is not None

    def result(self, url: str) -> ImageResult:
        return ImageResult(
            url,
            output_key=self.key,
            error_code=self.error_code,
            error_message=self.error_message,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            quality=self.quality,
            score=self.score,
        )

    @classmethod
    def of(cls, result: ImageResult) -> Kept:
        return cls(
            result.output_key,
            result.bytes_in,
            result.bytes_out,
            result.error_code,
            result.error_message,
            result.quality,
            result.score,
        )

    @classmethod
    def from_message(cls, item: Mapping[str, Any]) -> Kept:
        code = item.get("errorCode")
        quality, score = item.get("quality"), item.get("score")
        return cls(
            str(item.get("key", "")),
            int(item.get("bytesIn", 0)),
            int(item.get("bytesOut", 0)),
            ImageErrorCode(code) if code else None,
            str(item.get("errorMessage", "")),
            None if quality is None else int(quality),
            None if score is None else float(score),
        )

    def to_message(self) -> dict[str, object]:
        item: dict[str, object] = {
            "key": self.key,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
        }
        if self.error_code is not None:
            item["errorCode"] = str(self.error_code)
            item["errorMessage"] = self.error_message
        if self.quality is not None:
            item["quality"] = self.quality
        if self.score is not None:
            item["score"] = self.score
        return item


@dataclass(frozen=True)
class RowTask:
    request_id: str
    position: int
    serial: int
    urls: tuple[str, ...]
    keep: tuple[Kept, ...] = ()
    attempts: tuple[int, ...] = ()  # fetch attempts already spent, per image
    generation: int = 0
    redelivered: bool = False  # received before (SQS's ApproximateReceiveCount > 1)
    options: OutputOptions = field(default_factory=OutputOptions)  # the job's, in every message
    tenant: str = ""  # the job's owner ("": a message from before tenants; no reuse)

    def kept(self, index: int) -> Kept | None:
        if index < len(self.keep) and self.keep[index].done:
            return self.keep[index]
        return None

    def attempts_spent(self, index: int) -> int:
        return self.attempts[index] if index < len(self.attempts) else 0

    @classmethod
    def from_message(cls, body: Mapping[str, Any]) -> RowTask:
        try:
            urls = body["inputImageUrls"]
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise TypeError("inputImageUrls must be a list of strings")
            return cls(
                request_id=str(body["requestId"]),
                position=int(body["position"]),
                serial=int(body["serialNumber"]),
                urls=tuple(urls),
                keep=tuple(Kept.from_message(k) for k in body.get("keep", [])),
                attempts=tuple(int(n) for n in body.get("attempts", [])),
                generation=int(body.get("generation", 0)),
                options=OutputOptions.from_dict(body.get("options")),
                tenant=str(body.get("tenant", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidRequest(f"malformed row message: {exc}") from exc

    def to_message(self) -> dict[str, object]:
        """The row message's body (what `from_message` reads): the one place its shape is
        written, for the fan-out, a retry and a continuation alike."""
        message: dict[str, object] = {
            "requestId": self.request_id,
            "position": self.position,
            "serialNumber": self.serial,
            "inputImageUrls": list(self.urls),
            "generation": self.generation,
        }
        if not self.options.is_default:
            message["options"] = self.options.to_dict()
        if self.tenant:
            message["tenant"] = self.tenant
        if self.keep or any(self.attempts):
            message["keep"] = [k.to_message() for k in self.keep]
            message["attempts"] = [self.attempts_spent(i) for i in range(len(self.urls))]
        return message

    def continuation(
        self, done: Mapping[int, ImageResult], attempts: Mapping[int, int]
    ) -> dict[str, object]:
        """The message that resumes this row: what is done so far kept, image by image."""
        n = range(len(self.urls))
        keep = tuple(Kept.of(done[i]) if i in done else (self.kept(i) or Kept("")) for i in n)
        spent = tuple(attempts.get(i, self.attempts_spent(i)) for i in n)
        return replace(self, keep=keep, attempts=spent).to_message()
