"""One generation replica: its own Easel (model manager, memory policy, engine and worker thread) in a Ray actor.

The dispatcher in the API process calls `generate(key, request)`, a generator: it queues the request on this
replica's worker and yields the job's progress (step, totals, a new preview) each time the job changes, then one
last item with the outcome (images, infotexts, parameters, seeds, info). PNGs are not written here: the replica's
settings have `save_images` off and the API process writes what comes back, so nothing is lost with a replica.
`interrupt` and `skip` reach the running job by its key (the actor runs several calls at once on threads).
The replica keeps its own records (`status`): the jobs it finished, the checkpoint each ran on and whether that
checkpoint had to be loaded for it.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import threading
from typing import Any, Iterator

from webui.engine.worker import JobState
from webui.requests import RequestError

PROGRESS = "progress"
END = "end"


class Replica:
    """The body of a replica actor (`ray.remote` is applied by the dispatcher, so this module imports no Ray)."""

    def __init__(self, settings: Any, replica_id: str, threads: int = 1) -> None:
        import torch

        from webui.app import build

        settings = dataclasses.replace(settings, user=dataclasses.replace(settings.user, save_images=False))
        self.id = replica_id
        self.easel = build(settings)
        if self.easel.manager.device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.engine = self.easel.engine
        self.engine.start()
        self.jobs: dict[str, Any] = {}
        self.jobs_done = 0
        self.records: list[dict[str, Any]] = []  # one per finished generation: key, checkpoint, loaded
        self._lock = threading.Lock()

    def ready(self) -> dict[str, Any]:
        return self.status()

    def status(self) -> dict[str, Any]:
        """What GET /easel/v1/cluster shows of this replica, plus its per-job records."""
        with self._lock:
            busy = any(not job.finished_state for job in self.jobs.values())
            records = list(self.records)
        return {"id": self.id, "pid": os.getpid(), "node": socket.gethostname(), "device": self.easel.manager.device,
                "loaded": self.easel.manager.loaded_names(), "jobs_done": self.jobs_done, "busy": busy,
                "loads": sum(1 for r in records if r["loaded"]), "records": records}

    def generate(self, key: str, request: Any, source: str = "cluster") -> Iterator[dict[str, Any]]:
        """Run `request` on this replica's worker; yield its progress, then its outcome (see the module's text)."""
        checkpoint = getattr(request, "checkpoint", "") or ""
        had = self.has_checkpoint(checkpoint)
        try:
            job = self.engine.submit(request, source)
        except RequestError as exc:
            yield {"kind": END, "state": JobState.FAILED.value, "error": str(exc), "field": exc.field,
                   "message": exc.message}
            return
        with self._lock:
            self.jobs[key] = job
        seen, preview = -1, None
        try:
            while True:
                seen = job.wait_for_update(seen, timeout=30.0)
                if job.finished_state:
                    break
                item = {"kind": PROGRESS, "state": job.state.value, "step": job.step,
                        "total_steps": job.total_steps, "batch_index": job.batch_index,
                        "batch_total": job.batch_total}
                if job.preview is not None and job.preview is not preview:
                    preview = item["preview"] = job.preview
                yield item
            yield self.outcome(key, job, checkpoint, had)
        finally:
            with self._lock:
                self.jobs.pop(key, None)

    def outcome(self, key: str, job: Any, checkpoint: str, had: bool) -> dict[str, Any]:
        result = job.result
        end: dict[str, Any] = {"kind": END, "state": job.state.value, "error": job.error,
                               "loaded": self.easel.manager.loaded_names()}
        if isinstance(job.exception, RequestError):
            end |= {"field": job.exception.field, "message": job.exception.message}
        if result is not None:
            end |= {"images": result.images, "infotexts": result.infotexts, "parameters": result.parameters,
                    "seeds": result.seeds, "info": result.info}
        if job.state == JobState.DONE:
            with self._lock:
                self.jobs_done += 1
                model = (result.info.get("model") if result is not None else None) or checkpoint
                self.records.append({"key": key, "checkpoint": model, "loaded": not had})
        return end

    def has_checkpoint(self, name: str) -> bool:
        """Whether the checkpoint `name` is loaded here now (by any name the catalogue accepts)."""
        loaded = self.easel.manager.loaded_names()
        if not name:
            return bool(loaded)
        try:
            return self.easel.manager.find_checkpoint(name).name in loaded or name in loaded
        except LookupError:
            return name in loaded

    def interrupt(self, key: str) -> bool:
        with self._lock:
            job = self.jobs.get(key)
        return job is not None and self.engine.worker.interrupt(job.id)

    def skip(self, key: str) -> bool:
        with self._lock:
            job = self.jobs.get(key)
        if job is None or self.engine.worker.current is not job:
            return False
        return self.engine.worker.skip()

    def unload(self, checkpoint: str | None = None) -> bool:
        job = self.engine.unload(checkpoint, source="cluster", wait=True)
        return job.state == JobState.DONE

    def pid(self) -> int:
        return os.getpid()
