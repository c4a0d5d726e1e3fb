"""Background-job admin API (SPEC §7.3) against a running scheduler."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from actors.jobs.base import JobSpec, Schedule, ShutdownBehavior
from actors.messages import Hook, SchedulerMessage
from actors.scheduler import Scheduler, SchedulerView
from daemon.root import Root, SchedulerHandle
from storage.jobs import RunStatus
from tests.conftest import no_reader, serve
from tests.support.openapi import assert_documented

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
RUN_KEYS = {"run_id", "started_at", "finished_at", "status", "error_message", "triggered_by",
            "report"}  # fmt: skip
JOB_KEYS = {"id", "name", "description", "schedule", "shutdown_behavior", "is_running", "last_run",
            "next_run_at"}  # fmt: skip


class Gate:
    """A job body that runs until released (or cancelled)."""

    def __init__(self) -> None:
        self.release = trio.Event()

    async def run(self) -> dict[str, Any]:
        await self.release.wait()
        self.release = trio.Event()
        return {"released": True}


def gated_jobs(gate: Gate) -> list[JobSpec]:
    async def quick() -> None:
        return None

    return [
        JobSpec("zeta", "Zeta", "waits for its gate", Schedule(hooks=(Hook.OnUserCreated,)),
                ShutdownBehavior.CANCELLABLE, gate.run),
        JobSpec("alpha", "Alpha", "hourly and on change",
                Schedule(interval_secs=3600, hooks=(Hook.OnCatalogChange,)),
                ShutdownBehavior.WAIT_FOR_COMPLETION, quick),
        JobSpec("cronny", "Cronny", "at midnight", Schedule(cron="0 0 * * *"),
                ShutdownBehavior.CANCELLABLE, quick),
    ]  # fmt: skip


@pytest.fixture
def inbox() -> tuple[Any, Any]:
    return trio.open_memory_channel[SchedulerMessage](16)


@pytest.fixture
def root(root: Root, inbox: Any) -> Root:
    """The root whose scheduler inbox the `gate` fixture's scheduler reads."""
    return replace(root, scheduler=SchedulerHandle(inbox[0], root.scheduler.view))


@pytest.fixture
async def gate(root: Root, inbox: Any) -> AsyncIterator[Gate]:
    gate = Gate()
    send, recv = inbox
    shutdown = trio.Event()
    actor = Scheduler(gated_jobs(gate), root.jobs, root.metrics, recv,
                      shutdown=shutdown, shutdown_timeout=1, view=root.scheduler.view)  # fmt: skip
    async with send, recv, trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        yield gate
        shutdown.set()


async def wait_idle(root: Root, job_id: str) -> None:
    """Wait (bounded) until the scheduler has recorded the end of the job's run."""
    with trio.fail_after(5):
        await root.scheduler.view.wait_idle(job_id)


