"""The OpenAPI document's shapes: its `components/schemas`, and the parts its routes share
(the output options, a job's progress and summary). The routes are in openapi.py."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.models import ImageErrorCode, JobStatus, RowStatus
from chalicelib.domain.output_options import DEFAULT_QUALITY, MAX_DIMENSION, OutputFormat

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
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "Encoder quality; default "
        + ", ".join(
            [f"{OutputFormat.JPEG.value} 50 (OUTPUT_QUALITY)"]
            + [f"{fmt.value} {quality}" for fmt, quality in DEFAULT_QUALITY.items()]
        ),
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
OPTIONS = {
    "type": "object",
    "description": "The job's output options (null: the format's default, or no bound)",
    "properties": {
        name: {**schema, "nullable": True} if name != "format" else schema
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
