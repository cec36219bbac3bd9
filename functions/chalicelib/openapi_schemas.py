"""The OpenAPI document's shapes: its `components/schemas`, and the parts its routes share
(the output options, a job's progress and summary). The routes are in openapi.py."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.models import ImageErrorCode, JobStatus, RowStatus
from chalicelib.domain.output_options import (
    AUTO,
    DEFAULT_QUALITY,
    DEFAULT_TARGET_SCORE,
    MAX_DIMENSION,
    MAX_TARGET_SCORE,
    MIN_TARGET_SCORE,
    OutputFormat,
)

ERROR = {"$ref": "#/components/schemas/Error"}

# The output options of both upload routes (multipart fields, or the JSON keys of /api/uploads)
OPTIONS_FIELDS: dict[str, Any] = {
    "format": {
        "type": "string",
        "enum": [f.value for f in OutputFormat],
        "default": "jpeg",
        "description": "Output format (`jpg` is read as `jpeg`)",
    },
    "quality": {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 100},
            {"type": "string", "enum": [AUTO]},
        ],
        "description": "Encoder quality, or `auto`: per image, the smallest output whose "
        "SSIMULACRA2 score against the source reaches `targetScore`; default "
        + ", ".join(
            [f"{OutputFormat.JPEG.value} 50 (OUTPUT_QUALITY)"]
            + [f"{fmt.value} {quality}" for fmt, quality in DEFAULT_QUALITY.items()]
        ),
    },
    "targetScore": {
        "type": "number",
        "minimum": MIN_TARGET_SCORE,
        "maximum": MAX_TARGET_SCORE,
        "description": f"The SSIMULACRA2 score `auto` aims at (default {DEFAULT_TARGET_SCORE}; "
        "30 low, 50 medium, 70 high, 90 visually lossless); only with `quality: auto`",
    },
    "maxWidth": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_DIMENSION,
        "description": "The output fits this width, its aspect kept; never enlarged",
    },
    "maxHeight": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_DIMENSION,
        "description": "The output fits this height, its aspect kept; never enlarged",
    },
}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with null allowed (OpenAPI 3.0: `nullable` on each typed alternative)."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [{**part, "nullable": True} for part in schema["anyOf"]]}
    return {**schema, "nullable": True}


OPTIONS = {
    "type": "object",
    "description": "The job's output options (null: the format's default, or no bound; "
    "`targetScore` only for `quality: auto`)",
    "properties": {
        name: _nullable(schema) if name != "format" else schema
        for name, schema in OPTIONS_FIELDS.items()
    },
}
PROGRESS = {
    "type": "object",
    "properties": {
        name: {"type": "integer", "minimum": 0}
        for name in (
            "totalProducts",
            "processedProducts",
            "totalImages",
            "processedImages",
            "failedImages",
            "bytesIn",
            "bytesOut",
        )
    }
    | {"percent": {"type": "number", "minimum": 0, "maximum": 100}},
}
STATUSES = [str(s) for s in JobStatus]
PRODUCT_STATUSES = [str(s) for s in RowStatus]
IMAGE_ERROR_CODES = [str(c) for c in ImageErrorCode]
# What a listing shows of a job (GET /api/jobs), and how its status begins.
JOB_SUMMARY = {
    "requestId": {"type": "string", "format": "uuid"},
    "status": {"type": "string", "enum": STATUSES},
    "createdAt": {"type": "string", "format": "date-time"},
    "updatedAt": {"type": "string", "format": "date-time"},
    "progress": PROGRESS,
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "details"],
        "properties": {
            "error": {"type": "string"},
            "details": {"type": "array", "items": {}},
        },
    },
    "Accepted": {
        "type": "object",
        "properties": {
            "requestId": {"type": "string", "format": "uuid"},
            "message": {"type": "string"},
            "statusUrl": {"type": "string"},
        },
    },
    "PresignedUpload": {
        "type": "object",
        "properties": {
            "requestId": {"type": "string", "format": "uuid"},
            "upload": {
                "type": "object",
                "properties": {
                    "url": {"type": "string"},
                    "fields": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "expiresIn": {"type": "integer"},
            "statusUrl": {"type": "string"},
        },
    },
    "Status": {
        "type": "object",
        "properties": {
            **JOB_SUMMARY,
            "products": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Product"},
            },
            "nextCursor": {"type": "string", "nullable": True},
            "outputCsvUrl": {"type": "string", "nullable": True},
            "errors": {"type": "array", "items": {}},
            "webhook": {
                "type": "object",
                "properties": {
                    "state": {"type": "string"},
                    "attempts": {"type": "integer"},
                    "lastStatusCode": {"type": "integer", "nullable": True},
                    "id": {"type": "string", "nullable": True},
                    "nextAttemptAt": {"type": "string", "nullable": True},
                    "history": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "attempt": {"type": "integer"},
                                "at": {"type": "string"},
                                "statusCode": {"type": "integer", "nullable": True},
                                "error": {"type": "string"},
                                "durationMs": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "generation": {
                "type": "integer",
                "description": "How many times the failed images were retried",
            },
            "options": OPTIONS,
        },
    },
    "JobSummary": {
        "type": "object",
        "required": ["requestId", "status", "createdAt", "updatedAt", "progress"],
        "properties": JOB_SUMMARY,
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "nextCursor"],
        "properties": {
            "jobs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/JobSummary"},
            },
            "nextCursor": {
                "type": "string",
                "nullable": True,
                "description": "Pass as `cursor` for the next page; null at the end",
            },
        },
    },
    "Product": {
        "type": "object",
        "properties": {
            "serialNumber": {"type": "integer"},
            "productName": {"type": "string"},
            "inputImageUrls": {"type": "array", "items": {"type": "string"}},
            "outputImageUrls": {"type": "array", "items": {"type": "string"}},
            "status": {"type": "string", "enum": PRODUCT_STATUSES},
            "inputBytes": {"type": "array", "items": {"type": "integer"}},
            "outputBytes": {"type": "array", "items": {"type": "integer"}},
            "outputQualities": {
                "type": "array",
                "items": {"type": "integer", "nullable": True},
                "description": "`quality: auto` only: the quality chosen per image, aligned "
                "with `outputImageUrls` (null for an image that failed)",
            },
            "outputScores": {
                "type": "array",
                "items": {"type": "number", "nullable": True},
                "description": "`quality: auto` only: the SSIMULACRA2 score each output "
                "reached against its source, aligned with `outputImageUrls` (null for an "
                "image that failed)",
            },
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "code": {
                            "type": "string",
                            "enum": IMAGE_ERROR_CODES,
                            "description": "Why this image failed. Codes may be added: treat "
                            "an unknown one as a failure of that image",
                        },
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
}
