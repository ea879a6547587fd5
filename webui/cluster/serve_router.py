"""The Ray Serve request router of the replicas' deployment: every call goes to the replica Easel chose.

Easel routes generation jobs itself (`webui.cluster.dispatcher`: the replica holding the checkpoint and LoRA set,
then the least loaded), and Interrupt, Skip and the status report must reach one given replica, so each call
names its replica in the keyword argument `replica` (the Serve replica's unique id) and this router sends it
there. A call naming a replica that is gone goes to the replica with the fewest calls in flight; the replica
says who it is when the job starts, so the dispatcher follows the job there.

Serve builds the router in the process that holds the deployment's handle (the API process) from a pickled copy
of this class, so the module-level `LISTENERS` are looked up in `sys.modules` at call time: each listener gets the
replicas' `(unique id, full actor name)` whenever Serve's set of running replicas changes (started, replaced after
a death, added or removed by autoscaling); `LATEST` keeps the last list.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

log = logging.getLogger(__name__)

TARGET = "replica"  # the keyword argument naming the replica a call is for
LISTENERS: list[Callable[[list[tuple[str, str]]], None]] = []  # called on the router's event loop: keep them short
LATEST: list[tuple[str, str]] = []  # the replicas of the last update, for a listener that comes later


class EaselRouter(RequestRouter):
    """Sends each call to the replica its `replica` keyword names (see the module's text)."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        target = pending_request.kwargs.get(TARGET) if pending_request is not None else None
        for replica in candidate_replicas:
            if replica.replica_id.unique_id == target:
                return [[replica]]
        cache = self.replica_queue_len_cache
        return [sorted(candidate_replicas, key=lambda r: cache.get(r.replica_id) or 0)]

    def update_replicas(self, replicas: list[RunningReplica]) -> Any:
        answer = super().update_replicas(replicas)
        module = sys.modules.get(__name__)
        listeners = getattr(module, "LISTENERS", LISTENERS)
        known = [(r.replica_id.unique_id, r.replica_id.to_full_id_str()) for r in replicas]
        if module is not None:
            module.LATEST = known
        for listener in list(listeners):
            try:
                listener(known)
            except Exception:  # noqa: BLE001 - a listener must not stop Serve's routing
                log.exception("a replica listener failed")
        return answer
