"""The API process's side of the replicas: a `Worker` that sends jobs to a Ray Serve deployment.

`Dispatcher` keeps the interface the UI and the API already call on `engine.worker` (`submit`, `position`,
`queue_length`, `interrupt`, `skip`, `current`, `jobs`), so neither changes. Generation requests, model
switches, the scripts' jobs (X/Y/Z plot, SD upscale, loopback ...) and upscaling (Extras) run on replicas
(`webui.cluster.replica.Replica`, one Easel each, the deployment's replicas); unloading runs on every replica;
extension calls (`CallTask`) run on the in-process worker thread as without a cluster.

Routing is Easel's own (`webui.cluster.lanes`; Serve's multiplexed routing is best effort, docs/SCALING.md):
each replica has a lane (the jobs sent to it that have not started there, and the one running), and a job goes
to the replica holding its checkpoint unless that one is more than a job behind, else to the least loaded. The
job is sent at once, through the deployment's handle, naming its replica (the router
`webui.cluster.serve_router.EaselRouter` honours that): so every waiting job is a request Serve counts, and
Serve's autoscaling follows the queue's length. Random seeds are drawn here, before the job leaves, so a retry
makes the same image.

Faults: when a replica's process dies, the jobs sent to it end with Ray's actor error here. A job that had
started there is retried once on another replica (a second death fails it with a message); a job that was only
waiting there is sent again without counting. The dead replica is killed first, so it can never finish a job as
well; Serve starts a replacement, which takes the dead one's lane. PNGs are written here, from the outputs the
replica returns.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from webui.cluster.lanes import AFFINITY_SLACK, Lane, checkpoint_of, is_remote, lora_set, pick_lane
from webui.engine.context import resolve_seed
from webui.engine.script_job import ScriptJob
from webui.engine.tasks import UnloadRequest, UpscaleRequest
from webui.engine.outputs import save_image
from webui.engine.worker import Job, JobResult, JobState, QueueFullError, Worker, describe_error
from webui.requests import GenerationRequest, RequestError

log = logging.getLogger(__name__)

CONTROL_CALLS = 8  # calls a replica answers besides its jobs (interrupt, skip, status, unload)


class ReplicaLost(Exception):
    """The replica a job was sent to stopped (its process died or cannot be reached)."""


class Withdrawn(Exception):
    """The replica a job was sent to gave it back before starting it (to move it to a less loaded one)."""


class Dispatcher(Worker):
    """`engine.worker` when Easel runs with replicas (see the module's text)."""

    def __init__(self, engine: Any, handle: Any, queue_size: int = 64, on_stop: Callable[[], None] | None = None,
                 wait_for: int = 1, timeout: float = 600.0) -> None:
        import ray

        from webui.cluster import serve_router

        super().__init__(engine.run_job, queue_size)
        self._ray = ray
        self.engine = engine
        self.handle = handle
        self._cond = threading.Condition()
        self._stopping = False
        self._on_stop = on_stop
        self._listeners = serve_router.LISTENERS
        self.current_checkpoint: str | None = None  # the model switch's choice, for requests naming none
        self.lanes: list[Lane] = []
        self._lost: set[str] = set()  # Serve replicas seen to stop: never placed again, whatever Serve says
        self._names: dict[str, str] = {}  # Serve replica id -> its actor's name
        self._listeners.append(self.replicas_changed)
        self.replicas_changed(list(serve_router.LATEST))  # what the router knew before this listened
        handle.status.remote().result(timeout_s=timeout)  # the handle's router starts and learns the replicas
        if not self.wait_replicas(wait_for, timeout):
            raise RuntimeError(f"the replicas did not start within {timeout:.0f} s")

    # The replicas Serve runs ---------------------------------------------------------------------
    def replicas_changed(self, replicas: list[tuple[str, str]]) -> None:
        """The router's news (on its event loop): a replica in a free lane for each new one, gone ones emptied."""
        added = False
        with self._cond:
            replicas = [(serve_id, name) for serve_id, name in replicas if serve_id not in self._lost]
            self._names.update(replicas)
            current = dict(replicas)
            for lane in self.lanes:
                if lane.serve_id is not None and lane.serve_id not in current:
                    log.info("%s (%s) left", lane.name, lane.serve_id)
                    lane.serve_id, lane.held = None, set()
            placed = {lane.serve_id for lane in self.lanes}
            for serve_id, _ in replicas:
                if serve_id in placed:
                    continue
                lane = next((lane for lane in self.lanes if lane.serve_id is None), None)
                if lane is None:
                    lane = Lane(len(self.lanes))
                    self.lanes.append(lane)
                else:  # a replacement (or a replica added again by autoscaling) in an earlier replica's lane
                    lane.restarts += 1
                lane.serve_id, lane.held, lane.info = serve_id, set(), {}
                added = True
                log.info("%s is Serve replica %s", lane.name, serve_id)
            self._cond.notify_all()
        if added and not self._stopping:
            threading.Thread(target=self.rebalance, daemon=True, name="easel-rebalance").start()

    def rebalance(self) -> None:
        """Move jobs waiting on busy replicas to idler ones (a replica autoscaling added, a replacement): each
        replica keeps at most `AFFINITY_SLACK` jobs more than an even share; the last waiting ones are taken back
        (`Replica.withdraw`) and routed again when their replica gives them back."""
        with self._cond:
            alive = [lane for lane in self.lanes if lane.alive]
            if len(alive) < 2:
                return
            share = -(-sum(lane.load for lane in alive) // len(alive))  # rounded up
            moves = [(lane, job) for lane in alive
                     for job in list(lane.queue)[::-1][:max(0, lane.load - share - AFFINITY_SLACK)]]
        for lane, job in moves:
            try:
                self.call(lane, "withdraw", job.id).result(timeout_s=30)
            except Exception:  # noqa: BLE001 - it stays where it is
                log.warning("job %s could not be taken back from %s", job.id, lane.name)

    def wait_replicas(self, count: int, timeout: float) -> bool:
        """Wait until `count` replicas run (a replacement after a death, autoscaling); whether they do."""
        with self._cond:
            return self._cond.wait_for(lambda: sum(lane.alive for lane in self.lanes) >= count, timeout)

    # The Worker interface ------------------------------------------------------------------------
    @property
    def current(self) -> Job | None:
        """The in-process worker's job, else the oldest job running on a replica (as /sdapi/v1/progress shows)."""
        if self._local_current is not None:
            return self._local_current
        running = [job for job in self.running_jobs() if not job.finished_state]
        return min(running, key=lambda job: job.started or 0.0) if running else None

    @current.setter
    def current(self, job: Job | None) -> None:
        self._local_current = job

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for job in [job for job in list(self.jobs.values()) if not job.finished_state]:  # waiting ones too
            self.interrupt(job.id)
        if self.replicas_changed in self._listeners:
            self._listeners.remove(self.replicas_changed)
        super().stop(timeout)
        if self._on_stop is not None:
            self._on_stop()

    def submit(self, request: Any, source: str = "ui") -> Job:
        if isinstance(request, UnloadRequest):  # here (models the API process loaded) and on every replica
            self.unload_replicas(request.checkpoint, wait=False)
        if not is_remote(request):
            return super().submit(request, source)
        if not isinstance(request, (GenerationRequest, ScriptJob, UpscaleRequest)):  # a model switch
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
        threading.Thread(target=self._follow, args=(job,), daemon=True, name=f"easel-{job.id}").start()
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

    def skip(self, job_id: str | None = None) -> bool:
        """End the current image of one running job (by id), or with no id of every running job."""
        if job_id and job_id in self.jobs and self.lane_of(self.jobs[job_id]) is not None:
            return self.signal([self.jobs[job_id]], "skip")
        skipped = super().skip()
        return self.signal(self.running_jobs(), "skip") or skipped

    def signal(self, jobs: list[Job | None], action: str) -> bool:
        """Mark each unfinished job `<action>_requested` and tell its replica to `action` it; whether any was."""
        signalled = False
        for job in jobs:
            if job is not None and not job.finished_state:
                job.update(**{f"{action}_requested": True})
                lane = self.lane_of(job)
                if lane is not None and lane.alive:
                    self.call(lane, action, job.id)
                signalled = True
        return signalled

    def call(self, lane: Lane, method: str, *args: Any) -> Any:
        """Send `method(*args)` to `lane`'s replica through the deployment's handle (a Serve response)."""
        return getattr(self.handle, method).remote(*args, replica=lane.serve_id)

    # Routing -------------------------------------------------------------------------------------
    def prepared(self, request: Any) -> Any:
        """The request as a replica runs it: seeds drawn (a retry makes the same image) and the checkpoint named."""
        if isinstance(request, ScriptJob):
            return dataclasses.replace(request, base=self.prepared(request.base) if request.base else None,
                                       requests=tuple(self.prepared(r) for r in request.requests))
        if not isinstance(request, GenerationRequest):
            return request
        changes: dict[str, Any] = {}
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
        return pick_lane(self.lanes, job.request, exclude)

    def assign(self, lane: Lane, job: Job) -> None:
        """Put `job` on `lane` (called with `_cond` held)."""
        checkpoint = checkpoint_of(job.request)
        if checkpoint:
            lane.held.add(checkpoint)
            lane.last_loras[checkpoint] = lora_set(job.request)
        lane.queue.append(job)
        job.lane = lane  # type: ignore[attr-defined]
        job.serve_id = lane.serve_id  # type: ignore[attr-defined]
        self._cond.notify_all()

    def lane_of(self, job: Job) -> Lane | None:
        return getattr(job, "lane", None)

    def unload_replicas(self, checkpoint: str | None = None, wait: bool = True) -> None:
        """Unload one checkpoint (None: every model) on every replica, behind the jobs sent to each."""
        with self._cond:
            lanes = [lane for lane in self.lanes if lane.alive]
            for lane in lanes:
                lane.held = set() if checkpoint is None else lane.held - {checkpoint}
        responses = [self.call(lane, "unload", checkpoint) for lane in lanes]
        if wait:
            for response in responses:
                response.result()

    # Following a job (one thread per job sent) -----------------------------------------------------
    def _follow(self, job: Job) -> None:
        """Send `job` to its lane's replica and publish what comes back; after a replica's death, again."""
        while True:
            lane = self.lane_of(job)
            assert lane is not None
            try:
                self._run_remote(lane, job)
                return
            except ReplicaLost as exc:
                lost = self.lane_of(job) or lane
                if not self._resend(lost, job, exc, started=getattr(job, "ran_on", None) is not None):
                    return
            except Withdrawn:
                with self._cond:
                    if job in lane.queue:
                        lane.queue.remove(job)
                    moved = self.route(job, exclude=(lane,))
                    self.assign(moved, job)
                log.info("job %s moved from %s to %s", job.id, lane.name, moved.name)
            except Exception as exc:  # noqa: BLE001 - a job's failure must reach whoever waits on it
                log.exception("job %s failed on %s", job.id, lane.name)
                self._end(job, JobState.FAILED, exc)
                return

    def _run_remote(self, lane: Lane, job: Job) -> None:
        from ray.exceptions import RayError, RayTaskError

        if job.interrupt_requested:
            self._end(job, JobState.INTERRUPTED)
            return
        end: dict[str, Any] | None = None
        job.ran_on = None  # type: ignore[attr-defined]
        try:
            stream = self.handle.generate.options(stream=True).remote(job.id, job.request, job.source,
                                                                      replica=lane.serve_id)
            for item in stream:
                if item["kind"] == "started":
                    lane = self._started(job, item["replica"])
                    if job.interrupt_requested:  # asked before the replica had the job: ask again
                        self.call(lane, "interrupt", job.id)
                    continue
                if item["kind"] == "end":
                    end = item
                    break
                changes = {k: item[k] for k in ("step", "total_steps", "batch_index", "batch_total", "stage")}
                if "preview" in item:
                    changes["preview"] = item["preview"]
                job.update(**changes)
        except RayTaskError as exc:  # the replica raised: its own exception, without Ray's remote traceback
            cause = getattr(exc, "cause", None)
            cause = cause if isinstance(cause, BaseException) else RuntimeError(type(exc).__name__)
            log.error("job %s failed on %s: %s", job.id, lane.name, exc)
            self._end(job, JobState.FAILED, cause)
            return
        except RayError as exc:  # the replica's process died or cannot be reached
            raise ReplicaLost(f"{type(exc).__name__}: {exc}") from None
        if end is None:
            raise RuntimeError(f"{lane.name} ended job {job.id} without an outcome")
        if end["state"] == "withdrawn":
            raise Withdrawn()
        self._finish(self.lane_of(job) or lane, job, end)

    def _started(self, job: Job, serve_id: str) -> Lane:
        """The job started on the replica `serve_id` (the one it was sent to, unless that was gone)."""
        with self._cond:
            sent = self.lane_of(job)
            lane = next((lane for lane in self.lanes if lane.serve_id == serve_id), sent)
            if sent is not None and job in sent.queue:
                sent.queue.remove(job)
            lane.running = job
            job.lane = lane  # type: ignore[attr-defined]
            job.ran_on = job.serve_id = serve_id  # type: ignore[attr-defined]
            self._cond.notify_all()
        if job.started is None:
            job.update(state=JobState.RUNNING, started=time.time())
        else:  # a retry: from the first step again
            job.update(step=0, preview=None)
        return lane

    def _leave(self, job: Job) -> None:
        with self._cond:
            lane = self.lane_of(job)
            if lane is not None:
                if job in lane.queue:
                    lane.queue.remove(job)
                if lane.running is job:
                    lane.running = None
            self._cond.notify_all()

    def _end(self, job: Job, state: JobState, exc: BaseException | None = None, message: str | None = None,
             result: JobResult | None = None) -> None:
        self._leave(job)
        if exc is not None:
            job.exception = exc
        job.update(state=state, error=message or (describe_error(exc) if exc is not None else None),
                   result=result if result is not None else (job.result or JobResult()), finished=time.time())

    def _finish(self, lane: Lane, job: Job, end: dict[str, Any]) -> None:
        with self._cond:
            if "loaded" in end:
                lane.held = set(end["loaded"]) | {checkpoint_of(j.request) for j in lane.queue} - {""}
        state = JobState(end["state"])
        if state == JobState.FAILED:
            field = end.get("field")
            exc = RequestError(field, end.get("message", "")) if field else RuntimeError(end.get("error"))
            self._end(job, JobState.FAILED, exc, message=end.get("error") or "failed")
            return
        result = JobResult(images=list(end.get("images", [])), infotexts=list(end.get("infotexts", [])),
                           seeds=list(end.get("seeds", [])), parameters=list(end.get("parameters", [])),
                           info=dict(end.get("info", {})))
        result.info["replica"] = lane.name
        written = self.save(job.request, end.get("outputs", []))
        result.paths = [written[p] for p in end.get("paths", []) if p in written]
        self._end(job, state, result=result)

    def save(self, request: Any, outputs: list[dict[str, Any]]) -> dict[str, Path]:
        """Write the outputs a replica returns as the in-process engine would have (`Engine.save_output`), here in
        the API process; the written path of each placeholder the replica's result names."""
        base = getattr(request, "base", None) or request
        user = self.engine.user_settings(base)
        if not (user.save_images and getattr(request, "save_images", True)):
            return {}
        written: dict[str, Path] = {}
        for output in outputs:
            folder = self.engine.settings.outputs_dir / output["folder"]
            path = save_image(output["image"], folder, output["seed"], output["text"], output["digits"])
            if output.get("mask") is not None:
                output["mask"].save(path.with_name(path.stem + "-mask.png"))
            self.engine.notify_saved(path)
            written[output["placeholder"]] = path
        return written

    # Faults ----------------------------------------------------------------------------------------
    def _resend(self, lane: Lane, job: Job, exc: ReplicaLost, started: bool) -> bool:
        """After `lane`'s replica was lost: route `job` again (counting an attempt if it had started there);
        whether it goes on."""
        log.warning("%s stopped during job %s (%s)", lane.name, job.id, exc)
        lost = getattr(job, "serve_id", None)
        self._kill(self._names.get(lost or "", ""))
        with self._cond:
            if lost:
                self._lost.add(lost)
            if lane.serve_id == lost:
                lane.serve_id, lane.held = None, set()  # until Serve's replacement takes the lane
            if lane.running is job:
                lane.running = None
            if job in lane.queue:
                lane.queue.remove(job)
            if started:
                job.attempts += 1  # type: ignore[attr-defined]
            if job.attempts > 1 or self._stopping:  # type: ignore[attr-defined]
                retry = None
            else:
                self._cond.wait_for(lambda: self._stopping or any(l.alive for l in self.lanes), 600.0)
                retry = self.route(job, exclude=(lane,))
                self.assign(retry, job)
        if retry is None:
            self._end(job, JobState.FAILED, RuntimeError("the replica running this job stopped twice"),
                      message="the replica running this job stopped twice; try again")
            return False
        log.info("job %s sent again, to %s", job.id, retry.name)
        return True

    def _kill(self, actor_name: str) -> None:
        """Make sure a lost replica's process is gone, so it can never finish a job as well."""
        if not actor_name:
            return
        try:
            self._ray.kill(self._ray.get_actor(actor_name, namespace="serve"), no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # What GET /easel/v1/cluster shows ---------------------------------------------------------------
    def replica_statuses(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Each replica's own report (`Replica.status`, records included); a lost one as last known, not alive."""
        with self._cond:
            lanes = list(self.lanes)
        answers: list[dict[str, Any]] = []
        for lane in lanes:
            status = dict(lane.info)
            if lane.alive:
                try:
                    status = self.call(lane, "status").result(timeout_s=timeout)
                    if status.get("serve_id") == lane.serve_id:
                        lane.info = status
                except Exception as exc:  # noqa: BLE001 - shown as not answering
                    status = {**status, "error": type(exc).__name__}
            status["id"] = lane.name
            status["alive"] = lane.alive
            status["queued"] = len(lane.queue)
            status["restarts"] = lane.restarts
            answers.append(status)
        return answers

    def cluster(self) -> dict[str, Any]:
        keys = ("id", "pid", "node", "device", "loaded", "jobs_done", "busy", "alive", "queued", "restarts")
        return {"replicas": [{key: status.get(key) for key in keys} for status in self.replica_statuses()]}
