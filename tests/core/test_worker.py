"""The worker: one job at a time in order, failures and interrupts leave it healthy, a full queue refuses, and
jobs can be awaited on an event loop without a thread each."""
import asyncio
import threading

import pytest

from webui.engine.worker import JobInterrupted, JobResult, JobState, QueueFullError, Worker


def make_runner(log, gate=None):
    def runner(job):
        if gate is not None:
            gate.wait(5)
        if job.request == "boom":
            raise RuntimeError("pipeline exploded")
        if job.request == "oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        if job.request == "long":
            job.update(total_steps=1000)
            for step in range(1000):
                job.update(step=step + 1)
                if job.interrupt_requested:
                    raise JobInterrupted()
                threading.Event().wait(0.001)
        log.append(job.request)
        return JobResult(info={"request": job.request})
    return runner


def test_jobs_run_in_order_and_failures_keep_worker_alive():
    log = []
    worker = Worker(make_runner(log))
    worker.start()
    jobs = [worker.submit(r) for r in ("a", "boom", "b", "oom", "c")]
    for job in jobs:
        assert job.wait(10)
    assert log == ["a", "b", "c"]
    assert jobs[1].state == JobState.FAILED and jobs[1].error == "pipeline exploded"
    assert "Out of memory" in jobs[3].error and "--medvram" in jobs[3].error
    assert jobs[4].state == JobState.DONE and jobs[4].result.info == {"request": "c"}
    assert worker.alive
    worker.stop()


def test_interrupt_stops_running_job_and_next_job_runs():
    log = []
    worker = Worker(make_runner(log))
    worker.start()
    long = worker.submit("long")
    after = worker.submit("after")
    version = 0
    while long.step < 5:
        version = long.wait_for_update(version, timeout=5)
    assert worker.interrupt()
    assert long.wait(10) and long.state == JobState.INTERRUPTED
    assert long.step < 1000
    assert after.wait(10) and after.state == JobState.DONE
    worker.stop()


def test_queue_positions_and_full_queue():
    gate = threading.Event()
    worker = Worker(make_runner([], gate), queue_size=2)
    worker.start()
    first = worker.submit("a")
    version = 0
    while first.state != JobState.RUNNING:
        version = first.wait_for_update(version, timeout=5)
    second, third = worker.submit("b"), worker.submit("c")
    assert worker.position(first) == 0 and worker.position(second) == 1 and worker.position(third) == 2
    with pytest.raises(QueueFullError, match="queue is full"):
        worker.submit("d")
    gate.set()
    assert third.wait(10) and third.state == JobState.DONE
    assert worker.submit("e").wait(10)  # recovers once drained
    worker.stop()


def test_interrupting_a_queued_job_skips_it():
    gate = threading.Event()
    worker = Worker(make_runner([], gate))
    worker.start()
    worker.submit("a")
    queued = worker.submit("b")
    worker.interrupt(queued.id)
    gate.set()
    assert queued.wait(10) and queued.state == JobState.INTERRUPTED
    worker.stop()


def test_jobs_are_awaited_on_an_event_loop_without_a_thread_each():
    """A hundred coroutines await queued jobs: no thread is started for them, each wakes when its own job ends
    (resolved from the worker thread), and update watchers see every step's change."""
    gate = threading.Event()
    worker = Worker(make_runner([], gate), queue_size=200)
    worker.start()
    threads_before = threading.active_count()

    async def main() -> tuple[list[bool], list[int], int]:
        jobs = [worker.submit(f"job {n}") for n in range(100)]
        waits = [asyncio.create_task(job.wait_async()) for job in jobs]
        seen: list[int] = []

        async def watch(job) -> None:
            version = -1
            while not job.finished_state:
                version = await job.wait_for_update_async(version)
                seen.append(version)

        watcher = asyncio.create_task(watch(jobs[0]))
        await asyncio.sleep(0)  # every waiter registers
        threads_waiting = threading.active_count()
        assert not any(task.done() for task in waits)
        gate.set()
        ended = await asyncio.wait_for(asyncio.gather(*waits), 30)
        await watcher
        assert [job.state for job in jobs] == [JobState.DONE] * 100
        assert all(not job._async_waiters for job in jobs)  # noqa: SLF001 - nothing left registered
        return ended, seen, threads_waiting

    ended, seen, threads_waiting = asyncio.run(main())
    assert ended == [True] * 100
    assert threads_waiting == threads_before
    assert seen and seen[-1] >= 2  # running, then done: each change woke the watcher
    worker.stop()


def test_an_awaited_job_times_out_and_a_cancelled_wait_leaves_the_job_running():
    gate = threading.Event()
    worker = Worker(make_runner([], gate))
    worker.start()

    async def main() -> None:
        job = worker.submit("a")
        assert await job.wait_async(timeout=0.05) is False  # still held by the gate
        assert await job.wait_for_update_async(job.version, timeout=0.05) == job.version
        task = asyncio.create_task(job.wait_async())
        await asyncio.sleep(0)
        assert len(job._async_waiters) == 1  # noqa: SLF001
        task.cancel()  # what a client that goes away does to its handler
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not job._async_waiters  # noqa: SLF001
        gate.set()
        assert await asyncio.wait_for(job.wait_async(), 10) and job.state == JobState.DONE

    asyncio.run(main())
    worker.stop()
