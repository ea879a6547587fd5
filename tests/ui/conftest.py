"""A stand-in for the `Easel` object, so UI unit tests build the real Blocks without torch or a model.

It offers exactly what the UI calls on `easel` (the helper methods of `webui.app.Easel` and the few manager and
worker methods the tabs use) over real `Settings` in a tmp data dir. Engine jobs are not run here: the
browser tests drive the real app end to end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from webui.infotext import parse_infotext, read_png_parameters
from webui.settings import Settings, UserSettings
from webui.styles import StyleStore

DIFFUSION = ["Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC"]
FLOW = ["Euler", "Euler a", "Heun", "DPM++ 2M", "UniPC"]


@dataclass
class StubEntry:
    name: str
    arch: str = "sd1"
    supported: bool = True
    reason: str = "SD 1.x"
    short_hash: str | None = None


class StubManager:
    def __init__(self) -> None:
        self.entries = [StubEntry("tiny-sd1"), StubEntry("easel-shapes", arch="easel"),
                        StubEntry("mystery.safetensors", arch="unknown", supported=False, reason="no known keys")]
        self.refreshed = 0

    def checkpoints(self) -> list[StubEntry]:
        return list(self.entries)

    def missing_components(self, entry: StubEntry) -> list[str]:
        return []

    def current(self) -> StubEntry | None:
        return None

    def loaded_names(self) -> list[str]:
        return []

    def refresh(self) -> None:
        self.refreshed += 1

    def vaes(self) -> list[StubEntry]:
        return []

    def loras(self) -> list[StubEntry]:
        return []

    def edit_checkpoints(self) -> list[StubEntry]:
        return [e for e in self.entries if e.arch == "easel"]

    def segmenters(self) -> list[Any]:
        return []

    def find_segmenter(self, name: str) -> Any:
        return None

    def memory_report(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float32", "ram_cache_size": 2, "loaded": [], "ram_bytes": 0,
                "device_bytes": 0}


class StubWorker:
    current = None

    def position(self, job: Any) -> int:
        return 0

    def interrupt(self, job_id: str | None = None) -> bool:
        return False

    def skip(self, job_id: str | None = None) -> bool:
        return False


@dataclass
class StubEngine:
    submitted: list[Any] = field(default_factory=list)
    worker: StubWorker = field(default_factory=StubWorker)

    def submit(self, request: Any, source: str = "ui") -> Any:
        self.submitted.append(request)
        raise RuntimeError("the stub engine runs no jobs")


class StubEasel:
    def __init__(self, data_dir: Path, user: UserSettings | None = None) -> None:
        self.settings = Settings(data_dir=data_dir, device="cpu", user=user or UserSettings())
        self.manager = StubManager()
        self.engine = StubEngine()
        self.extras: dict[str, Any] = {}
        self.registry = SimpleNamespace(tabs=[], accordions=[])
        self.styles = StyleStore(self.settings.data_dir)  # as Easel's: styles*.csv in the data dir
        self.extensions: list[Any] = []

    def page_token(self) -> str:  # as Easel's: the process's token for actions that run code
        from webui.http_guard import action_token

        return action_token(self.extras)

    def check_page_token(self, token: Any) -> None:
        from webui.http_guard import check_action_token

        check_action_token(self.extras, token)

    def _arch(self, checkpoint: str | None) -> str | None:
        return next((e.arch for e in self.manager.entries if e.name == checkpoint), None)

    clustered = False  # as Easel's without --workers / --ray-address: no replicas table

    def cluster_status(self) -> dict[str, Any]:
        return {"replicas": []}

    def checkpoint_choices(self) -> list[str]:
        return [e.name for e in self.manager.entries if e.supported]

    def seed_walk(self, checkpoint: str, seeds: list[int], frames: int, **options: Any) -> Any:
        """As Easel's: a StyleGAN seed walk queued (the stub engine runs no jobs)."""
        return self.engine.submit(("seed walk", checkpoint, tuple(seeds), frames, options), source="ui")

    def default_checkpoint(self) -> str:
        return self.checkpoint_choices()[0]

    def sampler_choices(self, checkpoint: str | None = None) -> list[str]:
        return FLOW if self._arch(checkpoint) == "easel" else DIFFUSION

    def default_sampler(self, checkpoint: str | None = None) -> str:
        choices = self.sampler_choices(checkpoint)
        preferred = self.settings.user.default_sampler
        return preferred if preferred in choices else choices[0]

    def vae_choices(self) -> list[str]:
        return ["Automatic"]

    def default_size(self, checkpoint: str | None = None) -> int:
        return 64 if self._arch(checkpoint or self.default_checkpoint()) == "easel" else 512

    def default_cfg(self, checkpoint: str | None = None) -> float:
        return 4.0 if self._arch(checkpoint or self.default_checkpoint()) == "easel" else 7.0

    def model_defaults(self, checkpoint: str | None = None) -> SimpleNamespace:
        """As Easel's (webui.model_manager.defaults.ModelDefaults): the built-in model 64 px at CFG 4, others 512."""
        size = self.default_size(checkpoint)
        return SimpleNamespace(width=size, height=size, steps=20, cfg_scale=self.default_cfg(checkpoint),
                               sampler=None, distilled_cfg_scale=None)

    def hidden_fields(self, checkpoint: str | None = None) -> frozenset[str]:
        """As Easel's: the request fields the checkpoint's family does not use (the stub's: SD and built-in, which
        has no tiled diffusion)."""
        builtin = self._arch(checkpoint or self.default_checkpoint()) == "easel"
        return frozenset({"noise_level", "stage2_steps", "stage3_steps", "truncation_psi", "class_label",
                          *(("tiled_diffusion",) if builtin else ())})

    def script_titles(self, mode: str) -> dict[str, str]:
        """As Easel's: the Script dropdown's {title: script_name}; the stub has no scripts."""
        return {}

    def script_job(self, name: str, request: Any, args: list[Any]) -> Any:
        raise ValueError(f"script_name: no script named {name!r} in this stub")

    def segment_model_choices(self) -> list[str]:
        return [e.name for e in self.manager.edit_checkpoints()]

    def default_segment_model(self) -> str:
        choices = self.segment_model_choices()
        return choices[0] if choices else ""

    def segment_template(self, model: str | None) -> str:
        return "highlight {query} in {colour}" if self._arch(model) == "easel" else ""

    def edit_model_choices(self) -> list[str]:
        return [e.name for e in self.manager.edit_checkpoints()]

    def default_edit_model(self) -> str:
        choices = self.edit_model_choices()
        return choices[0] if choices else ""

    @staticmethod
    def png_info(image: Image.Image) -> tuple[str, dict[str, str]]:
        text = read_png_parameters(image) or ""
        return text, (parse_infotext(text) if text else {})


@pytest.fixture
def stub_easel(tmp_path: Path) -> StubEasel:
    return StubEasel(tmp_path / "data")


@pytest.fixture
def built_ui(stub_easel: StubEasel):
    """(blocks, UIContext) for the stub easel."""
    from webui.ui.app import build_ui

    blocks, ui = build_ui(stub_easel)
    yield blocks, ui
    blocks.close()
