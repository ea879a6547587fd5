"""Training in the running app: one LoRA run at a time on a background thread, watched by the Train tab.

`TrainingService.start(yaml_text)` checks the config, the base model and the dataset right away (so mistakes come
back to the caller as `ConfigError` / `DatasetError`, naming the field or the file), then trains on its own
thread. The thread is not the generation worker: generation keeps working while a LoRA trains, on a CPU both
share its cores, on a GPU its memory. The trainer loads its own copy of the base model, so the pipelines the
worker has loaded are never touched. `status()` is a snapshot for polling (step, loss history, sample images,
the last message, an error); `cancel()` stops the run before its next step and saves, so starting the same
config again resumes. Importing this module loads nothing heavy; torch comes in when a run starts.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from webui.training.config import TrainConfig, config_from_yaml

if TYPE_CHECKING:
    from webui.training.trainer import TrainEvent

log = logging.getLogger(__name__)


class TrainingBusyError(ValueError):
    """A run is already going; one at a time."""


@dataclass(frozen=True)
class TrainingStatus:
    running: bool = False
    step: int = 0
    total: int = 0
    steps: tuple[int, ...] = ()  # the step of each loss below
    losses: tuple[float, ...] = ()
    samples: tuple[tuple[Path, str], ...] = ()  # (image, caption "step N: prompt")
    message: str = ""
    error: str | None = None
    output: Path | None = None  # the LoRA file once saved
    cancelled: bool = False
    elapsed_s: float = 0.0
    config: TrainConfig | None = None


class TrainingService:
    """One background LoRA run at a time (see the module docstring)."""

    def __init__(self, data_dir: Path, search_dirs: list[Path] | None = None, set_threads: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.search_dirs = search_dirs
        self.set_threads = set_threads  # the app keeps its own thread count unless asked
        self._lock = threading.Lock()
        self._status = TrainingStatus()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ control
    def parse(self, yaml_text: str) -> TrainConfig:
        return config_from_yaml(yaml_text, base_dir=self.data_dir)

    def start(self, yaml_text: str) -> TrainConfig:
        """Check everything that can be checked now, then train in the background."""
        from webui.training.dataset import load_dataset
        from webui.training.trainer import default_search_dirs, resolve_base_model

        config = self.parse(yaml_text)
        search = [*(self.search_dirs or []), *default_search_dirs(self.data_dir / "models")]
        resolve_base_model(config.base_model, search)
        dataset = load_dataset(config.dataset, config.resolution, config.trigger)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise TrainingBusyError("a LoRA is already training; cancel it or wait for it to finish")
            self._cancel = threading.Event()
            self._status = TrainingStatus(running=True, total=config.steps, config=config,
                                          message=f"loading {config.base_model} ({len(dataset)} images)")
            self._thread = threading.Thread(target=self._run, args=(config, search, self._cancel),
                                            name="easel-lora-training", daemon=True)
            self._thread.start()
        return config

    def cancel(self) -> bool:
        """Ask the run to stop after its current step; False when nothing runs."""
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
        if running:
            self._cancel.set()
            self._update(message="cancelling after this step ...")
        return running

    def status(self) -> TrainingStatus:
        with self._lock:
            return self._status

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends; False on timeout."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # ------------------------------------------------------------------------------------------ the thread
    def _update(self, **changes: object) -> None:
        from dataclasses import replace

        with self._lock:
            self._status = replace(self._status, **changes)

    def _on_event(self, event: "TrainEvent") -> None:
        status = self.status()
        if event.kind == "start":
            self._update(step=event.step, message=event.message)
        elif event.kind == "step" and event.loss is not None:
            self._update(step=event.step, steps=status.steps + (event.step,), losses=status.losses + (event.loss,),
                         elapsed_s=event.elapsed_s, message=f"step {event.step}/{event.total}, loss {event.loss:.4f}")
        elif event.kind == "sample":
            prompts = event.message.split(" | ")
            new = tuple((p, f"step {event.step}: {prompts[i] if i < len(prompts) else ''}")
                        for i, p in enumerate(event.samples))
            self._update(samples=status.samples + new)
        elif event.kind in ("save", "done", "cancelled"):
            self._update(output=event.path, message=f"step {event.step}: saved {event.path}")

    def _run(self, config: TrainConfig, search: list[Path], cancel: threading.Event) -> None:
        from webui.training.trainer import train

        started = time.monotonic()
        try:
            result = train(config, on_event=self._on_event, cancel=cancel, search_dirs=search,
                           set_threads=self.set_threads)
        except Exception as exc:  # noqa: BLE001 - any failure of the run is shown in the tab, never lost
            log.exception("LoRA training %s failed", config.output_name)
            self._update(running=False, error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError)
                         else str(exc), message="training failed")
            return
        verb = "cancelled" if result.cancelled else "finished"
        self._update(running=False, cancelled=result.cancelled, output=result.path,
                     message=f"{verb} at step {result.step}/{config.steps} in {time.monotonic() - started:.0f} s: "
                             f"{result.path}")
