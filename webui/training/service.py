"""Training in the running app: one LoRA run at a time on a background thread, watched by the Train tab.

`TrainingService.start(yaml_text)` first refuses a second run while one is training, then checks the config (its
paths confined to the training folders, its sizes within their limits), the base model, the output name and the
dataset's files, captions and image headers (so mistakes come back to the caller as `ConfigError` /
`DatasetError`, naming the field or the file), then reads the images and trains on a thread of its own. The
thread is not the generation worker: generation keeps working while a LoRA trains, on a CPU both share its
cores, on a GPU its memory. The trainer loads its own copy of the base model, so the pipelines the
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
from webui.training.folders import TrainingFolders

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

    def __init__(self, folders: TrainingFolders, set_threads: bool = False) -> None:
        self.folders = folders  # where configs may read and write (webui/training/folders.py)
        self.set_threads = set_threads  # the app keeps its own thread count unless asked
        self._lock = threading.Lock()
        self._status = TrainingStatus()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = False  # a start is checking its config; a second one is refused meanwhile

    # ------------------------------------------------------------------------------------------ control
    def parse(self, yaml_text: str) -> TrainConfig:
        return config_from_yaml(yaml_text, folders=self.folders)

    def start(self, yaml_text: str) -> TrainConfig:
        """Refuse while a run trains; check everything that can be checked without decoding the images; then
        read the dataset and train in the background."""
        from webui.training.dataset import scan_dataset
        from webui.training.trainer import claim_output

        with self._lock:
            if self._starting or (self._thread is not None and self._thread.is_alive()):
                raise TrainingBusyError("a LoRA is already training; cancel it or wait for it to finish")
            self._starting = True
        try:
            config, renamed = claim_output(self.parse(yaml_text))
            entries = scan_dataset(config.dataset, config.resolution, config.trigger)
            message = f"loading {config.base_model} ({len(entries)} images)"
            with self._lock:
                self._cancel = threading.Event()
                self._status = TrainingStatus(running=True, total=config.steps, config=config,
                                              message=f"{renamed}; {message}" if renamed else message)
                self._thread = threading.Thread(target=self._run, args=(config, list(self.folders.models),
                                                                         self._cancel),
                                                name="easel-lora-training", daemon=True)
                self._thread.start()
        finally:
            with self._lock:
                self._starting = False
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
