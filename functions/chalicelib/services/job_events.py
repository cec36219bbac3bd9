"""Job lifecycle events for other systems (EventBridge when EVENT_BUS_NAME is set)."""

from __future__ import annotations

from chalicelib.domain.models import Job
from chalicelib.services.deps import Dependencies


def job_summary(deps: Dependencies, job: Job) -> dict[str, object]:
    """What the webhook's `data` and the events' `detail` say about a job."""
    return {
        "requestId": job.request_id,
        "status": str(job.status),
        "progress": job.progress.to_dict(),
        "outputCsvUrl": deps.output_csv_url(job.request_id) if job.output_csv_key else None,
        "errors": job.errors,
        "source": {"bucket": deps.settings.uploads_bucket, "key": job.input_key},
    }


def publish_job_event(deps: Dependencies, job: Job, detail_type: str) -> None:
    detail = job_summary(deps, job)
    detail["generation"] = job.generation
    deps.events.publish(detail_type, detail)
