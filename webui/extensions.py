"""The extension API (`ExtensionAPI`, version `API_VERSION`) and the loader that sets extensions up.

Extensions import `webui.extension_api`, the small public module that re-exports the API with the request
types it passes around; this module is its implementation. An extension is a folder in `extensions/` with an
`extension.json` manifest (`{"name": ..., "version": ..., "description": ..., "api_version": 1,
"entry": "extension.py"}`) and an entry module that defines `setup(api: ExtensionAPI) -> None`. Through `api`
it can add a UI tab or an accordion to a mode's tab, change requests before generation, post-process images
after, add API routes and API scripts, add samplers, add preprocessors and read settings. It can also take
per-request arguments (the API's `alwayson_scripts`, its accordion's controls) and wrap each diffusers
pipeline call a mode makes (swap the pipeline, add call arguments), and declare adapter models (ControlNets,
...) a request needs, loaded with the checkpoint in one call and held in Easel's one memory cache, which is how
the bundled ControlNet extension works. `API_VERSION` changes only when something here breaks; an extension that asks for another
version is refused with a message instead of failing later.

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
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from webui.app import Easel

log = logging.getLogger(__name__)

API_VERSION = 1
MANIFEST = "extension.json"

# Top-level paths Easel, its API and Gradio use: no extension may claim `/<name>/` over them.
RESERVED_ROUTE_NAMES = frozenset({
    "sdapi", "extensions", "docs", "redoc", "openapi.json", "internal", "file", "gradio_api", "assets", "static",
    "config", "info", "queue", "upload", "login", "logout", "theme.css", "heartbeat", "manifest.json", "svelte",
    "custom_component", "proxy", "stream", "monitoring", "favicon.ico", "user", "token", "app_id", "startup-events",
})
# Samplers extensions added (name -> extension). The sampler table is shared by the process, so an extension
# set up again (a second Easel in the same process) may replace its own samplers but no one else's.
SAMPLER_OWNERS: dict[str, str] = {}
# Extra folders the launch flags add to each kind of model folder (see `ExtensionAPI.model_folders`).
MODEL_FOLDER_FLAGS = {"Stable-diffusion": "ckpt_dirs", "Lora": "lora_dirs", "VAE": "vae_dirs",
                      "ControlNet": "controlnet_dirs", "ESRGAN": "esrgan_dirs"}


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
class ExtensionInputs:
    """What an accordion's `build()` returns when its controls take part in generation.

    On Generate the UI reads the values of `components` (in order), calls `to_args(*values)` and passes the result
    through the extension's request-argument parser (`ExtensionAPI.add_request_args`), exactly as the API does
    with `alwayson_scripts[<name>]["args"]`; hooks then find it in `request.extension_args[<name>]`.
    """

    components: list[Any]  # gradio components inside the accordion
    to_args: Callable[..., Any]


@dataclass
class UIContribution:
    title: str
    build: Callable[[], "ExtensionInputs | None"]  # called inside a gr.Tab / gr.Accordion context
    mode: str | None = None  # for accordions: "txt2img", "img2img", "inpaint", "segment"
    extension: str = ""


@dataclass(frozen=True)
class PipelineCall:
    """One diffusers pipeline call a mode is about to make, as a pipeline wrapper sees it.

    `kwargs` are the call's arguments in the form this pipeline takes: prompt (or prompt embeddings), guidance,
    `num_inference_steps`, `generator`, `callback_on_step_end`, `output_type`, and per task `width`/`height`
    (txt2img), `image` + `strength` (img2img) or `image` + `mask_image` + `strength` + `width`/`height`
    (inpaint). Treat it as read-only and hand a changed copy on with `replace(kwargs={...})`.
    """

    request: Any  # the GenerationRequest being run (its `extension_args` hold per-request extension arguments)
    task: str  # "txt2img", "img2img" or "inpaint": what this call does (a hires fix pass is "img2img")
    arch: str  # model family: "sd1", "sd2", "sdxl", "sd3", "flux", "zimage", "qwenimage", "easel"
    checkpoint: str  # the loaded checkpoint's name
    pipe: Any  # the diffusers pipeline about to be called
    kwargs: dict[str, Any]

    def replace(self, **changes: Any) -> "PipelineCall":
        return dataclasses.replace(self, **changes)


# `wrapper(call, run) -> output`: do what is needed, call `run(call)` (or `run(call.replace(...))`) once and
# return its output. Wrappers nest in registration order (the first registered is outermost).
PipelineWrapper = Callable[[PipelineCall, Callable[[PipelineCall], Any]], Any]


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
    request_args: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # extension name -> parser
    runtime_errors: dict[str, str] = field(default_factory=dict)  # extension name -> its last hook failure

    def parse_request_args(self, scripts: Mapping[str, Any] | None) -> dict[str, Any]:
        """`request.extension_args` from AUTOMATIC1111's `alwayson_scripts` form or an accordion's values.

        Keys name an extension, in any case ("ControlNet" finds "controlnet"); a value is either
        `{"args": [...]}` (the API form) or the arguments themselves. Raises `RequestError` naming
        `alwayson_scripts.<key>` for a name no loaded extension accepts, or when the extension's parser rejects
        its arguments (its message says which).
        """
        from webui.requests import RequestError

        parsed: dict[str, Any] = {}
        by_lower = {name.lower(): name for name in self.request_args}
        for key, value in (scripts or {}).items():
            name = by_lower.get(str(key).lower())
            if name is None:
                known = ", ".join(sorted(self.request_args)) or "none"
                raise RequestError(f"alwayson_scripts.{key}", f"no loaded extension takes arguments under this "
                                                              f"name (these do: {known})")
            raw = value["args"] if isinstance(value, Mapping) and "args" in value else value
            try:
                parsed[name] = self.request_args[name](raw)
            except (ValueError, TypeError) as exc:
                raise RequestError(f"alwayson_scripts.{key}", str(exc)) from None
        return parsed


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

    def add_accordion(self, mode: str, title: str, build: Callable[[], ExtensionInputs | None]) -> None:
        """Add an accordion to a mode's tab ("txt2img", "img2img", "inpaint", "segment").

        `build()` creates Gradio components inside it; when their values should reach generation it returns
        `ExtensionInputs` (see there), else None.
        """
        if mode not in ("txt2img", "img2img", "inpaint", "segment"):
            raise ValueError(f"mode: unknown tab {mode!r}")
        self._registry.accordions.append(UIContribution(title, build, mode, self.name))

    def before_generate(self, hook: Callable[[Any], Any]) -> None:
        """`hook(request) -> request | None` runs on the worker before each job; return a changed request.

        A `ValueError` from the hook fails the job with its message (one starting with `field: ` is the
        client's mistake, a 4xx in the API). Any other exception is logged, recorded as this extension's
        error (the Extensions tab shows it) and the job goes on with the request unchanged.
        """
        self._easel.engine.before_generate.append(self._isolated(hook, "before_generate"))

    def after_generate(self, hook: Callable[[Any, list[Any]], list[Any] | None]) -> None:
        """`hook(request, generated) -> generated | None`; each item has `.image`, `.seed`, `.extra`.

        Failures are handled as for `before_generate`: the images are kept as they were."""
        self._easel.engine.after_generate.append(self._isolated(hook, "after_generate"))

    def _isolated(self, hook: Callable[..., Any], kind: str) -> Callable[..., Any]:
        """`hook` wrapped so that a crash in it (not a ValueError) is logged and recorded, never fatal."""
        registry, name = self._registry, self.name

        def run(*args: Any) -> Any:
            try:
                return hook(*args)
            except ValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - one extension's bug must not fail every job
                message = f"{kind} hook {getattr(hook, '__name__', 'hook')} failed: {exc.__class__.__name__}: {exc}"
                registry.runtime_errors[name] = message
                log.warning("extension %s: %s (skipped)\n%s", name, message, traceback.format_exc())
                return None

        run.__name__ = getattr(hook, "__name__", kind)
        run.__qualname__ = f"{name}.{run.__name__}"
        return run

    def add_route(self, path: str, endpoint: Callable[..., Any], methods: list[str] | None = None) -> None:
        """Add an HTTP route under `/extensions/<name>/`, or under `/<name>/` (where AUTOMATIC1111 extensions
        put theirs, e.g. `/controlnet/model_list`) unless that name is one of Easel's own top-level paths."""
        prefixes = [f"/extensions/{self.name}/"]
        if self.name.lower() not in RESERVED_ROUTE_NAMES:
            prefixes.append(f"/{self.name}/")
        if not any(path.startswith(prefix) for prefix in prefixes):
            raise ValueError(f"path: extension routes must start with {' or '.join(prefixes)}")
        self._registry.routes.append(RouteContribution(path, endpoint, methods or ["GET"], self.name))

    def add_request_args(self, parse: Callable[[Any], Any]) -> None:
        """Take per-request arguments under this extension's name.

        Clients send them as `alwayson_scripts: {"<name>": {"args": [...]}}` (AUTOMATIC1111's form, name in any
        case) and the extension's accordion returns them through `ExtensionInputs`. `parse(raw)` checks and
        converts them before the job is queued, raising ValueError with a message that names the bad key (the
        API answers 422, the UI shows it); hooks and pipeline wrappers read the result as
        `request.extension_args["<name>"]`. Requests made in code may carry unparsed arguments there, so hooks
        should accept both.
        """
        self._registry.request_args[self.name] = parse

    def wrap_pipeline(self, wrapper: PipelineWrapper) -> None:
        """Run `wrapper(call, run)` around every diffusers pipeline call the txt2img, img2img and inpaint modes
        make (see `PipelineCall`): it may hand `run` another pipeline built from `call.pipe`'s components (with
        `from_pipe`) and other call arguments. A wrapper with nothing to do returns `run(call)`; one that raises
        fails the job with its message (a `ValueError` whose message starts with `field: ` is the client's
        mistake, a 4xx in the API)."""
        self._easel.engine.pipeline_wrappers.append(wrapper)

    def add_adapter(self, kind: str, wanted: Callable[[Any], Any], load: Callable[[Any, Any], Any]) -> None:
        """Declare a kind of adapter model (a ControlNet; an IP-Adapter, ...) that requests run with.

        `wanted(request)` returns the `AdapterSpec(kind, name, weight, copy)`s a request needs (none: an empty
        list); they join the job's one load call, and the model manager calls `load(spec, loaded)` with the
        loaded checkpoint (`.pipe`, `.arch`, `.entry`) once per spec and job. Load through `api.memory` so the
        model counts against the memory budgets, is pinned while the job runs and leaves on Unload. A
        `ValueError` from either fails the job with its message (`field: ...` is the client's mistake, a 4xx).
        """
        kind = kind.strip()
        if not kind:
            raise ValueError("kind: an adapter kind needs a name")
        loaders = self._easel.manager.adapter_loaders
        if kind in loaders:
            raise ValueError(f"kind: {kind!r} adapters are already declared")
        loaders[kind] = load
        self._easel.engine.adapter_sources.append(self._adapters_of(kind, wanted))

    @staticmethod
    def _adapters_of(kind: str, wanted: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
        def adapters(request: Any) -> list[Any]:
            specs = list(wanted(request) or ())
            wrong = [spec for spec in specs if getattr(spec, "kind", None) != kind]
            if wrong:
                raise TypeError(f"{kind} adapters: wanted() returned {wrong[0]!r}, not AdapterSpec({kind!r}, ...)")
            return specs

        return adapters

    @property
    def memory(self) -> Any:
        """Easel's one memory cache (`webui.model_manager.memory.MemoryCache`): hold every model you load there
        (`memory.get(kind, key)`, `memory.add(kind, key, model, name=...)`, `memory.clear(kind)`), so it counts
        against the user's RAM and VRAM budgets, is shown in the Models tab and `/sdapi/v1/memory`, is pinned
        while the job using it runs and leaves on Unload."""
        return self._easel.manager.memory

    def add_sampler(self, name: str, scheduler_class: str, overrides: dict[str, Any] | None = None) -> None:
        """Offer a diffusers scheduler under a sampler name for SD-family models (SD 1.x, SD 2.x, SDXL).

        `scheduler_class` names a class in `diffusers` ("EulerDiscreteScheduler"); each job builds a fresh one
        from the model's own scheduler config with `overrides` applied. The name appears in every sampler list
        (UI, `/sdapi/v1/samplers`) and works in requests and infotext. Raises ValueError for an unknown class
        or a name Easel or another extension already uses.
        """
        import diffusers

        from webui.engine.samplers import DIFFUSION_SAMPLERS, EASEL_SAMPLERS

        name = name.strip()
        if not name:
            raise ValueError("name: a sampler needs a name")
        owner = SAMPLER_OWNERS.get(name)
        if (name in DIFFUSION_SAMPLERS or name in EASEL_SAMPLERS) and owner != self.name:
            raise ValueError(f"name: a sampler named {name!r} already exists"
                             f"{f' (added by the extension {owner})' if owner else ''}")
        if not scheduler_class.endswith("Scheduler") or not hasattr(diffusers, scheduler_class):
            raise ValueError(f"scheduler_class: diffusers has no scheduler {scheduler_class!r}")
        DIFFUSION_SAMPLERS[name] = (scheduler_class, dict(overrides or {}))
        SAMPLER_OWNERS[name] = self.name

    def add_preprocessor(self, name: str, fn: Callable[..., Any]) -> None:
        """Register an image preprocessor (PIL image in, PIL image out) by name.

        It may take keyword options: `resolution` (the working size of its shorter side), `threshold_a` and
        `threshold_b` (each preprocessor's own two parameters, as in AUTOMATIC1111's ControlNet).
        """
        self._registry.preprocessors[name] = fn

    def preprocessors(self) -> Mapping[str, Callable[..., Any]]:
        """Every preprocessor registered so far, by name (read-only)."""
        from types import MappingProxyType

        return MappingProxyType(self._registry.preprocessors)

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
        """Read one user setting (see the Settings tab), e.g. `api.setting("save_images")`; the value is
        read when called, so it follows later changes. Raises KeyError naming the known keys."""
        user = self._easel.settings.user
        known = [f.name for f in dataclasses.fields(user)]
        if key not in known:
            raise KeyError(f"unknown setting {key!r}; settings are: {', '.join(known)}")
        value = getattr(user, key)
        return list(value) if isinstance(value, list) else value

    def model_folders(self, kind: str) -> list[Path]:
        """Folders holding one kind of model: `models/<kind>/` in the data folder, then the extra folders given
        by launch flags (`--controlnet-dir` for "ControlNet", `--esrgan-models-path` for "ESRGAN", ...)."""
        settings = self._easel.settings
        extra = getattr(settings, MODEL_FOLDER_FLAGS.get(kind, ""), None) or []
        return [settings.models_dir / kind, *[Path(p) for p in extra]]

    def file_hash(self, path: Path) -> str:
        """The SHA-256 (hex) of a file, remembered on disk like checkpoint hashes, so each version is read once."""
        return self._easel.manager.hashes.sha256(Path(path))


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


class _Contributions:
    """What the registry and the engine hold before one extension's setup, so a failing setup leaves nothing
    behind (no half-registered hooks of an extension listed as failed)."""

    def __init__(self, easel: "Easel", registry: Registry) -> None:
        self.easel, self.registry = easel, registry
        self.lists = {name: list(getattr(registry, name)) for name in ("tabs", "accordions", "routes")}
        self.dicts = {name: dict(getattr(registry, name)) for name in ("preprocessors", "scripts", "request_args")}
        engine = easel.engine
        self.hooks = {name: list(getattr(engine, name))
                      for name in ("before_generate", "after_generate", "pipeline_wrappers", "adapter_sources")}
        self.adapter_loaders = dict(easel.manager.adapter_loaders)
        self.samplers = dict(SAMPLER_OWNERS)

    def restore(self) -> None:
        from webui.engine.samplers import DIFFUSION_SAMPLERS

        for name, items in self.lists.items():
            getattr(self.registry, name)[:] = items
        for name, items in self.dicts.items():
            target = getattr(self.registry, name)
            target.clear()
            target.update(items)
        for name, items in self.hooks.items():
            getattr(self.easel.engine, name)[:] = items
        self.easel.manager.adapter_loaders.clear()
        self.easel.manager.adapter_loaders.update(self.adapter_loaders)
        for sampler in set(SAMPLER_OWNERS) - set(self.samplers):
            DIFFUSION_SAMPLERS.pop(sampler, None)
            SAMPLER_OWNERS.pop(sampler, None)


def load_extensions(easel: "Easel", folders: list[Path], disabled: set[str], registry: Registry) -> list[LoadedExtension]:
    """Import and set up every enabled extension; a failing one is recorded, never fatal, and what it registered
    before failing is taken back."""
    results: list[LoadedExtension] = []
    for folder in [p for base in folders for p in discover(base)]:
        item = LoadedExtension(folder.name, folder, None, folder.name not in disabled)
        results.append(item)
        before: _Contributions | None = None
        module_name = ""
        try:
            item.manifest = Manifest.read(folder)
            item.name = item.manifest.name
            item.enabled = item.name not in disabled and folder.name not in disabled
            if not item.enabled:
                continue
            if item.manifest.api_version != API_VERSION:
                raise RuntimeError(f"needs extension API version {item.manifest.api_version}; "
                                   f"this Easel provides {API_VERSION}")
            twin = next((other for other in results[:-1] if other.loaded and other.name == item.name), None)
            if twin is not None:
                raise RuntimeError(f"an extension named {item.name!r} is already loaded from {twin.folder}")
            entry = folder / item.manifest.entry
            if not entry.resolve().is_relative_to(folder.resolve()) or not entry.exists():
                raise FileNotFoundError(f"entry module {item.manifest.entry} not found in {folder.name}")
            module_name = f"easel_extension_{folder.name.replace('-', '_').replace('.', '_')}"
            spec = importlib.util.spec_from_file_location(module_name, entry)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            if not callable(getattr(module, "setup", None)):
                raise AttributeError("the entry module has no setup(api) function")
            before = _Contributions(easel, registry)
            module.setup(ExtensionAPI(easel, registry, item.name, folder))
            item.loaded = True
            log.info("extension %s %s loaded", item.name, item.manifest.version)
        except Exception as exc:  # noqa: BLE001 - one extension must never stop Easel
            item.error = f"{exc.__class__.__name__}: {exc}"
            log.warning("extension %s failed to load: %s\n%s", folder.name, item.error, traceback.format_exc())
            if before is not None:
                before.restore()
            if module_name:
                sys.modules.pop(module_name, None)
    return results
