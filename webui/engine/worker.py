"""The one worker thread that owns the device, and the jobs it runs.

UI and API submit requests here; the worker takes them in order from a bounded queue and calls the runner it
was built with. A job publishes its progress (step, total, a preview image) and ends as done, failed or
interrupted. Watchers block on the job's condition variable (`wait`, `wait_for_update`) instead of polling;
code on an event loop awaits the same changes (`wait_async`, `wait_for_update_async`) without holding a thread:
the worker resolves their futures with `loop.call_soon_threadsafe`. A failure inside a job never stops the worker.
"""
from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

log = logging.getLogger(__name__)


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class QueueFullError(RuntimeError):
    """The job queue is at its limit; the caller should retry later."""


class JobInterrupted(Exception):
    """Raised inside a runner when the user pressed Interrupt."""


@dataclass
class JobResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    parameters: list[dict[str, Any]] = field(default_factory=list)  # what each infotext was written from
    pnginfo: bool = True  # the job's PNGs carry their infotext (the enable_pnginfo setting)


class Job:
    """One queued request, with the progress the worker publishes while running it."""

    _ids = itertools.count(1)

    def __init__(self, request: Any, source: str = "ui") -> None:
        self.id = f"job-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        self.request = request
        self.source = source
        self.state = JobState.QUEUED
        self.error: str | None = None
        self.exception: BaseException | None = None  # what failed, for callers that map errors (API 4xx)
        self.result: JobResult | None = None
        self.step = 0
        self.total_steps = 0
        self.batch_index = 0
        self.batch_total = 1
        self.preview: Image.Image | None = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.interrupt_requested = False
        self.skip_requested = False
        self.stage = ""  # what runs besides sampling the images ("Detail pass 1: finding 'face'"); "" otherwise
        self.version = 0
        self._cond = threading.Condition()
        self._async_waiters: list[_AsyncWaiter] = []  # futures on event loops, resolved from `update`

    # Publishing (worker side) ---------------------------------------------------------------------
    def update(self, **changes: Any) -> None:
        with self._cond:
            for key, value in changes.items():
                setattr(self, key, value)
            self.version += 1
            self._cond.notify_all()
            woken, kept = [], []
            for waiter in self._async_waiters:  # every change wakes update watchers; the end wakes everyone
                (kept if waiter.ends_only and not self.finished_state else woken).append(waiter)
            self._async_waiters = kept
        for waiter in woken:
            waiter.wake()

    # Watching (UI / API side) ---------------------------------------------------------------------
    @property
    def finished_state(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED, JobState.INTERRUPTED)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.finished_state, timeout=timeout)

    def wait_for_update(self, seen_version: int, timeout: float | None = None) -> int:
        """Block until the job changed after `seen_version` (or ended, or timeout); return the new version."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen_version or self.finished_state, timeout=timeout)
            return self.version

    async def wait_async(self, timeout: float | None = None) -> bool:
        """`wait` for code on an event loop: no thread is held while the job waits or runs; False on timeout.

        Cancelling the awaiting task (a client that went away) stops the waiting, never the job."""
        return await self._await(lambda: self.finished_state, ends_only=True, timeout=timeout)

    async def wait_for_update_async(self, seen_version: int, timeout: float | None = None) -> int:
        """`wait_for_update` for code on an event loop; returns the version the job is at."""
        await self._await(lambda: self.version != seen_version or self.finished_state, ends_only=False,
                          timeout=timeout)
        return self.version

    async def _await(self, ready: Callable[[], bool], ends_only: bool, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._cond:
                if ready():
                    return True
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return False
                waiter = _AsyncWaiter(loop, loop.create_future(), ends_only)
                self._async_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter.future, left)
            except TimeoutError:
                pass  # checked again above
            finally:
                with self._cond:
                    if waiter in self._async_waiters:
                        self._async_waiters.remove(waiter)

    @property
    def progress(self) -> float:
        if self.state == JobState.DONE:
            return 1.0
        # before its first step a batch counts as not begun (its place in the job still counts)
        per_batch = min(self.step, self.total_steps) / self.total_steps if self.total_steps else 0.0
        return min(1.0, (self.batch_index + per_batch) / max(1, self.batch_total))

    def check_interrupt(self) -> None:
        if self.interrupt_requested:
            raise JobInterrupted()


@dataclass(eq=False)
class _AsyncWaiter:
    """One coroutine waiting on a job: its loop, the future it awaits, and whether only the end wakes it."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    ends_only: bool

    def wake(self) -> None:
        """Resolve the future on its own loop (called from the worker thread, or from the loop itself)."""
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a waiter that timed out or was cancelled has a finished future already
        future.set_result(None)


