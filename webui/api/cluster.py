"""`GET /easel/v1/cluster`: the generation replicas (docs/SCALING.md), behind the API's logins like every route.

`{"replicas": [{"id", "pid", "node", "device", "loaded", "jobs_done", "busy", "alive", "queued", "restarts"}]}`,
each replica's own report; without `--workers` / `--ray-address` the one in-process worker is shown the same way
(id "local"). Asking the replicas waits on them, so it runs on the API's lane of threads.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from webui.api.context import ApiContext
from webui.api.threads import in_lane


def cluster_router(api: ApiContext) -> APIRouter:
    router = api.router("/easel/v1", ["easel"])

    def cluster() -> dict[str, Any]:
        return api.easel.cluster_status()

    router.add_api_route("/cluster", in_lane(cluster, "cluster"), methods=["GET"])
    return router
