"""Shared pieces of the /easel/v1 image routes (edit, segment): a JSON body's values, and one queued job awaited.

`body_values` turns a body's keys into request attribute names (whole-number floats become ints, `save_images`
must be a bool and defaults to false, as in /sdapi/v1); `run_api_job` submits a request to the engine queue,
awaits it without holding a thread and turns a failed job into the API's error.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from webui.api.errors import ApiError, job_failure
from webui.engine.worker import JobResult, JobState


def body_values(body: dict[str, Any], body_fields: dict[str, str], int_fields: set[str],
                skip: Iterable[str]) -> dict[str, Any]:
    """The body's values under their request attribute names, leaving out `skip` keys (images) and nulls."""
    skipped = set(skip)
    values: dict[str, Any] = {}
    for key, value in body.items():
        if key in skipped or value is None:
            continue
        name = body_fields.get(key, key)
        if name in int_fields and isinstance(value, float) and value.is_integer():
            value = int(value)  # 20.0 from a client that writes every number as a float
        values[name] = value
    if "save_images" in values and not isinstance(values["save_images"], bool):
        raise ApiError(422, "save_images", f"must be true or false, got {values['save_images']!r}")
    values.setdefault("save_images", False)  # like /sdapi/v1: the API saves only when asked
    return values


async def run_api_job(engine: Any, request: Any, failed: str) -> tuple[JobResult, float]:
    """The finished job's result (an empty one when it had none) and the seconds since submitting it."""
    started = time.perf_counter()
    job = engine.submit(request, source="api")
    await job.wait_async()  # no thread held while queued or running
    if job.state == JobState.FAILED:
        raise job_failure(job, failed, "model")
    return job.result or JobResult(), started
