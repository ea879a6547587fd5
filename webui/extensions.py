"""The extension API (`ExtensionAPI`, version `API_VERSION`) and the loader that sets extensions up.

Extensions import `webui.extension_api`, the small public module that re-exports the API with the request
types it passes around; this module is its implementation. An extension is a folder in `extensions/` with an
`extension.json` manifest (`{"name": ..., "version": ..., "description": ..., "api_version": 1,
"entry": "extension.py"}`) and an entry module that defines `setup(api: ExtensionAPI) -> None`. Through `api`
it can add a UI tab or an accordion to a mode's tab, change requests before generation, post-process images
after, add API routes and API scripts, run work on the worker that owns the device, add samplers, add
preprocessors and read settings. It can also take per-request arguments (the API's `alwayson_scripts`, its
accordion's controls), wrap each diffusers pipeline call a mode makes (swap the pipeline, add call arguments), and
declare adapter models (ControlNets, ...) a request needs, loaded with the checkpoint in one call and held in
Easel's one memory cache, which is how the bundled ControlNet extension works. `API_VERSION` changes only when
something here breaks; an extension that asks for another version is refused with a message instead of
failing later.

Everything an extension contributes (tabs, accordions, hooks, pipeline wrappers, routes, scripts, request
arguments, preprocessors, samplers, adapter kinds) goes into the `Registry` of the Easel that loaded it, never
into module state: two Easels in one process see only their own extensions. Loading is isolated: `setup(api)` adds to a
staged registry that is merged into the Easel's only once it returned, so an extension that raises during
import or `setup` leaves nothing behind; it is recorded with its error and every other extension and Easel
itself go on.

About 500 lines: the whole surface extensions see (`ExtensionAPI`), its registry and the loader that stages and
merges contributions, kept together so the contract is read in one place.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sys
import traceback
from collections import ChainMap
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from webui.engine.samplers import Samplers

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
    # mode -> {argument label: its choices} (the built-in X/Y/Z plot's axis lists), for the UI and script-info
    choices: Callable[[str], dict[str, list[str]]] | None = None


@dataclass(eq=False)
class Registry:
    """One Easel's samplers and everything its extensions contributed.

    `webui.app.build` makes one per Easel and hands it to the engine (which runs the hooks and pipeline wrappers
    and builds schedulers from `samplers` on each job), the API and the UI (which read the rest when they are
    built and on each request). `samplers` starts with the built-in ones. The engine also reads the adapter kinds
    on each job: it asks `adapter_sources` what a request needs and hands `adapter_loaders` to the model manager.
    """

    tabs: list[UIContribution] = field(default_factory=list)
    accordions: list[UIContribution] = field(default_factory=list)
    routes: list[RouteContribution] = field(default_factory=list)
    before_generate: list[Callable[[Any], Any]] = field(default_factory=list)
    after_generate: list[Callable[[Any, list[Any]], list[Any] | None]] = field(default_factory=list)
    pipeline_wrappers: list[PipelineWrapper] = field(default_factory=list)
    preprocessors: dict[str, Callable[..., Any]] = field(default_factory=dict)
    scripts: dict[str, ScriptContribution] = field(default_factory=dict)  # by lower-case name
    request_args: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # extension name -> parser
    samplers: Samplers = field(default_factory=Samplers)
    # adapter models (ControlNets, ...): each kind's `wanted(request) -> [AdapterSpec]`; kind -> `load(spec, loaded)`
    adapter_sources: list[Callable[[Any], list[Any]]] = field(default_factory=list)
    adapter_loaders: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    runtime_errors: dict[str, str] = field(default_factory=dict)  # extension name -> its last hook failure

    _LISTS = ("tabs", "accordions", "routes", "before_generate", "after_generate", "pipeline_wrappers",
              "adapter_sources")
    _DICTS = ("preprocessors", "scripts", "request_args", "adapter_loaders")

    def merge(self, staged: "Registry") -> None:
        """Add what one extension's setup put into `staged` (see `load_extensions`). Names are checked first,
        so a clash (a ValueError) changes nothing."""
        taken = sorted(staged.scripts.keys() & self.scripts.keys())
        if taken:
            raise ValueError(f"name: a script named {taken[0]!r} is already registered by "
                             f"{self.scripts[taken[0]].extension}")
        kinds = sorted(staged.adapter_loaders.keys() & self.adapter_loaders.keys())
        if kinds:
            raise ValueError(f"kind: {kinds[0]!r} adapters are already declared")
        self.samplers.merge(staged.samplers)
        for name in self._LISTS:
            getattr(self, name).extend(getattr(staged, name))
        for name in self._DICTS:
            getattr(self, name).update(getattr(staged, name))

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
    """What an extension's `setup(api)` receives.

    Contributions go to `staged` (while `load_extensions` runs setup, a registry of this extension's own that
    is merged into `registry` once setup returned) or, without one, straight into `registry`, the Easel's;
    names are checked against both."""

    version = API_VERSION

    def __init__(self, easel: "Easel", registry: Registry, name: str, folder: Path,
                 staged: Registry | None = None) -> None:
        self._easel = easel
        self._registry = registry
        self._staged = staged if staged is not None else registry
        self.name = name
        self.folder = folder
        self.log = logging.getLogger(f"easel.extensions.{name}")

    def add_tab(self, title: str, build: Callable[[], None]) -> None:
        """Add a top-level UI tab; `build()` creates Gradio components inside it."""
        self._staged.tabs.append(UIContribution(title, build, None, self.name))

    def add_accordion(self, mode: str, title: str, build: Callable[[], ExtensionInputs | None]) -> None:
        """Add an accordion to a mode's tab ("txt2img", "img2img", "inpaint", "segment").

        `build()` creates Gradio components inside it; when their values should reach generation it returns
        `ExtensionInputs` (see there), else None.
        """
        if mode not in ("txt2img", "img2img", "inpaint", "segment"):
            raise ValueError(f"mode: unknown tab {mode!r}")
        self._staged.accordions.append(UIContribution(title, build, mode, self.name))

    def before_generate(self, hook: Callable[[Any], Any]) -> None:
        """`hook(request) -> request | None` runs on the worker before each job; return a changed request.

        A `ValueError` from the hook fails the job with its message (one starting with `field: ` is the
        client's mistake, a 4xx in the API). Any other exception is logged, recorded as this extension's
        error (the Extensions tab shows it) and the job goes on with the request unchanged.
        """
        self._staged.before_generate.append(self._isolated(hook, "before_generate"))

    def after_generate(self, hook: Callable[[Any, list[Any]], list[Any] | None]) -> None:
        """`hook(request, generated) -> generated | None`; each item has `.image`, `.seed`, `.extra`.

        Failures are handled as for `before_generate`: the images are kept as they were."""
        self._staged.after_generate.append(self._isolated(hook, "after_generate"))

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
        self._staged.routes.append(RouteContribution(path, endpoint, methods or ["GET"], self.name))

    def add_request_args(self, parse: Callable[[Any], Any]) -> None:
        """Take per-request arguments under this extension's name.

        Clients send them as `alwayson_scripts: {"<name>": {"args": [...]}}` (AUTOMATIC1111's form, name in any
        case) and the extension's accordion returns them through `ExtensionInputs`. `parse(raw)` checks and
        converts them before the job is queued, raising ValueError with a message that names the bad key (the
        API answers 422, the UI shows it); hooks and pipeline wrappers read the result as
        `request.extension_args["<name>"]`. Requests made in code may carry unparsed arguments there, so hooks
        should accept both.
        """
        self._staged.request_args[self.name] = parse

    def wrap_pipeline(self, wrapper: PipelineWrapper) -> None:
        """Run `wrapper(call, run)` around every diffusers pipeline call the txt2img, img2img and inpaint modes
        make (see `PipelineCall`): it may hand `run` another pipeline built from `call.pipe`'s components (with
        `from_pipe`) and other call arguments. A wrapper with nothing to do returns `run(call)`; one that raises
        fails the job with its message (a `ValueError` whose message starts with `field: ` is the client's
        mistake, a 4xx in the API)."""
        self._staged.pipeline_wrappers.append(wrapper)

    def run_on_worker(self, call: Callable[[], Any], source: str = "api") -> Any:
        """Run `call()` on the worker that owns the device, queued behind the jobs before it like a generation,
        and return what it returns (re-raising what it raised). Work that runs a model or needs much memory
        outside a generation (a preprocessor's detection, say) goes through here so it never races a job.
        Blocks until done; a full queue raises `QueueFullError` (the API answers 503 with Retry-After), and an
        interrupted call raises RuntimeError."""
        from webui.engine.tasks import CallTask
        from webui.engine.worker import JobState

        job = self._easel.engine.submit(CallTask(call=call, label=self.name), source=source)
        job.wait()
        if job.state == JobState.FAILED and job.exception is not None:
            raise job.exception
        if job.state != JobState.DONE or job.result is None:
            raise RuntimeError(f"{self.name}: the job was {job.state.value} ({job.error or 'no result'})")
        return job.result.info.get("value")

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
        if kind in self._staged.adapter_loaders or kind in self._registry.adapter_loaders:
            raise ValueError(f"kind: {kind!r} adapters are already declared")
        self._staged.adapter_loaders[kind] = load
        self._staged.adapter_sources.append(self._adapters_of(kind, wanted))

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
        (UI, `/sdapi/v1/samplers`) of this Easel and works in its requests and infotext. Raises ValueError for
        an unknown class or a name Easel or another extension already uses.
        """
        self._registry.samplers.check_free(name.strip(), self.name)
        self._staged.samplers.add(name, scheduler_class, overrides, self.name)

    def add_preprocessor(self, name: str, fn: Callable[..., Any]) -> None:
        """Register an image preprocessor (PIL image in, PIL image out) by name.

        It may take keyword options: `resolution` (the working size of its shorter side), `threshold_a` and
        `threshold_b` (each preprocessor's own two parameters, as in AUTOMATIC1111's ControlNet).
        """
        self._staged.preprocessors[name] = fn

    def preprocessors(self) -> Mapping[str, Callable[..., Any]]:
        """Every preprocessor registered so far, by name (read-only)."""
        return MappingProxyType(ChainMap(self._staged.preprocessors, self._registry.preprocessors))

    def add_script(self, name: str, run: Callable[[Any, list[Any]], Any],
                   modes: tuple[str, ...] = ("txt2img", "img2img"), args: tuple[str, ...] = ()) -> None:
        """Offer a script to API clients (`script_name`, `script_args`); see `ScriptContribution`."""
        key = name.strip().lower()
        if not key:
            raise ValueError("name: a script needs a name")
        unknown = [m for m in modes if m not in ("txt2img", "img2img")]
        if unknown:
            raise ValueError(f"modes: scripts run in txt2img and img2img, not {', '.join(unknown)}")
        taken = self._staged.scripts.get(key) or self._registry.scripts.get(key)
        if taken is not None:
            raise ValueError(f"name: a script named {name!r} is already registered by {taken.extension}")
        self._staged.scripts[key] = ScriptContribution(key, run, tuple(modes), tuple(args), self.name)

    def _commit(self) -> None:
        """Merge what setup staged into the Easel's registry (raising ValueError on a name clash, which changes
        nothing); anything the extension adds later goes straight there."""
        if self._staged is not self._registry:
            self._registry.merge(self._staged)
            self._staged = self._registry

    def setting(self, key: str) -> Any:
        """Read one user setting (see the Settings tab), e.g. `api.setting("save_images")`; the value is
        read when called, so it follows later changes. Raises KeyError naming the known keys."""
        user = self._easel.settings.user
        known = [f.name for f in dataclasses.fields(user)]
        if key not in known:
            raise KeyError(f"unknown setting {key!r}; settings are: {', '.join(known)}")
        value = getattr(user, key)
        return list(value) if isinstance(value, list) else value

    def hub_downloads_allowed(self) -> bool:
        """Whether Easel was started with `--allow-hub-downloads`; without it an extension fetches nothing from
        the Hugging Face hub and says which file to put where instead."""
        return bool(getattr(self._easel.settings, "allow_hub_downloads", False))

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


def load_extensions(easel: "Easel", folders: list[Path], disabled: set[str], registry: Registry) -> list[LoadedExtension]:
    """Import and set up every enabled extension into `registry` (the Easel's). Each `setup(api)` adds to a
    staged registry of its own, merged into `registry` only when setup returned; a failing extension is
    recorded with its error, never fatal, and leaves nothing behind."""
    results: list[LoadedExtension] = []
    for folder in [p for base in folders for p in discover(base)]:
        item = LoadedExtension(folder.name, folder, None, folder.name not in disabled)
        results.append(item)
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
            api = ExtensionAPI(easel, registry, item.name, folder, staged=Registry())
            module.setup(api)
            api._commit()
            item.loaded = True
            log.info("extension %s %s loaded", item.name, item.manifest.version)
        except Exception as exc:  # noqa: BLE001 - one extension must never stop Easel
            item.error = f"{exc.__class__.__name__}: {exc}"
            log.warning("extension %s failed to load: %s\n%s", folder.name, item.error, traceback.format_exc())
            if module_name:
                sys.modules.pop(module_name, None)
    return results
