"""Ray Serve's autoscaling of the replicas between `--min-workers` and `--workers` on the queue's length: a local
Ray with 1 to 2 CPU replicas and a tiny SD 1.x model. Its own Ray (one per process), so it runs apart from
test_replicas' module cluster."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("ray")

from webui.engine.worker import JobState  # noqa: E402
from webui.requests import Txt2ImgRequest  # noqa: E402

pytestmark = pytest.mark.slow


def request(seed: int) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt="a red cube", checkpoint="tiny-sd1", seed=seed, steps=30, width=64, height=64,
                          sampler="Euler")


def test_a_second_replica_starts_under_load_and_takes_jobs(tmp_path: Path, tiny_sd1_dir: Path) -> None:
    import ray
    import torch

    from webui.app import build
    from webui.cluster.deployment import start_cluster
    from webui.settings import Settings

    shutil.copytree(tiny_sd1_dir, tmp_path / "data" / "models" / "diffusers" / "tiny-sd1")
    settings = Settings(data_dir=tmp_path / "data", device="cpu", precision="full", builtin_dir=tmp_path / "none")
    easel = build(settings, with_extensions=False)
    threads = torch.get_num_threads()
    dispatcher = start_cluster(easel.engine, workers=2, min_workers=1, threads=1,
                               init_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024,
                                             "log_to_driver": False})
    easel.engine.start()
    try:
        assert [r["id"] for r in easel.cluster_status()["replicas"]] == ["replica-0"]  # the minimum at first
        burst = [easel.engine.submit(request(seed), "api") for seed in range(8)]  # all sent: Serve sees 8 waiting
        assert dispatcher.wait_replicas(2, 300), "no second replica within 300 s"
        replicas = easel.cluster_status()["replicas"]
        assert [r["id"] for r in replicas] == ["replica-0", "replica-1"]
        assert len({r["pid"] for r in replicas}) == 2 and all(r["alive"] for r in replicas)
        later = [easel.engine.submit(request(100 + seed), "api") for seed in range(3)]
        for job in burst + later:
            assert job.wait(600) and job.state == JobState.DONE, (job.id, job.state, job.error)
        assert "replica-1" in {job.result.info["replica"] for job in later}  # the new replica takes work
    finally:
        easel.engine.stop()
        torch.set_num_threads(threads)
    assert not ray.is_initialized()
