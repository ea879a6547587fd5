"""Easel's routing over the replicas' lanes (webui.cluster.lanes), without Ray: checkpoint affinity, the slack a
holding replica gets, the least loaded otherwise, lost replicas left out."""
from __future__ import annotations

from webui.cluster.lanes import Lane, pick_lane
from webui.engine.worker import Job
from webui.requests import Txt2ImgRequest


def lanes(*held: set[str]) -> list[Lane]:
    made = []
    for index, checkpoints in enumerate(held):
        lane = Lane(index)
        lane.serve_id, lane.held = f"serve-{index}", set(checkpoints)
        made.append(lane)
    return made


def request(checkpoint: str, prompt: str = "a cube") -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt=prompt, checkpoint=checkpoint)


def test_a_checkpoint_stays_on_its_holder_until_it_is_more_than_one_job_behind() -> None:
    a, b = lanes({"A"}, {"B"})
    assert pick_lane([a, b], request("B")) is b
    b.queue.append(Job(request("B")))
    assert pick_lane([a, b], request("B")) is b  # one job more than the idle lane: still preferred
    b.queue.append(Job(request("B")))
    assert pick_lane([a, b], request("B")) is a  # two more: the least loaded takes it (and will load B)


def test_unheld_checkpoints_go_to_the_least_loaded_then_the_one_holding_less() -> None:
    a, b = lanes({"A", "B"}, set())
    assert pick_lane([a, b], request("C")) is b  # both idle: the one holding fewer checkpoints
    b.queue.append(Job(request("C")))
    assert pick_lane([a, b], request("C")) is a  # b is busier now
    c, d = lanes(set(), set())
    d.running = Job(request("X"))
    assert pick_lane([c, d], request("X")) is c


def test_the_same_lora_set_is_preferred_among_holders_and_lost_lanes_are_left_out() -> None:
    a, b = lanes({"A"}, {"A"})
    b.last_loras["A"] = frozenset({"ink"})
    assert pick_lane([a, b], request("A", "a cube <lora:ink:0.8>")) is b
    b.serve_id = None  # its replica stopped
    assert pick_lane([a, b], request("A", "a cube <lora:ink:0.8>")) is a
    assert pick_lane([a, b], request("A"), exclude=(a,)) is a  # nothing else runs: excluded or not


def test_a_queued_job_taken_back_ends_without_running_and_a_started_one_cannot_be() -> None:
    import threading

    from webui.engine.worker import JobResult, JobState, Worker

    release, ran = threading.Event(), []

    def runner(job: Job) -> JobResult:
        ran.append(job.id)
        release.wait(60)
        return JobResult()

    worker = Worker(runner)
    worker.start()
    try:
        first = worker.submit(request("A"))
        second = worker.submit(request("A"))
        version = 0
        while first.state == JobState.QUEUED:
            version = first.wait_for_update(version, timeout=30)
        assert worker.withdraw(first) is False  # running: it stays
        assert worker.withdraw(second) is True
        release.set()
        assert first.wait(30) and second.wait(30)
    finally:
        worker.stop()
    assert (first.state, second.state) == (JobState.DONE, JobState.INTERRUPTED)
    assert ran == [first.id]  # the taken-back job never ran
