"""The extension API (`ExtensionAPI`, version `API_VERSION`) and the loader that sets extensions up.

Extensions import `webui.extension_api`, the small public module that re-exports the API with the request
types it passes around; this module is its implementation. An extension is a folder in `extensions/` with an
`extension.json` manifest (`{"name": ..., "version": ..., "description": ..., "api_version": 1,
"entry": "extension.py"}`) and an entry module that defines `setup(api: ExtensionAPI) -> None`. Through `api`
it can add a UI tab or an accordion to a mode's tab, change requests before generation, post-process images
after, add API routes and API scripts, add samplers, add preprocessors and read settings. `API_VERSION`
changes only when something here breaks; an extension that asks for another version is refused with a
message instead of failing later.

Loading is isolated: an extension that raises during import or `setup` is recorded with its error and every
other extension and Easel itself go on.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from webui.app import Easel

log = logging.getLogger(__name__)

API_VERSION = 1
MANIFEST = "extension.json"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str = "0.0.0"
    description: str = ""
    api_version: int = API_VERSION
    entry: str = "extension.py"

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST
        if not path.exists():
            return cls(name=folder.name)
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"{MANIFEST}: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in raw.items() if k in known}
        data.setdefault("name", folder.name)
        if not isinstance(data.get("api_version", API_VERSION), int):
            raise ValueError(f"{MANIFEST}: api_version must be a whole number")
        return cls(**data)


@dataclass
class UIContribution:
    title: str
    build: Callable[[], None]  # called inside a gr.Tab / gr.Accordion context
    mode: str | None = None  # for accordions: "txt2img", "img2img", "inpaint", "segment"
    extension: str = ""


@dataclass
class RouteContribution:
    path: str
    endpoint: Callable[..., Any]
    methods: list[str]
    extension: str = ""


@dataclass
class ScriptContribution:
    """A script API clients select with `script_name` and feed with `script_args`.

    `run(request, args)` gets the typed request and the client's `script_args` list and returns the request
    to generate (changed or not), or a list of requests whose images are returned together.
    """

    name: str
    run: Callable[[Any, list[Any]], Any]
    modes: tuple[str, ...] = ("txt2img", "img2img")
    args: tuple[str, ...] = ()  # labels of the arguments, in order, for /sdapi/v1/script-info
    extension: str = ""


@dataclass
class Registry:
    """Everything extensions contributed; the UI and API read it when they are built."""

    tabs: list[UIContribution] = field(default_factory=list)
    accordions: list[UIContribution] = field(default_factory=list)
    routes: list[RouteContribution] = field(default_factory=list)
    preprocessors: dict[str, Callable[..., Any]] = field(default_factory=dict)
    scripts: dict[str, ScriptContribution] = field(default_factory=dict)  # by lower-case name


class ExtensionAPI:
    """What an extension's `setup(api)` receives."""

    version = API_VERSION

    def __init__(self, easel: "Easel", registry: Registry, name: str, folder: Path) -> None:
        self._easel = easel
        self._registry = registry
        self.name = name
        self.folder = folder
        self.log = logging.getLogger(f"easel.extensions.{name}")

    def add_tab(self, title: str, build: Callable[[], None]) -> None:
        """Add a top-level UI tab; `build()` creates Gradio components inside it."""
        self._registry.tabs.append(UIContribution(title, build, None, self.name))

    def add_accordion(self, mode: str, title: str, build: Callable[[], None]) -> None:
        """Add an accordion to a mode's tab ("txt2img", "img2img", "inpaint", "segment")."""
        if mode not in ("txt2img", "img2img", "inpaint", "segment"):
            raise ValueError(f"mode: unknown tab {mode!r}")
        self._registry.accordions.append(UIContribution(title, build, mode, self.name))

    def before_generate(self, hook: Callable[[Any], Any]) -> None:
        """`hook(request) -> request | None` runs on the worker before each job; return a changed request."""
        self._easel.engine.before_generate.append(hook)

    def after_generate(self, hook: Callable[[Any, list[Any]], list[Any] | None]) -> None:
        """`hook(request, generated) -> generated | None`; each item has `.image`, `.seed`, `.extra`."""
        self._easel.engine.after_generate.append(hook)

    def add_route(self, path: str, endpoint: Callable[..., Any], methods: list[str] | None = None) -> None:
        """Add an HTTP route; it must live under `/extensions/<name>/`."""
        prefix = f"/extensions/{self.name}/"
        if not path.startswith(prefix):
            raise ValueError(f"path: extension routes must start with {prefix}")
        self._registry.routes.append(RouteContribution(path, endpoint, methods or ["GET"], self.name))

    def add_sampler(self, name: str, scheduler_class: str, overrides: dict[str, Any] | None = None) -> None:
        """Offer a diffusers scheduler under a sampler name for SD-family models."""
        from webui.engine.samplers import DIFFUSION_SAMPLERS

        DIFFUSION_SAMPLERS[name] = (scheduler_class, dict(overrides or {}))

    def add_preprocessor(self, name: str, fn: Callable[..., Any]) -> None:
        """Register an image preprocessor (PIL image in, PIL image out) by name."""
        self._registry.preprocessors[name] = fn

    def add_script(self, name: str, run: Callable[[Any, list[Any]], Any],
                   modes: tuple[str, ...] = ("txt2img", "img2img"), args: tuple[str, ...] = ()) -> None:
        """Offer a script to API clients (`script_name`, `script_args`); see `ScriptContribution`."""
        key = name.strip().lower()
        if not key:
            raise ValueError("name: a script needs a name")
        unknown = [m for m in modes if m not in ("txt2img", "img2img")]
        if unknown:
            raise ValueError(f"modes: scripts run in txt2img and img2img, not {', '.join(unknown)}")
        if key in self._registry.scripts:
            raise ValueError(f"name: a script named {name!r} is already registered by "
                             f"{self._registry.scripts[key].extension}")
        self._registry.scripts[key] = ScriptContribution(key, run, tuple(modes), tuple(args), self.name)

    def setting(self, key: str) -> Any:
        """Read one user setting (see the Settings tab)."""
        return getattr(self._easel.settings.user, key)


