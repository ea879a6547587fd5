"""Where a job goes: one lane per replica place, and Easel's routing over them (docs/SCALING.md).

A lane is one replica's place ("replica-0" ...): the Serve replica in it now, the jobs sent there that have not
started, the one running, and the checkpoints it holds. `pick_lane` chooses the least loaded lane that already
holds the job's checkpoint (and its LoRA set, where one does), unless it has more than `AFFINITY_SLACK` jobs more
than the least loaded lane; otherwise the least loaded lane (ties: the one holding fewer checkpoints).
"""
from __future__ import annotations

import collections
import re
from typing import Any

from webui.engine.script_job import ScriptJob
from webui.engine.tasks import UpscaleRequest
from webui.engine.worker import Job
from webui.requests import GenerationRequest

AFFINITY_SLACK = 1  # jobs a holding replica may have beyond the least loaded one and still be preferred
LORA_TAG = re.compile(r"<lora:([^:>]+)")


def is_remote(request: Any) -> bool:
    """Whether a replica runs `request`: a generation, a model switch, a script's job or an upscale (extension
    calls run in-process)."""
    from webui.engine.engine import LoadRequest

    return isinstance(request, (GenerationRequest, LoadRequest, ScriptJob, UpscaleRequest))


def checkpoint_of(request: Any) -> str:
    """The checkpoint a request runs on, for routing ("" for none: an upscale)."""
    if isinstance(request, ScriptJob):
        first = request.base or (request.requests[0] if request.requests else None)
        return getattr(first, "checkpoint", "") or ""
    return getattr(request, "checkpoint", "") or ""


def lora_set(request: Any) -> frozenset[str]:
    if isinstance(request, ScriptJob):
        request = request.base
    text = f"{getattr(request, 'prompt', '')} {getattr(request, 'hr_prompt', '') or ''}"
    return frozenset(name.strip() for name in LORA_TAG.findall(text))


class Lane:
    """One replica position ("replica-0" ...): the Serve replica in it now, the jobs sent there, what it holds."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.serve_id: str | None = None  # the Serve replica's unique id (None: none in this lane now)
        self.info: dict[str, Any] = {}
        self.queue: collections.deque[Job] = collections.deque()  # sent, not started there
        self.running: Job | None = None
        self.held: set[str] = set()  # checkpoints loaded there (or assigned to load)
        self.last_loras: dict[str, frozenset[str]] = {}
        self.restarts = 0

    @property
    def alive(self) -> bool:
        return self.serve_id is not None

    @property
    def name(self) -> str:
        return f"replica-{self.index}"

    @property
    def load(self) -> int:
        return len(self.queue) + (1 if self.running is not None else 0)


def pick_lane(lanes: list[Lane], request: Any, exclude: tuple[Lane, ...] = ()) -> Lane:
    """The lane a job for `request` goes to (see the module's text); lanes in `exclude` only if no other runs."""
    alive = [lane for lane in lanes if lane.alive and lane not in exclude]
    if not alive:
        alive = [lane for lane in lanes if lane.alive] or list(lanes)
    checkpoint = checkpoint_of(request)
    loras = lora_set(request)
    best = min(alive, key=lambda lane: (lane.load, len(lane.held), lane.index))
    holders = [lane for lane in alive if checkpoint and checkpoint in lane.held]
    if holders:
        held = min(holders, key=lambda lane: (lane.load, lane.last_loras.get(checkpoint) != loras, lane.index))
        if held.load <= best.load + AFFINITY_SLACK:
            return held
    return best
