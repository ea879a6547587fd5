"""One generation replica: its own Easel (model manager, memory policy, engine and worker thread), deployed as a
Ray Serve replica (`webui.cluster.deployment.start_cluster` makes the deployment; this module imports no Ray at
import time).

The dispatcher in the API process calls `generate(key, request, source, replica=...)`, an async generator: it
queues the request (a generation, a script's job, an upscale) on this replica's worker and yields one item when
the job starts (with this replica's id, so the dispatcher knows where it runs), then its progress (step, totals,
a new preview) each time the job changes, then one last item with the outcome (images, infotexts, parameters,
seeds, info, and the outputs to write). PNGs are not written here: the engine's `outputs_recorder` takes each
output the job would save (its folder under `outputs/`, seed, infotext, mask) and the API process writes them,
so nothing is lost with a replica. `interrupt` and `skip` reach the job by its key; `withdraw` takes a job that
has not started back (the dispatcher sends it to a replica autoscaling added). Every call carries
`replica=` for the router (`webui.cluster.serve_router`); the methods ignore it. The replica keeps its own
records (`status`): the jobs it finished, the checkpoint each ran on and whether it had to be loaded for it.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from webui.engine.worker import Job, JobResult, JobState, Worker
from webui.requests import RequestError

STARTED = "started"
PROGRESS = "progress"
END = "end"
WITHDRAWN = "withdrawn"  # an END state: the job was taken back before it started
WAIT_SECONDS = 30.0  # longest wait for a job's next change before looking again


class Replica:
    """The body of the Serve deployment (`serve.deployment` is applied by the dispatcher)."""

    def __init__(self, settings: Any, threads: int = 1) -> None:
        import torch
        from ray import serve

        from webui.app import build

        # the replica records every output its jobs would save; the API process decides with its own settings
        settings = dataclasses.replace(settings, user=dataclasses.replace(settings.user, save_images=True))
        self.id = serve.get_replica_context().replica_id.unique_id
        self.easel = build(settings)
        if self.easel.manager.device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.engine = self.easel.engine
        self.engine.outputs_recorder = self.record_output
        # the worker runs each job through `run_job`, which notes first whether its checkpoint was loaded already
        self.engine.worker = Worker(self.run_job, queue_size=settings.user.queue_size)
        self.had: dict[str, bool] = {}  # job id -> its checkpoint was loaded when it started
        self.withdrawn: set[str] = set()  # keys of jobs taken back before they started (sent elsewhere)
        self.engine.start()
        self.jobs: dict[str, Any] = {}
        self.outputs: dict[str, list[dict[str, Any]]] = {}  # job id -> what it would have written
        self.jobs_done = 0
        self.records: list[dict[str, Any]] = []  # one per finished job: key, checkpoint, loaded
        self._lock = threading.Lock()

    def status(self, replica: str | None = None) -> dict[str, Any]:
        """What GET /easel/v1/cluster shows of this replica, plus its per-job records."""
        with self._lock:
            busy = any(not job.finished_state for job in self.jobs.values())
            records = list(self.records)
        return {"serve_id": self.id, "pid": os.getpid(), "node": socket.gethostname(),
                "device": self.easel.manager.device, "loaded": self.easel.manager.loaded_names(),
                "jobs_done": self.jobs_done, "busy": busy, "loads": sum(1 for r in records if r["loaded"]),
                "records": records}

    def run_job(self, job: Job) -> JobResult:
        """The worker's runner: the engine's, after noting whether the job's checkpoint is loaded already."""
        with self._lock:
            self.had[job.id] = self.has_checkpoint(getattr(job.request, "checkpoint", "") or "")
        return self.engine.run_job(job)

    def record_routing_stats(self) -> dict[str, Any]:
        """Serve's periodic routing report: what this replica holds."""
        return {"loaded": self.easel.manager.loaded_names(), "pid": os.getpid()}

    def record_output(self, image: Any, folder: Path, seed: int, text: str | None, digits: int = 5,
                      mask: Any = None) -> Path:
        """`Engine.outputs_recorder`: keep one output of the running job for the API process to write; its path
        here is a placeholder the dispatcher replaces with the written file's."""
        job = self.engine.worker.current
        key = job.id if job is not None else ""
        relative = Path(folder).relative_to(self.easel.settings.outputs_dir).as_posix()
        with self._lock:
            kept = self.outputs.setdefault(key, [])
            placeholder = Path(folder) / f".pending-{key}-{len(kept)}.png"
            kept.append({"folder": relative, "image": image, "seed": seed, "text": text, "digits": digits,
                         "mask": mask, "placeholder": str(placeholder)})
        return placeholder

    async def generate(self, key: str, request: Any, source: str = "cluster",
                       replica: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Run `request` on this replica's worker; yield its start, progress, then outcome (the module's text)."""
        checkpoint = getattr(request, "checkpoint", "") or ""
        try:
            job = self.engine.submit(request, source)
        except RequestError as exc:
            yield {"kind": END, "state": JobState.FAILED.value, "error": str(exc), "field": exc.field,
                   "message": exc.message}
            return
        with self._lock:
            self.jobs[key] = job
        seen, preview, started = -1, None, False
        try:
            while True:
                seen = await job.wait_for_update_async(seen, timeout=WAIT_SECONDS)
                if key in self.withdrawn:  # taken back before it started: the dispatcher sends it elsewhere
                    yield {"kind": END, "state": WITHDRAWN}
                    return
                if not started and (job.state != JobState.QUEUED or job.finished_state):
                    started = True
                    yield {"kind": STARTED, "replica": self.id}
                if job.finished_state:
                    break
                if job.state == JobState.QUEUED:
                    continue
                item = {"kind": PROGRESS, "state": job.state.value, "step": job.step,
                        "total_steps": job.total_steps, "batch_index": job.batch_index,
                        "batch_total": job.batch_total, "stage": job.stage}
                if job.preview is not None and job.preview is not preview:
                    preview = item["preview"] = job.preview
                yield item
            yield self.outcome(key, job, checkpoint)
        finally:
            with self._lock:
                if self.jobs.get(key) is job:  # (a job taken back and sent here again has a new entry)
                    self.jobs.pop(key)
                    self.withdrawn.discard(key)
                self.outputs.pop(job.id, None)
                self.had.pop(job.id, None)

    def outcome(self, key: str, job: Any, checkpoint: str) -> dict[str, Any]:
        result = job.result
        with self._lock:
            outputs = self.outputs.pop(job.id, [])
            had = self.had.pop(job.id, True)
        end: dict[str, Any] = {"kind": END, "state": job.state.value, "error": job.error,
                               "loaded": self.easel.manager.loaded_names(), "outputs": outputs}
        if isinstance(job.exception, RequestError):
            end |= {"field": job.exception.field, "message": job.exception.message}
        if result is not None:
            end |= {"images": result.images, "infotexts": result.infotexts, "parameters": result.parameters,
                    "seeds": result.seeds, "info": result.info, "paths": [str(p) for p in result.paths]}
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

    def interrupt(self, key: str, replica: str | None = None) -> bool:
        with self._lock:
            job = self.jobs.get(key)
        return job is not None and self.engine.worker.interrupt(job.id)

    def withdraw(self, key: str, replica: str | None = None) -> bool:
        """Take the job `key` back if it has not started here (its stream ends "withdrawn"); whether it was."""
        with self._lock:
            job = self.jobs.get(key)
        if job is None or not self.engine.worker.withdraw(job):
            return False
        with self._lock:
            self.withdrawn.add(key)
        job.update()  # wake its stream
        return True

    def skip(self, key: str, replica: str | None = None) -> bool:
        with self._lock:
            job = self.jobs.get(key)
        if job is None or self.engine.worker.current is not job:
            return False
        return self.engine.worker.skip()

    def unload(self, checkpoint: str | None = None, replica: str | None = None) -> bool:
        job = self.engine.unload(checkpoint, source="cluster", wait=True)
        return job.state == JobState.DONE
