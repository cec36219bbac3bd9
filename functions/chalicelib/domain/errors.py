"""The errors the domain raises itself: a refused CSV (`CsvInvalid`, raised by csv_input.py)
and its bases. chalicelib/errors.py holds every other error of the pipeline, on these bases;
a bad output option is output_options.InvalidOptions."""

from __future__ import annotations

from chalicelib.domain.models import CsvProblem


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class InvalidRequest(PipelineError):
    """The client sent something we refuse (HTTP 400)."""

    def __init__(self, message: str, details: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class CsvInvalid(InvalidRequest):
    """A CSV failed validation; `problems` lists every problem found."""

    def __init__(self, problems: list[CsvProblem]) -> None:
        super().__init__(
            f"CSV is invalid: {len(problems)} problem(s) found",
            [p.to_dict() for p in problems],
        )
        self.problems = problems
