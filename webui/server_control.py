"""Stopping or restarting the running server on request (`/sdapi/v1/server-stop`, `server-restart`).

`ServerControl` is what `webui.app.create_server` waits on while the server runs: a route asks for "stop" or
"restart", the server it serves from is shut down gracefully (requests in flight are answered), and
`webui.app.main` then returns (the process exits with status 0) or replaces the process by a fresh Easel started
with the same command line (`webui.app.restart_process`). Only `main` creates one: an Easel built by a test or
an embedding program has none, and its routes answer that there is nothing to stop.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Literal

log = logging.getLogger(__name__)

Command = Literal["stop", "restart"]


class ServerControl:
    """One request to stop or restart, and the callbacks that shut the server down when it comes."""

    def __init__(self) -> None:
        self._asked = threading.Event()
        self._lock = threading.Lock()
        self._command: Command | None = None
        self._stoppers: list[Callable[[], None]] = []

    @property
    def command(self) -> Command | None:
        """What was asked ("stop" or "restart"), or None while the server runs."""
        with self._lock:
            return self._command

    def on_stop(self, stopper: Callable[[], None]) -> None:
        """Call `stopper` (shut the server down) when a stop or restart is asked."""
        with self._lock:
            self._stoppers.append(stopper)

    def ask(self, command: Command) -> None:
        """Ask for `command`; the first request wins, later ones change nothing."""
        with self._lock:
            if self._command is not None:
                return
            self._command = command
            stoppers = list(self._stoppers)
        log.warning("server %s requested through the API", command)
        self._asked.set()
        for stopper in stoppers:
            stopper()

    def wait(self, timeout: float | None = None) -> Command | None:
        """Block until a command is asked (or `timeout` seconds pass); return it."""
        self._asked.wait(timeout)
        return self.command