@dataclass
class LoadedExtension:
    name: str
    folder: Path
    manifest: Manifest | None
    enabled: bool
    loaded: bool = False
    error: str | None = None


def discover(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def load_extensions(easel: "Easel", folders: list[Path], disabled: set[str], registry: Registry) -> list[LoadedExtension]:
    """Import and set up every enabled extension; a failing one is recorded, never fatal."""
    results: list[LoadedExtension] = []
    for folder in [p for base in folders for p in discover(base)]:
        item = LoadedExtension(folder.name, folder, None, folder.name not in disabled)
        results.append(item)
        try:
            item.manifest = Manifest.read(folder)
            item.name = item.manifest.name
            item.enabled = item.name not in disabled and folder.name not in disabled
            if not item.enabled:
                continue
            if item.manifest.api_version != API_VERSION:
                raise RuntimeError(f"needs extension API version {item.manifest.api_version}; "
                                   f"this Easel provides {API_VERSION}")
            entry = folder / item.manifest.entry
            if not entry.resolve().is_relative_to(folder.resolve()) or not entry.exists():
                raise FileNotFoundError(f"entry module {item.manifest.entry} not found in {folder.name}")
            module_name = f"easel_extension_{folder.name.replace('-', '_')}"
            spec = importlib.util.spec_from_file_location(module_name, entry)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            if not callable(getattr(module, "setup", None)):
                raise AttributeError("the entry module has no setup(api) function")
            module.setup(ExtensionAPI(easel, registry, item.name, folder))
            item.loaded = True
            log.info("extension %s %s loaded", item.name, item.manifest.version)
        except Exception as exc:  # noqa: BLE001 - one extension must never stop Easel
            item.error = f"{exc.__class__.__name__}: {exc}"
            log.warning("extension %s failed to load: %s\n%s", folder.name, item.error, traceback.format_exc())
    return results
