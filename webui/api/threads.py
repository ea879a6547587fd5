"""Bounded lanes of threads for the API's blocking work, apart from the pool the page and the API share.

Starlette runs every plain `def` route, and Gradio its own routes, on one pool of 40 threads; a request that keeps
a thread while it waits (for the queue, for a lock, for a model to load) takes a thread the login page, the theme
and `/sdapi/v1/progress` need. The API's handlers therefore wait on jobs with `await` (no thread at all), and run
their CPU work — decoding an upload, reading the model list, encoding PNGs — on a `ThreadLane`: a few threads of
its own, held only while that work runs; a request waiting for a free thread of the lane waits on the event loop.
Extension routes written as plain functions each get a lane too (`in_lane`), so a slow or serialised one (one
preprocessor map at a time) waits in its lane instead of filling the shared pool.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

T = TypeVar("T")

API_THREADS = 8  # the API's CPU work: more threads than cores decode no faster
ROUTE_THREADS = 4  # each plain-function extension route


class ThreadLane:
    """At most `threads` threads running this lane's work at once (a capacity limiter per event loop)."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = threads
        self._limiter: RunVar[CapacityLimiter] = RunVar(f"easel-lane-{name}")

    def limiter(self) -> CapacityLimiter:
        """This loop's limiter (a server, or each TestClient, runs its own loop)."""
        try:
            return self._limiter.get()
        except LookupError:
            limiter = CapacityLimiter(self.threads)
            self._limiter.set(limiter)
            return limiter

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on one of this lane's threads; exceptions propagate as raised."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter())


API_LANE = ThreadLane("api", API_THREADS)


def in_lane(endpoint: Callable[..., Any], name: str, threads: int = ROUTE_THREADS) -> Callable[..., Any]:
    """An async route running a plain-function `endpoint` on a lane of its own; async endpoints and generators
    are returned as they are. The route wraps the endpoint (`__wrapped__`), so FastAPI reads the endpoint's own
    parameters, annotations and defaults."""
    if inspect.iscoroutinefunction(endpoint) or inspect.isgeneratorfunction(endpoint) \
            or inspect.isasyncgenfunction(endpoint):
        return endpoint
    lane = ThreadLane(name, threads)

    @functools.wraps(endpoint)
    async def route(*args: Any, **kwargs: Any) -> Any:
        return await lane.run(endpoint, *args, **kwargs)

    return route