async def test_list_jobs_sorted_with_schedules(
    gate: Gate, client: Any, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/v1/admin/jobs", headers=admin_headers)
    assert response.status_code == 200
    jobs = (await response.get_json())["jobs"]
    assert [j["id"] for j in jobs] == ["alpha", "cronny", "zeta"]
    assert all(set(j) == JOB_KEYS for j in jobs)
    alpha, cronny, zeta = jobs
    assert alpha["schedule"] == {"type": "combined", "interval_secs": 3600,
                                 "hooks": ["OnCatalogChange"]}  # fmt: skip
    assert alpha["shutdown_behavior"] == "wait_for_completion"
    assert RFC3339.fullmatch(alpha["next_run_at"])
    assert cronny["schedule"] == {"type": "cron", "cron": "0 0 * * *"}
    assert cronny["next_run_at"].endswith("T00:00:00Z")
    assert zeta["schedule"] == {"type": "hook", "hooks": ["OnUserCreated"]}
    assert (zeta["next_run_at"], zeta["last_run"], zeta["is_running"]) == (None, None, False)
    assert zeta["name"] == "Zeta" and zeta["description"] == "waits for its gate"


async def test_trigger_then_409_while_running_then_history(
    root: Root, gate: Gate, client: Any, admin_headers: dict[str, str]
) -> None:
    response = await client.post("/v1/admin/jobs/zeta/trigger", headers=admin_headers)
    assert response.status_code == 202
    body = await response.get_json()
    run_id = body["run_id"]
    assert body == {"status": "triggered", "job_id": "zeta", "run_id": run_id}

    info = await (await client.get("/v1/admin/jobs/zeta", headers=admin_headers)).get_json()
    assert info["is_running"] is True
    assert info["last_run"]["run_id"] == run_id and info["last_run"]["status"] == "running"

    again = await client.post("/v1/admin/jobs/zeta/trigger", headers=admin_headers)
    assert again.status_code == 409
    assert (await again.get_json())["code"] == "JOB_RUNNING"

    gate.release.set()
    await wait_idle(root, "zeta")
    history = await client.get("/v1/admin/jobs/zeta/history", headers=admin_headers)
    assert history.status_code == 200
    rows = (await history.get_json())["history"]
    assert all(set(r) == RUN_KEYS for r in rows)
    skipped, done = rows
    assert (skipped["status"], skipped["triggered_by"]) == ("skipped", "manual")
    assert (done["run_id"], done["status"], done["triggered_by"]) == (run_id, "completed", "manual")
    assert done["report"] == {"released": True} and done["error_message"] is None
    assert RFC3339.fullmatch(done["started_at"]) and RFC3339.fullmatch(done["finished_at"])
    info = await (await client.get("/v1/admin/jobs/zeta", headers=admin_headers)).get_json()
    # The job's last run is the one that executed, not the refused trigger.
    assert (info["is_running"], info["last_run"]["run_id"]) == (False, run_id)


async def test_cancel_running_then_409_when_idle(
    root: Root, gate: Gate, client: Any, admin_headers: dict[str, str]
) -> None:
    idle = await client.post("/v1/admin/jobs/zeta/cancel", headers=admin_headers)
    assert idle.status_code == 409
    assert (await idle.get_json())["code"] == "JOB_NOT_RUNNING"
    run_id = (await (await client.post("/v1/admin/jobs/zeta/trigger", headers=admin_headers))
              .get_json())["run_id"]  # fmt: skip
    response = await client.post("/v1/admin/jobs/zeta/cancel", headers=admin_headers)
    assert response.status_code == 202
    assert await response.get_json() == {"status": "cancelled", "job_id": "zeta", "run_id": run_id}
    await wait_idle(root, "zeta")
    history = await client.get("/v1/admin/jobs/zeta/history", headers=admin_headers)
    (row,) = (await history.get_json())["history"]
    assert (row["run_id"], row["status"]) == (run_id, "cancelled")
    assert row["error_message"] == "Cancelled by an administrator"


async def test_history_paging_and_bad_queries(
    root: Root, gate: Gate, client: Any, admin_headers: dict[str, str]
) -> None:
    run_ids = []
    for _ in range(3):
        response = await client.post("/v1/admin/jobs/alpha/trigger", headers=admin_headers)
        assert response.status_code == 202
        run_ids.append((await response.get_json())["run_id"])
        await wait_idle(root, "alpha")
    url = "/v1/admin/jobs/alpha/history"
    first = await (await client.get(f"{url}?limit=2", headers=admin_headers)).get_json()
    assert [r["run_id"] for r in first["history"]] == [run_ids[2], run_ids[1]]
    rest = await (await client.get(f"{url}?limit=2&offset=2", headers=admin_headers)).get_json()
    assert [r["run_id"] for r in rest["history"]] == [run_ids[0]]
    for query in ("limit=abc", "limit=0", "offset=-1", "offset=99999999999999999999", "page=2",
                  "limit=1&limit=2"):  # fmt: skip
        response = await client.get(f"{url}?{query}", headers=admin_headers)
        assert response.status_code == 400, query
        assert "error" in await response.get_json()


async def test_unknown_job_is_404_everywhere(
    gate: Gate, client: Any, admin_headers: dict[str, str]
) -> None:
    for method, path in (("GET", ""), ("GET", "/history"), ("POST", "/trigger"),
                         ("POST", "/cancel")):  # fmt: skip
        response = await client.open(
            f"/v1/admin/jobs/nope{path}", method=method, headers=admin_headers
        )
        assert response.status_code == 404, path
        assert (await response.get_json())["code"] == "JOB_NOT_FOUND"


async def test_server_admin_is_required(
    root: Root, gate: Gate, app: Any, client: Any, user_headers: dict[str, str]
) -> None:
    anonymous = app.test_client()  # the logged-in client keeps the session cookie
    routes = (("GET", "/v1/admin/jobs"), ("GET", "/v1/admin/jobs/zeta"),
              ("POST", "/v1/admin/jobs/zeta/trigger"), ("POST", "/v1/admin/jobs/zeta/cancel"),
              ("GET", "/v1/admin/jobs/zeta/history"))  # fmt: skip
    for method, path in routes:
        assert (await anonymous.open(path, method=method)).status_code == 401, path
        forbidden = await client.open(path, method=method, headers=user_headers)
        assert forbidden.status_code == 403, path
    # Nothing was triggered by the refused requests.
    assert root.scheduler.view.running_run_id("zeta") is None
    assert root.jobs.history("zeta", 10) == []


async def test_503_when_the_scheduler_is_not_running(
    root: Root, admin_headers: dict[str, str]
) -> None:
    stopped = SchedulerHandle(no_reader(), SchedulerView(gated_jobs(Gate())))
    async with serve(replace(root, scheduler=stopped)) as client:
        listed = await client.get("/v1/admin/jobs", headers=admin_headers)
        assert [j["id"] for j in (await listed.get_json())["jobs"]] == ["alpha", "cronny", "zeta"]
        response = await client.post("/v1/admin/jobs/zeta/trigger", headers=admin_headers)
        assert response.status_code == 503
        assert (await response.get_json())["code"] == "SCHEDULER_UNAVAILABLE"


async def test_a_job_is_never_idle_while_its_last_run_is_still_running(
    root: Root, admin_headers: dict[str, str]
) -> None:
    """The route reads the last run, then the scheduler's state: a run that ends in between
    shows as running until the next read, never as an idle job with a running last run."""
    idle = SchedulerHandle(no_reader(), SchedulerView(gated_jobs(Gate())))  # nothing running
    async with serve(replace(root, scheduler=idle)) as client:
        run_id = root.jobs.start_run("zeta", "manual", datetime.now(UTC), None)

        async def zeta() -> dict[str, Any]:
            listed = await (await client.get("/v1/admin/jobs", headers=admin_headers)).get_json()
            one = await (await client.get("/v1/admin/jobs/zeta", headers=admin_headers)).get_json()
            assert [j for j in listed["jobs"] if j["id"] == "zeta"] == [one]
            return one  # type: ignore[no-any-return]

        job = await zeta()
        assert (job["is_running"], job["last_run"]["status"]) == (True, "running")
        root.jobs.finish_run(run_id, RunStatus.COMPLETED, datetime.now(UTC))
        job = await zeta()
        assert (job["is_running"], job["last_run"]["status"]) == (False, "completed")


async def test_answers_in_every_run_state_are_as_the_document_says(
    root: Root, gate: Gate, client: Any, admin_headers: dict[str, str]
) -> None:
    """Jobs never run, running, cancelled, completed with and without a report, failed, and a
    refused trigger: each answer is valid against its route's schema in /openapi.json."""

    async def check(method: str, route: str, path: str, status: int = 200) -> Any:
        response = await client.open(path, method=method, headers=admin_headers)
        assert response.status_code == status, await response.get_data()
        answer = await response.get_json()
        await assert_documented(client, method, route, status, answer)
        return answer

    at = datetime(2024, 6, 1, tzinfo=UTC)
    failed = root.jobs.start_run("cronny", "schedule", at, None)
    root.jobs.finish_run(failed, RunStatus.FAILED, at, error_message="the disk is full")
    job = "/v1/admin/jobs/{job_id}"
    await check("POST", job + "/trigger", "/v1/admin/jobs/zeta/trigger", 202)
    listed = await check("GET", "/v1/admin/jobs", "/v1/admin/jobs")
    alpha, cronny, zeta = listed["jobs"]
    assert (alpha["last_run"], zeta["next_run_at"]) == (None, None)
    assert cronny["last_run"]["error_message"] == "the disk is full"
    running = await check("GET", job, "/v1/admin/jobs/zeta")
    assert running["last_run"]["finished_at"] is None
    await check("POST", job + "/cancel", "/v1/admin/jobs/zeta/cancel", 202)
    await wait_idle(root, "zeta")
    await check("POST", job + "/trigger", "/v1/admin/jobs/zeta/trigger", 202)
    await check("POST", job + "/trigger", "/v1/admin/jobs/alpha/trigger", 202)
    refused = await client.post("/v1/admin/jobs/zeta/trigger", headers=admin_headers)
    assert refused.status_code == 409
    gate.release.set()
    await wait_idle(root, "zeta")
    await wait_idle(root, "alpha")
    history = await check("GET", job + "/history", "/v1/admin/jobs/zeta/history")
    assert [r["status"] for r in history["history"]] == ["skipped", "completed", "cancelled"]
    assert [r["report"] for r in history["history"]] == [None, {"released": True}, None]
    await check("GET", job + "/history", "/v1/admin/jobs/cronny/history")
    listed = await check("GET", "/v1/admin/jobs", "/v1/admin/jobs")
    assert [j["last_run"]["status"] for j in listed["jobs"]] == ["completed", "failed", "completed"]
    assert listed["jobs"][0]["last_run"]["report"] is None
