"""Getting jobs to their end whatever died on the way: the sweeper and its repairs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta

from chalicelib.domain.budget import Budget
from chalicelib.domain.models import CsvProblem, Job, JobStatus
from chalicelib.domain.timefmt import parse_iso
from chalicelib.services.cancel import complete_cancel
from chalicelib.services.deps import Dependencies
from chalicelib.services.finalize import fail_job
from chalicelib.services.ingest import fan_out, resume_ingest
from chalicelib.services.row_records import request_finalization
from chalicelib.services.webhooks import queue_attempt

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What one sweep did, by job id."""

    ingests: list[str] = field(default_factory=list)
    recounted: list[str] = field(default_factory=list)
    finalizations: list[str] = field(default_factory=list)
    resent_rows: list[str] = field(default_factory=list)
    expired_uploads: list[str] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}


def sweep(deps: Dependencies, budget: Budget | None = None) -> SweepReport:
    """Repair every job that stopped moving for STALL_AFTER seconds. Each repair is a step the
    pipeline would have taken anyway, so running it while the job is alive changes nothing.

    STALL_AFTER is longer than a row message can be out of sight (the rows queue's
    visibility timeout plus the worker's Timeout), so rows whose batch is still in flight
    are never sent again. What does not fit in `budget` waits for the next sweep."""
    budget = budget or Budget.unlimited()
    now = deps.clock.now()
    stall = timedelta(seconds=deps.settings.stall_after)
    limit = deps.settings.sweep_limit
    report = SweepReport()
    for job in deps.store.find_stalled(now - stall, limit):
        if budget.expired:
            log.info("sweeper: out of time; the rest waits for the next sweep")
            return report
        try:
            _repair(deps, job, report, budget)
        except Exception:
            log.exception("sweeper: job %s could not be repaired this time", job.request_id)
    for job in deps.store.find_webhooks_due(now - stall, limit):
        if budget.expired:
            break
        _resend_webhook(deps, job, report)
    if any(report.to_dict().values()):
        log.info("sweeper: %s", report.to_dict())
    return report


def _repair(deps: Dependencies, job: Job, report: SweepReport, budget: Budget) -> None:
    if job.cancelling:  # its cancel was asked for and never carried out: not revived
        if complete_cancel(deps, job.request_id):
            report.cancelled.append(job.request_id)
        return
    if job.status == JobStatus.PENDING:
        _repair_pending(deps, job, report, budget)
        return
    if not job.fanout_done:
        if resume_ingest(deps, job.request_id, budget):
            report.ingests.append(job.request_id)
        return
    progress = deps.store.recount(job.request_id, deps.clock.now())
    report.recounted.append(job.request_id)
    if progress is None:
        return
    if progress.every_row_recorded:
        if request_finalization(deps, job.request_id):
            report.finalizations.append(job.request_id)
        return
    # Rows still pending and nothing moved for a whole stall period: their messages may be
    # gone (a queue purged, a redrive lost). Sending them again is harmless.
    current = deps.store.get_job(job.request_id)
    if current is not None:
        fan_out(deps, replace(current, fanout_sent=0), budget)
        report.resent_rows.append(job.request_id)


def _repair_pending(deps: Dependencies, job: Job, report: SweepReport, budget: Budget) -> None:
    if deps.uploads.head(job.input_key) is not None:
        if resume_ingest(
            deps, job.request_id, budget
        ):  # the storage event never came, or its run died
            report.ingests.append(job.request_id)
        return
    waited = deps.clock.now() - parse_iso(job.created_at)
    allowed = timedelta(seconds=deps.settings.upload_url_ttl + deps.settings.stall_after)
    if waited > allowed:
        message = "no CSV arrived before the upload URL expired"
        fail_job(deps, job, [CsvProblem(1, None, message)])
        report.expired_uploads.append(job.request_id)


def _resend_webhook(deps: Dependencies, job: Job, report: SweepReport) -> None:
    """An attempt that was due long ago never ran (its message was lost or its run died).
    Only an attempt due STALL_AFTER ago is: `nextAttemptAt` is when the attempt is due, the
    end of its hops and of the receiver's Retry-After included, so a long delay is never cut
    short. The message is for after the attempts recorded: should the lost one turn up after
    all, whichever comes second is dropped."""
    now = deps.clock.now()
    deps.store.schedule_webhook(job.request_id, now + timedelta(seconds=deps.settings.stall_after))
    queue_attempt(deps, job, 1, now, recorded=job.webhook.attempts)
    report.webhooks.append(job.request_id)
