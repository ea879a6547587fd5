"""Progress and control: `GET /sdapi/v1/progress`, `POST /sdapi/v1/interrupt`, `POST /sdapi/v1/skip`.

These run on the event loop itself and only read or flag the worker's state, so they answer however many jobs
wait and however busy the API's threads are.
"""
from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from webui.api.context import ApiContext
from webui.api.images import encode_png


def progress_router(api: ApiContext) -> APIRouter:
    """The progress, interrupt and skip routes over `api`'s engine."""
    engine = api.engine
    router = api.router()

    @router.get("/progress")
    async def progress(skip_current_image: bool = False, id_task: str | None = None) -> dict[str, Any]:
        """On the event loop itself (the worker's state and a small preview), so it answers whatever waits.

        The job `id_task` names (a job id, as `current_task` shows it) while it runs, else the running job (with
        generation replicas, several run at once: the one that started first)."""
        worker = engine.worker
        asked = worker.jobs.get(id_task) if id_task else None
        job = asked if asked is not None and asked.state.value == "running" else worker.current
        waiting = worker.queue_length()
        if job is None or job.finished_state:
            return {"progress": 0.0, "eta_relative": 0.0,
                    "state": {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                              "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
                              "sampling_steps": 0, "queue_length": waiting},
                    "current_image": None, "textinfo": f"{waiting} waiting" if waiting else None,
                    "current_task": None}
        done = job.progress
        elapsed = time.time() - (job.started or time.time())
        eta = elapsed / done - elapsed if done > 0 else 0.0
        preview = job.preview
        return {
            "progress": round(done, 4),
            "eta_relative": round(max(0.0, eta), 3),
            "state": {"skipped": job.skip_requested, "interrupted": job.interrupt_requested,
                      "stopping_generation": False, "job": f"{job.request.mode} {job.id}",
                      "job_count": job.batch_total, "job_no": job.batch_index,
                      "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.started or job.created)),
                      "sampling_step": job.step, "sampling_steps": job.total_steps, "queue_length": waiting},
            "current_image": None if skip_current_image or preview is None else encode_png(preview),
            "textinfo": f"Batch {job.batch_index + 1} of {job.batch_total}, step {job.step} of {job.total_steps}"
                        + (f", {job.stage}" if job.stage else ""),
            "current_task": job.id,
        }

    @router.post("/interrupt")
    async def interrupt() -> dict[str, Any]:
        return {"interrupted": engine.worker.interrupt()}

    @router.post("/skip")
    async def skip() -> dict[str, Any]:
        return {"skipped": engine.worker.skip()}

    return router
