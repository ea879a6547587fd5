"""Generation on Ray Serve replicas (`--workers`, webui.cluster): a local Ray with 2 CPU replicas and tiny SD 1.x
models.

One cluster is started for the module (starting Ray, Serve and two replica processes costs tens of seconds) and
shut down at its end. The tests run in file order: the replica kill comes last.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

pytest.importorskip("ray")

from webui.engine.worker import JobState  # noqa: E402
from webui.requests import Txt2ImgRequest  # noqa: E402

pytestmark = pytest.mark.slow

A, B = "tiny-sd1", "tiny-sd1-b"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_dir: Path) -> Iterator:
    import ray
    import torch

    from tests.tiny_models import make_tiny_sd1
    from webui.app import build
    from webui.cluster.deployment import start_cluster
    from webui.settings import Settings

    root = tmp_path_factory.mktemp("cluster")
    diffusers_dir = root / "data" / "models" / "diffusers"
    diffusers_dir.mkdir(parents=True)
    shutil.copytree(tiny_sd1_dir, diffusers_dir / A)
    make_tiny_sd1(diffusers_dir / B, seed=1)
    settings = Settings(data_dir=root / "data", device="cpu", precision="full", builtin_dir=root / "no-builtin")
    easel = build(settings, with_extensions=False)
    dispatcher = start_cluster(easel.engine, workers=2, threads=1,
                               init_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024,
                                             "log_to_driver": False})
    easel.engine.start()
    threads = torch.get_num_threads()
    try:
        yield easel, dispatcher
    finally:
        easel.engine.stop()  # kills the replicas and shuts the Ray it started down
        torch.set_num_threads(threads)
        assert not ray.is_initialized()


def request(checkpoint: str = A, seed: int = -1, steps: int = 2, **changes) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt="a red cube", checkpoint=checkpoint, seed=seed, steps=steps, width=64, height=64,
                          sampler="Euler", **changes)


def wait_all(jobs, timeout: float = 300.0) -> None:
    for job in jobs:
        assert job.wait(timeout), f"{job.id} did not end"
        assert job.state == JobState.DONE, (job.id, job.state, job.error)


def records(dispatcher) -> dict[str, list[dict]]:
    return {status["id"]: status["records"] for status in dispatcher.replica_statuses()}


def test_two_checkpoints_alternating_stay_on_their_replicas(cluster) -> None:
    easel, dispatcher = cluster
    dispatcher.unload_replicas(None)
    wait_all([easel.engine.submit(request(A), "api")])  # warm-up: A on one replica, then B on the other
    wait_all([easel.engine.submit(request(B), "api")])
    before = {key: len(value) for key, value in records(dispatcher).items()}
    jobs = [easel.engine.submit(request(A if i % 2 == 0 else B), "api") for i in range(8)]
    wait_all(jobs)
    after = records(dispatcher)
    ran = {key: value[before[key]:] for key, value in after.items()}
    assert sum(len(value) for value in ran.values()) == 8
    checkpoints = {key: {r["checkpoint"] for r in value} for key, value in ran.items()}
    assert sorted(map(sorted, checkpoints.values())) == [[A], [B]], checkpoints  # one checkpoint each, both used
    assert [r for value in ran.values() for r in value if r["loaded"]] == []  # no reload after warm-up


def test_concurrent_jobs_spread_over_both_replicas_and_pngs_are_written_here(cluster) -> None:
    from webui.infotext import read_png_parameters
    from PIL import Image

    easel, dispatcher = cluster
    done_before = sum(s["jobs_done"] for s in dispatcher.replica_statuses())
    jobs = [easel.engine.submit(request(A, steps=6), "api") for _ in range(8)]
    assert max(easel.engine.worker.position(job) for job in jobs) >= 2  # some waited in a replica's lane
    wait_all(jobs)
    assert {job.result.info["replica"] for job in jobs} == {"replica-0", "replica-1"}
    assert sum(s["jobs_done"] for s in dispatcher.replica_statuses()) == done_before + 8
    for job in jobs:
        [path] = job.result.paths
        assert path.is_relative_to(easel.settings.outputs_dir)
        with Image.open(path) as image:
            assert read_png_parameters(image) == job.result.infotexts[0]
        assert f"Seed: {job.result.seeds[0]}" in job.result.infotexts[0]


def test_cluster_route_reports_the_replicas(cluster) -> None:
    from tests.conftest import api_client

    easel, dispatcher = cluster
    with api_client(easel) as client:
        answer = client.get("/easel/v1/cluster")
    assert answer.status_code == 200
    replicas = answer.json()["replicas"]
    assert [r["id"] for r in replicas] == ["replica-0", "replica-1"]
    for replica in replicas:
        assert replica["pid"] != os.getpid() and replica["device"] == "cpu" and replica["alive"] is True
        assert replica["busy"] is False and replica["jobs_done"] >= 1 and replica["loaded"]
    from webui.ui.tabs.models import replica_rows  # the Models tab's Cluster table, from the same report

    rows = replica_rows(easel.cluster_status())
    assert [(row[0], row[3], row[-1]) for row in rows] == [("replica-0", "cpu", "idle"), ("replica-1", "cpu", "idle")]
    assert easel.clustered is True


def test_interrupt_reaches_a_remote_job(cluster) -> None:
    from tests.conftest import api_client

    easel, dispatcher = cluster
    job = easel.engine.submit(request(A, steps=150, batch_count=8), "api")  # 1200 steps
    version = 0
    while job.step < 2 and not job.finished_state:  # progress streamed back from the replica
        version = job.wait_for_update(version, timeout=60)
    with api_client(easel) as client:
        assert client.post("/sdapi/v1/interrupt").json() == {"interrupted": True}
    assert job.wait(120)
    assert job.state == JobState.INTERRUPTED
    assert (0, 2) <= (job.batch_index, job.step) < (7, 150)  # stopped on its way, not at the end


def test_api_model_switch_and_txt2img_run_on_replicas(cluster) -> None:
    from tests.api.conftest import TINY, info_of
    from tests.conftest import api_client

    easel, dispatcher = cluster
    with api_client(easel) as client:
        title = next(m["title"] for m in client.get("/sdapi/v1/sd-models").json() if m["model_name"] == B)
        switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": title})
        assert switched.status_code == 200, switched.text
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "seed": 1, **TINY})
    assert answer.status_code == 200, answer.text
    assert info_of(answer.json())["sd_model_name"] == B  # the switched-to model, for a request naming none
    assert easel.manager.loaded_names() == []  # nothing was loaded in this process
    assert any(B in status["loaded"] for status in dispatcher.replica_statuses())


def test_script_and_extras_run_on_replicas_and_their_pngs_are_written_here(cluster) -> None:
    from PIL import Image

    from webui.infotext import read_png_parameters

    easel, dispatcher = cluster
    plot = easel.registry.scripts["x/y/z plot"].run(request(A, seed=5), ["Steps", "1, 2", [], 0, "", [], 0, "", [],
                                                                      True, True])
    job = easel.engine.submit(plot, "api")
    image = Image.new("RGB", (32, 24), (200, 30, 30))
    upscale = easel.upscale(image, "Lanczos", scale=2.0)
    wait_all([job, upscale])
    assert job.result.info["replica"] in ("replica-0", "replica-1") and job.result.info["grids"] == 1
    assert len(job.result.images) == len(job.result.paths) == 1 + 2  # the grid, then the two cells
    grid = job.result.paths[0]
    assert grid.is_relative_to(easel.settings.outputs_dir / "txt2img-grids")
    for path, text in zip(job.result.paths, job.result.infotexts):
        with Image.open(path) as saved:
            assert read_png_parameters(saved) == text
    assert upscale.result.info.get("replica") in ("replica-0", "replica-1")
    [path] = upscale.result.paths
    assert path.is_relative_to(easel.settings.outputs_dir / "extras-images")
    with Image.open(path) as saved:
        assert saved.size == (64, 48)
    assert easel.manager.loaded_names() == []  # nothing ran in this process


def test_skip_reaches_a_remote_job(cluster) -> None:
    from tests.conftest import api_client

    easel, dispatcher = cluster
    job = easel.engine.submit(request(A, steps=60, batch_count=2), "api")
    version = 0
    while job.step < 2 and not job.finished_state:
        version = job.wait_for_update(version, timeout=60)
    with api_client(easel) as client:
        assert client.post("/sdapi/v1/skip").json() == {"skipped": True}
    first_image_steps = job.step
    while not job.finished_state:
        version = job.wait_for_update(version, timeout=120)
        if job.batch_index == 0:
            first_image_steps = max(first_image_steps, job.step)
    assert job.state == JobState.DONE and len(job.result.images) == 2, job.error
    assert first_image_steps < 30  # the first image ended early; the second ran its 60 steps
    assert not job.interrupt_requested


def test_progress_shows_the_asked_job_or_the_oldest_running(cluster) -> None:
    from tests.conftest import api_client

    easel, dispatcher = cluster
    dispatcher.unload_replicas(None)  # nothing held: the second job goes to the other, idle replica
    first = easel.engine.submit(request(A, steps=150, batch_count=8), "api")
    version = 0
    while first.step < 1 and not first.finished_state:
        version = first.wait_for_update(version, timeout=120)
    second = easel.engine.submit(request(B, steps=150, batch_count=8), "api")
    version = 0
    while second.step < 1 and not second.finished_state:
        version = second.wait_for_update(version, timeout=120)
    assert dispatcher.lane_of(first) is not dispatcher.lane_of(second)
    with api_client(easel) as client:
        oldest = client.get("/sdapi/v1/progress").json()
        asked = client.get("/sdapi/v1/progress", params={"id_task": second.id}).json()
        assert client.post("/sdapi/v1/interrupt").json() == {"interrupted": True}  # every running job
    assert oldest["current_task"] == first.id and oldest["state"]["sampling_steps"] == 150
    assert asked["current_task"] == second.id and asked["state"]["sampling_step"] >= 1
    assert first.wait(120) and second.wait(120)
    assert (first.state, second.state) == (JobState.INTERRUPTED, JobState.INTERRUPTED)


def test_killed_replica_job_retried_with_identical_images(cluster) -> None:
    import torch

    from webui.app import build

    easel, dispatcher = cluster
    pngs_before = len(list(easel.settings.outputs_dir.rglob("*.png")))
    pids = [status["pid"] for status in dispatcher.replica_statuses()]
    victim = easel.engine.submit(request(A, steps=20, batch_count=2), "api")  # long enough to be killed in
    jobs = [victim] + [easel.engine.submit(request(B if i % 2 else A, steps=4), "api") for i in range(3)]
    version = 0
    while victim.step < 2 and not victim.finished_state:
        version = victim.wait_for_update(version, timeout=120)
    lane = dispatcher.lane_of(victim)
    pid = pids[lane.index]
    os.kill(pid, signal.SIGKILL)
    wait_all(jobs)
    assert victim.attempts == 1  # retried once (the jobs only waiting there were sent again without counting)
    assert dispatcher.wait_replicas(2, 300)  # Serve replaced the replica, in the dead one's lane
    assert lane.restarts == 1
    assert dispatcher.replica_statuses()[lane.index]["pid"] not in pids  # a fresh process
    for job in jobs:  # each image written once: none lost, none twice
        assert len(job.result.images) == len(job.result.paths) == job.request.batch_count
    assert len(list(easel.settings.outputs_dir.rglob("*.png"))) == pngs_before + 5

    # the same requests (seeds as drawn) on the in-process engine, with the replicas' thread count
    quiet = dataclasses.replace(easel.settings, user=dataclasses.replace(easel.settings.user, save_images=False))
    local = build(quiet, with_extensions=False)
    local.engine.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            same = local.engine.generate(job.request, "api", timeout=300)
            assert same.state == JobState.DONE, same.error
            for mine, theirs in zip(same.result.images, job.result.images, strict=True):
                assert np.array_equal(np.asarray(mine), np.asarray(theirs)), job.id
            assert same.result.infotexts == job.result.infotexts
    finally:
        torch.set_num_threads(threads)
        local.engine.stop()
