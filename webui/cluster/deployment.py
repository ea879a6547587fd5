"""Starting the replicas: Ray, Ray Serve without its HTTP proxy, and the replicas' deployment (docs/SCALING.md).

`start_cluster` starts (or joins) Ray, starts Serve with no proxy (the API process reaches the replicas through
the deployment's handle only), deploys `webui.cluster.replica.Replica` as the application "easel" — a fixed
number of replicas, or with `min_workers` below `workers` Serve's autoscaling between the two on the number of
jobs sent and not finished (`target_ongoing_requests` of 1: one job per replica) — and makes a `Dispatcher` over
the handle the engine's worker.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from webui.cluster.dispatcher import CONTROL_CALLS, Dispatcher

log = logging.getLogger(__name__)

APP = "easel"
UPSCALE_DELAY_S = 2.0  # how long the queue must stay longer than the replicas before one is added
DOWNSCALE_DELAY_S = 120.0  # how long a replica must be idle before it is stopped
DRAIN_S = 600.0  # how long a replica being stopped may finish the jobs it has


def autoscaling(minimum: int, maximum: int) -> dict[str, Any]:
    """Serve's autoscaling config: between `minimum` and `maximum` replicas, one job each."""
    return {"min_replicas": minimum, "max_replicas": maximum, "initial_replicas": minimum,
            "target_ongoing_requests": 1, "upscale_delay_s": UPSCALE_DELAY_S,
            "downscale_delay_s": DOWNSCALE_DELAY_S, "metrics_interval_s": 0.5, "look_back_period_s": 2.0}


def start_cluster(engine: Any, workers: int = 0, address: str | None = None, threads: int | None = None,
                  init_options: dict[str, Any] | None = None, min_workers: int = 0) -> Dispatcher:
    """Start (or join, with `address`) Ray and Serve, deploy the replicas built from `engine.settings`, and make
    a `Dispatcher` over them `engine.worker`. Call before `engine.start()`. With no `workers`: one per GPU of the
    cluster, or one when it has none. With `min_workers` (0 < it < workers) Serve scales between the two."""
    import ray
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from webui.cluster.replica import Replica
    from webui.cluster import serve_router
    from webui.cluster.serve_router import EaselRouter

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
    minimum = min_workers if 0 < min_workers < count else count
    cpus = float(resources.get("CPU", 1))
    per_cpu = min(1.0, cpus / count)
    per_gpu = 0.0 if not gpus else min(1.0, gpus / count)
    threads = threads or max(1, int((os.cpu_count() or 1) // count))
    settings = dataclasses.replace(engine.settings, workers=0, min_workers=0, ray_address=None)
    queue_size = engine.settings.user.queue_size
    scaling: dict[str, Any] = ({"autoscaling_config": autoscaling(minimum, count)} if minimum < count
                               else {"num_replicas": count})
    deployment = serve.deployment(
        Replica, name="Replica", max_ongoing_requests=queue_size + CONTROL_CALLS,
        ray_actor_options={"num_cpus": per_cpu, "num_gpus": per_gpu, "runtime_env": {"env_vars": replica_env()}},
        request_router_config=RequestRouterConfig(request_router_class=EaselRouter,
                                                  request_routing_stats_period_s=2.0),
        graceful_shutdown_timeout_s=DRAIN_S, health_check_period_s=2.0, **scaling)
    serve_router.LATEST = []  # nothing known of this deployment's replicas yet
    serve.start(proxy_location="Disabled")
    handle = serve.run(deployment.bind(settings, threads), name=APP, route_prefix=None)

    def stop() -> None:
        serve.delete(APP)
        if started:
            serve.shutdown()
            ray.shutdown()

    dispatcher = Dispatcher(engine, handle, queue_size=queue_size, on_stop=stop, wait_for=minimum)
    engine.worker = dispatcher
    log.info("Ray Serve: %s replica(s), %.2g CPU%s each, %d torch thread(s)",
             count if minimum == count else f"{minimum} to {count}", per_cpu,
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