Runner = Callable[[Job], JobResult]


class Worker:
    """A single thread running jobs from a bounded FIFO queue."""

    def __init__(self, runner: Runner, queue_size: int = 64) -> None:
        self._runner = runner
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._pending: list[Job] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: Job | None = None
        self.jobs: dict[str, Job] = {}
        self._history_limit = 256

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="easel-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self.interrupt()
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, request: Any, source: str = "ui") -> Job:
        job = Job(request, source)
        with self._lock:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFullError(f"the queue is full ({self._queue.maxsize} jobs waiting); try again shortly") from None
            self._pending.append(job)
            self.remember(job)
        return job

    def remember(self, job: Job) -> None:
        """Keep `job` findable by id, dropping the oldest finished jobs past the history limit (hold `_lock`)."""
        self.jobs[job.id] = job
        if len(self.jobs) > self._history_limit:
            for old in [j for j in self.jobs.values() if j.finished_state][: len(self.jobs) - self._history_limit]:
                self.jobs.pop(old.id, None)

    def position(self, job: Job) -> int:
        """0 when running or finished, else 1-based place in the queue."""
        with self._lock:
            try:
                return self._pending.index(job) + 1
            except ValueError:
                return 0

    def queue_length(self) -> int:
        with self._lock:
            return len(self._pending)

    def interrupt(self, job_id: str | None = None) -> bool:
        """Stop the running job (or a queued one by id) within one step."""
        with self._lock:
            targets = [self.jobs[job_id]] if job_id and job_id in self.jobs else ([self.current] if self.current else [])
        stopped = False
        for job in targets:
            if job is not None and not job.finished_state:
                job.update(interrupt_requested=True)
                stopped = True
        return stopped

    def withdraw(self, job: Job) -> bool:
        """Take a queued job back before it starts (it ends interrupted, without running, when its turn comes);
        False once it has started or ended."""
        with self._lock:
            if job not in self._pending:
                return False
            job.update(interrupt_requested=True)
            return True

    def skip(self, job_id: str | None = None) -> bool:
        """End the current image of the running job (only if it is `job_id`, when given) and go on with its next
        batch."""
        job = self.current
        if job is None or job.finished_state or (job_id is not None and job.id != job_id):
            return False
        job.update(skip_requested=True)
        return True

    def run_now(self, request: Any, source: str = "api", timeout: float | None = None) -> Job:
        """Submit and wait for the job to end."""
        job = self.submit(request, source)
        job.wait(timeout)
        return job

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job in self._pending:
                    self._pending.remove(job)
                self.current = job
            try:
                self._run(job)
            finally:
                with self._lock:
                    self.current = None

    def _run(self, job: Job) -> None:
        if job.interrupt_requested:
            job.update(state=JobState.INTERRUPTED, finished=time.time(), result=JobResult())
            return
        job.update(state=JobState.RUNNING, started=time.time())
        try:
            result = self._runner(job)
        except JobInterrupted:
            job.update(state=JobState.INTERRUPTED, finished=time.time(), result=job.result or JobResult())
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any job
            log.exception("job %s failed", job.id)
            job.exception = without_tracebacks(exc)
            release_memory()  # before the failure is published, so whoever retries finds the memory free
            job.update(state=JobState.FAILED, error=describe_error(exc), finished=time.time())
        else:
            final = JobState.INTERRUPTED if job.interrupt_requested else JobState.DONE
            job.update(state=final, result=result, finished=time.time())
        finally:
            # A finished job's tensors are freed by reference counting; the cyclic collector runs only after a
            # failure, above (a full collection holds the interpreter for a few hundred ms on a loaded UI).
            release_memory(collect=False)


def describe_error(exc: BaseException) -> str:
    """A message a user can act on, without a traceback."""
    text = str(exc) or exc.__class__.__name__
    if "out of memory" in text.lower() or exc.__class__.__name__ == "OutOfMemoryError":
        return ("Out of memory while generating. Try a smaller size or batch, --medvram or --lowvram. "
                f"({exc.__class__.__name__})")
    return text


def without_tracebacks(exc: BaseException) -> BaseException:
    """`exc` with its traceback (and those of the exceptions it chains) dropped: a kept traceback keeps every
    frame of the failed job alive, tensors included, which after an out-of-memory error is the memory to free."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


def release_memory(collect: bool = True) -> None:
    """The model manager's `release_memory`, imported when first needed (this module imports no torch)."""
    from webui.model_manager.cache import release_memory as release

    release(collect)
