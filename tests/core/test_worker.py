"""The worker: one job at a time in order, failures and interrupts leave it healthy, a full queue refuses."""
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
