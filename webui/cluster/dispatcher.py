"""The API process's side of the replicas: a `Worker` that sends generation jobs to Ray actors.

`Dispatcher` keeps the interface the UI and the API already call on `engine.worker` (`submit`, `position`,
`queue_length`, `interrupt`, `skip`, `current`, `jobs`), so neither changes. Generation requests go to replicas
(`webui.cluster.replica.Replica`, one Easel each), and so do model switches (the checkpoint switched to becomes
the one requests naming none run on); unloading runs on every replica; everything else (upscaling, scripts and
extension calls) runs on the in-process worker thread as without a cluster.

Routing: each replica has a lane (a FIFO of jobs assigned to it and one thread that runs them there one at a
time). A job goes to the least loaded replica that already holds its checkpoint (and its LoRA set, where one
does), unless that replica has more than `AFFINITY_SLACK` jobs more than the least loaded one; otherwise to the
least loaded replica (ties: the one holding fewer checkpoints). Random seeds are drawn here, before the job
leaves, so a retry makes the same image.

Faults: when a replica's process dies during a job, its lane replaces it with a fresh actor; the job is retried
once on another replica (at the front of that replica's lane), the jobs waiting in the dead lane are routed
again, and the dead actor is killed so it can never finish the job as well. A second death fails the job with a
message. PNGs are written here, from the images and infotexts the replica returns.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from webui.engine.context import resolve_seed
from webui.engine.tasks import UnloadRequest
from webui.engine.outputs import mode_folder, save_image
from webui.engine.worker import Job, JobResult, JobState, QueueFullError, Worker, describe_error
from webui.requests import GenerationRequest, RequestError

log = logging.getLogger(__name__)

AFFINITY_SLACK = 1  # jobs a holding replica may have beyond the least loaded one and still be preferred
REPLICA_CONCURRENCY = 8  # calls one replica actor answers at once (a generation + interrupt, skip, status)
LORA_TAG = re.compile(r"<lora:([^:>]+)")


def is_remote(request: Any) -> bool:
    """Whether a replica runs `request`: a generation request or a model switch (a script's job, upscaling,
    extension calls run in-process)."""
    from webui.engine.engine import LoadRequest

    return isinstance(request, (GenerationRequest, LoadRequest))


def lora_set(request: Any) -> frozenset[str]:
    text = f"{getattr(request, 'prompt', '')} {getattr(request, 'hr_prompt', '') or ''}"
    return frozenset(name.strip() for name in LORA_TAG.findall(text))


class Lane:
    """One replica: its actor, the jobs assigned to it, what it holds, and the thread that feeds it."""

    def __init__(self, index: int, handle: Any, info: dict[str, Any]) -> None:
        self.index = index
        self.handle = handle
        self.info = info
        self.queue: collections.deque[Job] = collections.deque()
        self.running: Job | None = None
        self.held: set[str] = set(info.get("loaded", []))  # checkpoints loaded there (or assigned to load)
        self.last_loras: dict[str, frozenset[str]] = {}
        self.alive = True
        self.restarts = 0
        self.thread: threading.Thread | None = None

    @property
    def load(self) -> int:
        return len(self.queue) + (1 if self.running is not None else 0)


class Dispatcher(Worker):
    """`engine.worker` when Easel runs with replicas (see the module's text)."""

    def __init__(self, engine: Any, make_replica: Callable[[int], Any], replicas: int,
                 queue_size: int = 64, on_stop: Callable[[], None] | None = None) -> None:
        import ray

        super().__init__(engine.run_job, queue_size)
        self._ray = ray
        self.engine = engine
        self._make_replica = make_replica
        self._cond = threading.Condition()
        self._stopping = False
        self._on_stop = on_stop
        self.current_checkpoint: str | None = None  # the model switch's choice, for requests naming none
        handles = [make_replica(i) for i in range(replicas)]
        infos = ray.get([h.ready.remote() for h in handles])  # replicas build their Easel in parallel
        self.lanes = [Lane(i, h, info) for i, (h, info) in enumerate(zip(handles, infos))]

    # The Worker interface ------------------------------------------------------------------------
    @property
    def current(self) -> Job | None:
        """The in-process worker's job, else the most recently started job running on a replica."""
        if self._local_current is not None:
            return self._local_current
        running = [lane.running for lane in self.lanes if lane.running is not None and not lane.running.finished_state]
        return max(running, key=lambda job: job.started or 0.0) if running else None

    @current.setter
    def current(self, job: Job | None) -> None:
        self._local_current = job

    def start(self) -> None:
        super().start()
        for lane in self.lanes:
            if lane.thread is None:
                lane.thread = threading.Thread(target=self._lane_loop, args=(lane,), daemon=True,
                                               name=f"easel-replica-{lane.index}")
                lane.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for job in self.running_jobs():
            self.interrupt(job.id)
        for lane in self.lanes:
            if lane.thread is not None:
                lane.thread.join(timeout)
            self._kill(lane.handle)
        super().stop(timeout)
        if self._on_stop is not None:
            self._on_stop()

    def submit(self, request: Any, source: str = "ui") -> Job:
        if isinstance(request, UnloadRequest):  # here (models the API process loaded) and on every replica
            self.unload_replicas(request.checkpoint, wait=False)
        if not is_remote(request):
            return super().submit(request, source)
        if not isinstance(request, GenerationRequest):  # a model switch: loaded on a replica, the default after
            self.current_checkpoint = request.checkpoint
        job = Job(self.prepared(request), source)
        job.attempts = 0  # type: ignore[attr-defined]
        with self._cond:
            if self.queue_length() >= self._queue.maxsize:
                raise QueueFullError(f"the queue is full ({self._queue.maxsize} jobs waiting); try again shortly")
            lane = self.route(job)
            self.assign(lane, job)
        with self._lock:
            self.remember(job)
        return job

    def position(self, job: Job) -> int:
        with self._cond:
            for lane in self.lanes:
                if job in lane.queue:
                    return list(lane.queue).index(job) + 1
        return super().position(job)

    def queue_length(self) -> int:
        with self._cond:
            waiting = sum(len(lane.queue) for lane in self.lanes)
        return waiting + super().queue_length()

    def running_jobs(self) -> list[Job]:
        with self._cond:
            return [lane.running for lane in self.lanes if lane.running is not None]

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop one job by id (queued or running, here or on a replica), or with no id every running job."""
        targets = [self.jobs[job_id]] if job_id and job_id in self.jobs else self.running_jobs()
        stopped = super().interrupt(job_id) if (job_id is None or job_id in self.jobs) else False
        return self.signal(targets, "interrupt") or stopped

    def skip(self) -> bool:
        skipped = super().skip()
        return self.signal(self.running_jobs(), "skip") or skipped

    def signal(self, jobs: list[Job | None], action: str) -> bool:
        """Mark each unfinished job `<action>_requested` and tell its replica to `action` it; whether any was."""
        signalled = False
        for job in jobs:
            if job is not None and not job.finished_state:
                job.update(**{f"{action}_requested": True})
                lane = self.lane_of(job)
                if lane is not None:
                    getattr(lane.handle, action).remote(job.id)
                signalled = True
        return signalled

    # Routing -------------------------------------------------------------------------------------
    def prepared(self, request: GenerationRequest) -> GenerationRequest:
        """The request as a replica runs it: seeds drawn (a retry makes the same image) and the checkpoint named."""
        changes: dict[str, Any] = {}
        if not isinstance(request, GenerationRequest):
            return request
        for name in ("seed", "subseed"):
            value = getattr(request, name, None)
            if isinstance(value, int) and value < 0:
                changes[name] = resolve_seed(value)
        if not getattr(request, "checkpoint", "x"):
            chosen = self.current_checkpoint or self.default_checkpoint()
            if chosen:
                changes["checkpoint"] = chosen
        return dataclasses.replace(request, **changes) if changes else request

    def default_checkpoint(self) -> str:
        current = self.engine.manager.current()
        if current is not None:
            return current.name
        names = [c.name for c in self.engine.manager.checkpoints() if c.supported]
        return names[0] if names else ""

    def route(self, job: Job, exclude: tuple[Lane, ...] = ()) -> Lane:
        """The lane `job` goes to (called with `_cond` held)."""
        candidates = [lane for lane in self.lanes if lane not in exclude]
        alive = [lane for lane in candidates if lane.alive] or candidates or list(self.lanes)
        checkpoint = getattr(job.request, "checkpoint", "")
        loras = lora_set(job.request)
        best = min(alive, key=lambda lane: (lane.load, len(lane.held), lane.index))
        holders = [lane for lane in alive if checkpoint in lane.held]
        if holders:
            held = min(holders, key=lambda lane: (lane.load, lane.last_loras.get(checkpoint) != loras, lane.index))
            if held.load <= best.load + AFFINITY_SLACK:
                return held
        return best

    def assign(self, lane: Lane, job: Job, front: bool = False) -> None:
        """Put `job` on `lane` (called with `_cond` held)."""
        checkpoint = getattr(job.request, "checkpoint", "")
        if checkpoint:
            lane.held.add(checkpoint)
            lane.last_loras[checkpoint] = lora_set(job.request)
        (lane.queue.appendleft if front else lane.queue.append)(job)
        job.lane = lane.index  # type: ignore[attr-defined]
        self._cond.notify_all()

    def lane_of(self, job: Job) -> Lane | None:
        index = getattr(job, "lane", None)
        return self.lanes[index] if index is not None else None

    def unload_replicas(self, checkpoint: str | None = None, wait: bool = True) -> None:
        """Unload one checkpoint (None: every model) on every replica, behind the job each is running."""
        with self._cond:
            lanes = [lane for lane in self.lanes if lane.alive]
            for lane in lanes:
                lane.held = set() if checkpoint is None else lane.held - {checkpoint}
        refs = [lane.handle.unload.remote(checkpoint) for lane in lanes]
        if wait:
            self._ray.get(refs)

    # Running (one thread per lane) -----------------------------------------------------------------
    def _lane_loop(self, lane: Lane) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or (lane.alive and lane.queue))
                if self._stopping:
                    return
                job = lane.queue.popleft()
                lane.running = job
            try:
                self._run_remote(lane, job)
            except Exception as exc:  # noqa: BLE001 - a lane must outlive any job
                log.exception("job %s failed on replica %d", job.id, lane.index)
                job.exception = exc
                job.update(state=JobState.FAILED, error=describe_error(exc), finished=time.time())
            finally:
                with self._cond:
                    lane.running = None
                    self._cond.notify_all()

    def _run_remote(self, lane: Lane, job: Job) -> None:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

        if job.interrupt_requested:
            job.update(state=JobState.INTERRUPTED, finished=time.time(), result=JobResult())
            return
        if job.started is None:
            job.update(state=JobState.RUNNING, started=time.time())
        end: dict[str, Any] | None = None
        try:
            for ref in lane.handle.generate.remote(job.id, job.request, job.source):
                item = self._ray.get(ref)
                if item["kind"] == "end":
                    end = item
                    break
                changes = {k: item[k] for k in ("step", "total_steps", "batch_index", "batch_total")}
                if "preview" in item:
                    changes["preview"] = item["preview"]
                job.update(**changes)
                if job.interrupt_requested:  # asked before the replica had the job: ask again
                    lane.handle.interrupt.remote(job.id)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            self._replica_died(lane, job, exc)
            return
        except RayTaskError as exc:  # the replica raised: its own exception, without Ray's remote traceback
            cause = getattr(exc, "cause", None)
            cause = cause if isinstance(cause, BaseException) else RuntimeError(type(exc).__name__)
            log.error("job %s failed on replica %d: %s", job.id, lane.index, exc)
            job.exception = cause
            job.update(state=JobState.FAILED, error=describe_error(cause), finished=time.time())
            return
        if end is None:
            raise RuntimeError(f"replica {lane.index} ended job {job.id} without an outcome")
        self._finish(lane, job, end)

    def _finish(self, lane: Lane, job: Job, end: dict[str, Any]) -> None:
        with self._cond:
            if "loaded" in end:
                lane.held = set(end["loaded"]) | {getattr(j.request, "checkpoint", "") for j in lane.queue}
        state = JobState(end["state"])
        if state == JobState.FAILED:
            field = end.get("field")
            job.exception = RequestError(field, end.get("message", "")) if field else RuntimeError(end.get("error"))
            job.update(state=JobState.FAILED, error=end.get("error") or "failed", finished=time.time())
            return
        result = JobResult(images=list(end.get("images", [])), infotexts=list(end.get("infotexts", [])),
                           seeds=list(end.get("seeds", [])), parameters=list(end.get("parameters", [])),
                           info=dict(end.get("info", {})))
        result.info["replica"] = lane.info.get("id")
        self.save(job.request, result)
        job.update(state=state, result=result, finished=time.time())

    def save(self, request: Any, result: JobResult) -> None:
        """Write the PNGs as the in-process engine does (`Engine.run_generation`), here in the API process."""
        settings = self.engine.settings
        if not (settings.user.save_images and getattr(request, "save_images", True)):
            return
        items = result.info.get("items", [])
        for index, (image, text, seed) in enumerate(zip(result.images, result.infotexts, result.seeds)):
            folder = mode_folder(settings.outputs_dir, request.mode)
            path = save_image(image, folder, seed, text, settings.user.filename_digits)
            result.paths.append(path)
            payload = items[index] if index < len(items) and isinstance(items[index], dict) else {}
            mask = payload.get("mask")
            if mask is not None and hasattr(mask, "save"):
                mask.save(path.with_name(path.stem + "-mask.png"))
            self.engine.notify_saved(path)

    # Faults ----------------------------------------------------------------------------------------
    def _replica_died(self, lane: Lane, job: Job, exc: BaseException) -> None:
        log.warning("replica %d stopped during job %s (%s); replacing it", lane.index, job.id, type(exc).__name__)
        self._kill(lane.handle)  # it can never finish the job as well
        job.attempts += 1  # type: ignore[attr-defined]
        with self._cond:
            lane.alive = False
            lane.held = set()
            orphans = list(lane.queue)
            lane.queue.clear()
            if job.attempts > 1:  # type: ignore[attr-defined]
                retry = None
            else:
                retry = self.route(job, exclude=(lane,))
                job.update(step=0, preview=None)
                self.assign(retry, job, front=True)
            for waiting in orphans:
                self.assign(self.route(waiting, exclude=(lane,)), waiting)
        if retry is None:
            job.exception = RuntimeError("the replica running this job stopped twice")
            job.update(state=JobState.FAILED, error="the replica running this job stopped twice; try again",
                       finished=time.time())
        self._replace(lane)

    def _replace(self, lane: Lane) -> None:
        while not self._stopping:
            try:
                handle = self._make_replica(lane.index)
                info = self._ray.get(handle.ready.remote())
            except Exception:  # noqa: BLE001 - keep trying while Easel runs
                log.exception("replica %d could not be started again", lane.index)
                with self._cond:
                    self._cond.wait(5.0)
                continue
            with self._cond:
                lane.handle, lane.info, lane.alive = handle, info, True
                lane.held = set(info.get("loaded", []))
                lane.restarts += 1
                self._cond.notify_all()
            log.info("replica %d is back (pid %s)", lane.index, info.get("pid"))
            return

    def _kill(self, handle: Any) -> None:
        try:
            self._ray.kill(handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # What GET /easel/v1/cluster shows ---------------------------------------------------------------
    def replica_statuses(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Each replica's own report (`Replica.status`, records included); a dead one as last known, not alive."""
        answers: list[dict[str, Any]] = []
        for lane in list(self.lanes):
            status = dict(lane.info)
            if lane.alive:
                try:
                    status = self._ray.get(lane.handle.status.remote(), timeout=timeout)
                    lane.info = status
                except Exception as exc:  # noqa: BLE001 - shown as not answering
                    status = {**status, "error": type(exc).__name__}
            status["alive"] = lane.alive
            status["queued"] = len(lane.queue)
            status["restarts"] = lane.restarts
            answers.append(status)
        return answers

    def cluster(self) -> dict[str, Any]:
        keys = ("id", "pid", "node", "device", "loaded", "jobs_done", "busy", "alive", "queued", "restarts")
        return {"replicas": [{key: status.get(key) for key in keys} for status in self.replica_statuses()]}


def start_cluster(engine: Any, workers: int = 0, address: str | None = None, threads: int | None = None,
                  init_options: dict[str, Any] | None = None) -> Dispatcher:
    """Start (or join, with `address`) Ray and `workers` replicas built from `engine.settings`; make a
    `Dispatcher` over them `engine.worker`. Call before `engine.start()`. With no `workers`: one per GPU of the
    cluster, or one when it has none."""
    import ray

    from webui.cluster.replica import Replica

    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True,
                                   "runtime_env": {"env_vars": replica_env()}}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = os.cpu_count() or 1
        ray.init(**(options | (init_options or {})))
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    count = workers or max(1, gpus)
    cpus = float(resources.get("CPU", 1))
    per_cpu = min(1.0, cpus / count)
    per_gpu = 0.0 if not gpus else min(1.0, gpus / count)
    threads = threads or max(1, int((os.cpu_count() or 1) // count))
    settings = dataclasses.replace(engine.settings, workers=0, ray_address=None)
    actor = ray.remote(Replica)

    def make(index: int) -> Any:
        return actor.options(num_cpus=per_cpu, num_gpus=per_gpu, max_concurrency=REPLICA_CONCURRENCY,
                             max_restarts=0).remote(settings, f"replica-{index}", threads)

    dispatcher = Dispatcher(engine, make, count, queue_size=engine.settings.user.queue_size,
                            on_stop=ray.shutdown if started else None)
    engine.worker = dispatcher
    log.info("Ray: %d replica(s), %.2g CPU%s each, %d torch thread(s)", count, per_cpu,
             f" and {per_gpu:.2g} GPU" if per_gpu else "", threads)
    return dispatcher


def replica_env() -> dict[str, str]:
    """The variables replicas need from this process: where `webui` is, and the offline / telemetry switches."""
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = {key: value for key, value in os.environ.items()
           if key.startswith(("HF_", "TRANSFORMERS_", "GRADIO_", "EASEL_"))}
    path = os.environ.get("PYTHONPATH", "")
    env["PYTHONPATH"] = root if not path else f"{root}{os.pathsep}{path}"
    return env
