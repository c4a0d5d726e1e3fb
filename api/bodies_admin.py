"""The success bodies of the background-job routes (SPEC §7.3) and the user administration routes
(SPEC §4.3), for `document_response`.

Documentation only, as `api.bodies` (whose rules these follow: open bodies, a field nullable
exactly where the code can answer null): the job routes build their answers in `api.jobs`
from the job store and the scheduler's view, the user routes in `api.admin_users.user_json`.
Times are RFC 3339 text in UTC.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from actors.jobs.base import ShutdownBehavior
from actors.messages import Hook
from api.schemas import PermissionName
from storage.jobs import RunStatus
from storage.users import Role

Rfc3339 = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent() -> Any:
    """The default of a field left out of the answer when it does not apply, never null: the
    document shows it as not required, with its type alone."""
    return Field(default=None, json_schema_extra=_no_default)


# -- SPEC §7.3: jobs ---------------------------------------------------------------------------


class JobRunInfo(BaseModel):
    """One run of a job; a refused trigger is a `skipped` run. `report` is what the job's body
    returned (its shape is the job's)."""

    run_id: int
    started_at: Rfc3339
    finished_at: Rfc3339 | None
    status: RunStatus
    error_message: str | None
    triggered_by: str
    report: dict[str, Any] | None


class JobSchedule(BaseModel):
    """When a job runs; each of `cron`, `interval_secs` and `hooks` is there only when set
    (`combined`: more than one is)."""

    type: Literal["cron", "interval", "hook", "combined"]
    cron: str | SkipJsonSchema[None] = absent()
    interval_secs: float | SkipJsonSchema[None] = absent()
    hooks: list[Hook] | SkipJsonSchema[None] = absent()


class JobInfo(BaseModel):
    """A job, its last run that executed (null before the first) and when it is next due
    (null when only hooks start it, or before the scheduler has planned it)."""

    id: str
    name: str
    description: str
    schedule: JobSchedule
    shutdown_behavior: ShutdownBehavior
    is_running: bool
    last_run: JobRunInfo | None
    next_run_at: Rfc3339 | None


class JobList(BaseModel):
    jobs: list[JobInfo]


class JobHistory(BaseModel):
    """Runs newest first."""

    history: list[JobRunInfo]


class JobTriggered(BaseModel):
    """The run the trigger started."""

    status: Literal["triggered"]
    job_id: str
    run_id: int


class JobCancelled(BaseModel):
    """The run being cancelled; its end shows in the history."""

    status: Literal["cancelled"]
    job_id: str
    run_id: int


# -- SPEC §4.3: users --------------------------------------------------------------------------


class UserInfo(BaseModel):
    """A user: roles, every permission they grant plus the extra ones, and whether a password
    is set (never the password or its hash)."""

    user_handle: str
    roles: list[Role]
    permissions: list[PermissionName]
    extra_permissions: list[PermissionName]
    has_password: bool


class UserList(BaseModel):
    users: list[UserInfo]
