"""Background-job admin routes (SPEC §7.3), ServerAdmin only.

Listings read the job store (history, last runs) and the scheduler's read-only view (registered
jobs, what is running, next due times; no jobs before the scheduler has started). Trigger and
cancel are questions to the scheduler actor over its inbox, so 202/404/409 reflect what it
actually did; if it is not running, does not answer in time or is shutting down, the answer is
503 rather than a guess.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import trio
from pydantic import Field
from quart import Blueprint, Response, jsonify
from quart_schema import document_response, validate_querystring

from actors.jobs.base import JobSpec, Schedule
from actors.messages import CancelJob, TriggerJob, ask
from api.auth import requires
from api.bodies_admin import JobCancelled, JobHistory, JobInfo, JobList, JobTriggered
from api.context import root
from api.errors import ApiError
from api.openapi import answers
from api.schemas import Query, page_limit
from storage.jobs import JobRun, RunStatus
from storage.users import Permission

blueprint = Blueprint("jobs", __name__)
# The scheduler answers after one small database write; longer means it is stuck or stopping.
ASK_TIMEOUT_S = 10.0
HISTORY_DEFAULT, HISTORY_MAX = 20, 100
MAX_OFFSET = 1_000_000_000


class HistoryQuery(Query):
    limit: int | None = None
    # Bounded so a huge number is a 400, not an integer SQLite cannot bind.
    offset: int | None = Field(default=None, ge=0, le=MAX_OFFSET)


def rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_info(run: JobRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "started_at": rfc3339(run.started_at),
        "finished_at": rfc3339(run.finished_at),
        "status": run.status.value,
        "error_message": run.error_message,
        "triggered_by": run.triggered_by,
        "report": run.report,
    }


def schedule_info(schedule: Schedule) -> dict[str, Any]:
    info: dict[str, Any] = {"type": schedule.kind}
    if schedule.cron is not None:
        info["cron"] = schedule.cron
    if schedule.interval_secs is not None:
        secs = schedule.interval_secs
        info["interval_secs"] = int(secs) if float(secs).is_integer() else secs
    if schedule.hooks:
        info["hooks"] = [hook.value for hook in schedule.hooks]
    return info


def job_info(job: JobSpec, last_run: JobRun | None) -> dict[str, Any]:
    """JobInfo from the last run read from the store and the scheduler's state now. A run that
    ends between the two reads still shows as running (its end shows on the next read): a job is
    never reported idle while the run shown is still `running`."""
    view = root().scheduler.view
    running = view.running_run_id(job.id) is not None
    if last_run is not None and last_run.status is RunStatus.RUNNING:
        running = True
    return {
        "id": job.id,
        "name": job.name,
        "description": job.description,
        "schedule": schedule_info(job.schedule),
        "shutdown_behavior": job.shutdown.value,
        "is_running": running,
        "last_run": run_info(last_run) if last_run is not None else None,
        "next_run_at": rfc3339(view.next_run_at(job.id)),
    }


def _job(job_id: str) -> JobSpec:
    job = root().scheduler.view.job(job_id)
    if job is None:
        raise ApiError(404, f"unknown job {job_id!r}", "JOB_NOT_FOUND")
    return job


async def _ask(make: Any, job_id: str) -> tuple[str, Any]:
    inbox = root().scheduler.inbox
    with trio.move_on_after(ASK_TIMEOUT_S):
        try:
            return await ask(inbox, make, job_id)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ApiError(
                503, "the job scheduler is not running", "SCHEDULER_UNAVAILABLE"
            ) from None
    raise ApiError(503, "the job scheduler did not answer", "SCHEDULER_UNAVAILABLE")


def _refusal(answer: str, job_id: str) -> ApiError:
    if answer == "not_found":
        return ApiError(404, f"unknown job {job_id!r}", "JOB_NOT_FOUND")
    if answer == "running":
        return ApiError(409, f"job {job_id!r} is already running", "JOB_RUNNING")
    if answer == "idle":
        return ApiError(409, f"job {job_id!r} is not running", "JOB_NOT_RUNNING")
    return ApiError(503, "the server is shutting down", "SHUTTING_DOWN")


@blueprint.get("/v1/admin/jobs")
@document_response(JobList)
@requires(Permission.ServerAdmin)
async def list_jobs() -> Response:
    jobs = root().scheduler.view.jobs()
    store = root().jobs
    last = await store.db.run(store.last_runs)
    return jsonify({"jobs": [job_info(job, last.get(job.id)) for job in jobs]})


@blueprint.get("/v1/admin/jobs/<job_id>")
@document_response(JobInfo)
@answers(404)
@requires(Permission.ServerAdmin)
async def get_job(job_id: str) -> Response:
    job = _job(job_id)
    store = root().jobs
    return jsonify(job_info(job, await store.db.run(store.last_run, job.id)))


@blueprint.post("/v1/admin/jobs/<job_id>/trigger")
@document_response(JobTriggered, 202)
@answers(202, 404, 409, 503)
@requires(Permission.ServerAdmin)
async def trigger_job(job_id: str) -> tuple[Response, int]:
    job = _job(job_id)
    answer, run_id = await _ask(TriggerJob, job.id)
    if answer != "triggered":
        raise _refusal(answer, job.id)
    return jsonify({"status": "triggered", "job_id": job.id, "run_id": run_id}), 202


@blueprint.post("/v1/admin/jobs/<job_id>/cancel")
@document_response(JobCancelled, 202)
@answers(202, 404, 409, 503)
@requires(Permission.ServerAdmin)
async def cancel_job(job_id: str) -> tuple[Response, int]:
    job = _job(job_id)
    answer, run_id = await _ask(CancelJob, job.id)
    if answer != "cancelled":
        raise _refusal(answer, job.id)
    return jsonify({"status": "cancelled", "job_id": job.id, "run_id": run_id}), 202


@blueprint.get("/v1/admin/jobs/<job_id>/history")
@document_response(JobHistory)
@answers(404)
@requires(Permission.ServerAdmin)
@validate_querystring(HistoryQuery)
async def job_history(job_id: str, query_args: HistoryQuery) -> Response:
    job = _job(job_id)
    limit = page_limit(query_args.limit, HISTORY_DEFAULT, HISTORY_MAX)
    offset = query_args.offset or 0
    store = root().jobs
    runs = await store.db.run(store.history, job.id, limit, offset)
    return jsonify({"history": [run_info(run) for run in runs]})
