"""The one place that builds Easel: settings → model manager → engine (worker) → UI and API.

`build(settings)` returns an `Easel` object holding the running parts; the UI (`webui.ui.app.create_ui`) and the
API (`webui.api.routes.create_api`) receive it and use nothing else. Tests build their own small Easel the
same way, with their own folders.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from webui.engine.engine import Engine
from webui.extensions import LoadedExtension, Registry, load_extensions
from webui.infotext import parse_infotext, read_png_parameters
from webui.model_manager.defaults import ModelDefaults, entry_defaults
from webui.model_manager.identify import Arch
from webui.model_manager.manager import CheckpointEntry, LoraOptions, ModelManager
from webui.model_manager.memory import budgets_for
from webui.settings import Settings, build_parser, settings_from_args
from webui.styles import StyleStore

log = logging.getLogger("easel")

SHARE_PROBE_SECONDS = 5.0  # how long a --share start waits for Gradio's share server before going on locally


@dataclass
class Easel:
    """The running application: what the UI, the API and extensions are given."""

    settings: Settings
    manager: ModelManager
    engine: Engine
    registry: Registry  # this Easel's samplers, hooks and extension contributions (shared with its engine)
    extensions: list[LoadedExtension] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    gallery: Any = None  # the image browser's index (webui.gallery_index.GalleryIndex), set by build()

    # Read-only helpers the UI and API share (so ui/ never touches torch or diffusers) ------------
    @property
    def styles(self) -> StyleStore:
        """The prompt styles (styles.csv and the other styles*.csv in the data dir) the engine applies."""
        return self.engine.styles

    def checkpoint_entries(self) -> list[CheckpointEntry]:
        return self.manager.checkpoints()

    def seed_walk(self, checkpoint: str, seeds: list[int], frames: int, truncation_psi: float = 1.0,
                  class_label: int = -1, prompt: str = "", space: str = "z") -> Any:
        """Queue a StyleGAN seed walk (webui.engine.families.stylegan.SeedWalkRequest) and return its job; its
        result's `info["gif"]` is the GIF, `paths` where it was saved. RequestError names a wrong field."""
        from webui.engine.families.stylegan import SeedWalkRequest

        request = SeedWalkRequest(seeds=tuple(int(s) for s in seeds), frames=int(frames), checkpoint=checkpoint,
                                  truncation_psi=float(truncation_psi), class_label=int(class_label), prompt=prompt,
                                  space=space)
        return self.engine.submit(request, source="ui")

    def checkpoint_choices(self) -> list[str]:
        return [c.name for c in self.manager.checkpoints() if c.supported]

    def default_checkpoint(self) -> str:
        current = self.manager.current()
        if current is not None:
            return current.name
        switched = getattr(self.engine.worker, "current_checkpoint", None)  # with replicas: the last model switch
        if switched:
            return switched
        choices = self.checkpoint_choices()
        return choices[0] if choices else ""

    def arch_of(self, checkpoint: str) -> Arch | None:
        try:
            return self.manager.find_checkpoint(checkpoint).arch
        except LookupError:
            return None

    def script_titles(self, mode: str) -> dict[str, str]:
        """{title shown in the Script dropdown: script_name} of the scripts that run in `mode`."""
        from webui.scripts import TITLES

        kind = "txt2img" if mode == "txt2img" else "img2img"
        return {TITLES.get(key, script.name): key for key, script in self.registry.scripts.items()
                if kind in script.modes}

    def script_job(self, name: str, request: Any, args: list[Any]) -> Any:
        """What the Script dropdown queues for `request`: the script's job (a plot), or its requests run as one
        job. RequestError on `script_args` when the script refuses its arguments."""
        from webui.scripts import as_script_job

        return as_script_job(self.registry, name, request, args)

    def sampler_choices(self, checkpoint: str | None = None) -> list[str]:
        samplers = self.registry.samplers
        arch = self.arch_of(checkpoint) if checkpoint else None
        return samplers.names(arch) if arch else samplers.all_names()

    def default_sampler(self, checkpoint: str | None = None) -> str:
        """The model's own default sampler where it declares one (flow models: Euler), else the setting's."""
        choices = self.sampler_choices(checkpoint)
        own = self.model_defaults(checkpoint).sampler if checkpoint else None
        if own in choices:
            return str(own)
        preferred = self.settings.user.default_sampler
        return preferred if preferred in choices else choices[0]

    def hidden_fields(self, checkpoint: str | None = None) -> frozenset[str]:
        """Request fields the checkpoint's family does not use (webui.model_manager.families): the UI hides their
        controls and does not send them."""
        from webui.model_manager.families import hidden_fields

        name = checkpoint or self.default_checkpoint()
        try:
            entry = self.manager.find_checkpoint(name) if name else None
        except LookupError:
            entry = None
        return hidden_fields(entry.arch, entry.variant) if entry is not None else hidden_fields(Arch.UNKNOWN)

    def model_defaults(self, checkpoint: str | None = None) -> ModelDefaults:
        """Size, steps, CFG, sampler and distilled guidance the checkpoint runs at (webui.model_manager.defaults)."""
        name = checkpoint or self.default_checkpoint()
        try:
            entry = self.manager.find_checkpoint(name) if name else None
        except LookupError:
            entry = None
        if entry is None or entry.arch == Arch.UNKNOWN:
            return ModelDefaults()
        return entry_defaults(entry)

    def vae_choices(self) -> list[str]:
        return ["Automatic", *[v.name for v in self.manager.vaes()]]

    def segment_model_choices(self) -> list[str]:
        """What the Segment tab offers: edit-capable checkpoints, then text-prompted segmenters by label."""
        return [e.name for e in self.manager.edit_checkpoints()] + [s.label for s in self.manager.segmenters()]

    def default_segment_model(self) -> str:
        choices = self.segment_model_choices()
        current = self.manager.current()
        if current is not None and current.name in choices:
            return current.name
        return choices[0] if choices else ""

    def edit_model_choices(self) -> list[str]:
        """What the Edit tab offers: the edit-capable checkpoints."""
        return [e.name for e in self.manager.edit_checkpoints()]

    def default_edit_model(self) -> str:
        """The current checkpoint when it can edit, else the first edit-capable one ("" when none is installed)."""
        choices = self.edit_model_choices()
        current = self.manager.current()
        if current is not None and current.name in choices:
            return current.name
        return choices[0] if choices else ""

    def segment_template(self, model: str | None) -> str:
        """The default prompt template of a Segment-tab model ("" for CLIPSeg / SAM 3, which take no prompt)."""
        from webui.engine.segment_prompts import template_for

        if not model or self.manager.find_segmenter(model) is not None:
            return ""
        return template_for("EaselPipeline" if self.arch_of(model) == Arch.EASEL else "")

    def default_cfg(self, checkpoint: str | None = None) -> float:
        """The CFG scale the model is meant to run at (4 for the built-in model, 1 for Flux, 7 for SD 1.x ...)."""
        return self.model_defaults(checkpoint).cfg_scale

    def default_size(self, checkpoint: str | None = None) -> int:
        """The model's own width (its default square size)."""
        return self.model_defaults(checkpoint).width

    def convert_checkpoint(self, checkpoint: str) -> Path:
        """Convert a listed pickle checkpoint to .safetensors beside it, or a diffusers folder's pickle `.bin`
        weights to the safetensors files diffusers reads (tensors only, see webui.model_manager.convert), rescan,
        and return the new file (the folder). ValueError says why not."""
        from webui.model_manager.convert import convert_checkpoint, convert_folder
        from webui.model_manager.identify import PICKLE_SUFFIXES

        entry = self.manager.find_checkpoint(checkpoint)
        if entry.kind == "folder" and not entry.builtin:  # a diffusers folder whose weights are pickle .bin files
            convert_folder(entry.path)
            self.manager.refresh()
            return entry.path
        if entry.kind != "file" or entry.path.suffix.lower() not in PICKLE_SUFFIXES:
            raise ValueError(f"checkpoint: {entry.name} is not a pickle checkpoint; only {', '.join(PICKLE_SUFFIXES)} "
                             "files need converting")
        target = convert_checkpoint(entry.path)
        self.manager.refresh()
        return target

    @staticmethod
    def png_info(image: Image.Image) -> tuple[str, dict[str, str]]:
        text = read_png_parameters(image) or ""
        return text, (parse_infotext(text) if text else {})

    # Extensions and Extras (what those tabs call; see webui.extension_installer) -----------------
    def extension_statuses(self) -> list[Any]:
        """Each extension folder with its version, status and error (`ExtensionStatus`)."""
        from webui.extension_installer import statuses

        return statuses(self.settings, self.extensions, self.registry.runtime_errors)

    def set_extensions_enabled(self, enabled: dict[str, bool]) -> list[str]:
        """Persist which extensions load at the next start; returns the disabled names."""
        from webui.extension_installer import set_enabled

        return set_enabled(self.settings, enabled)

    def extension_install_blocked(self) -> str | None:
        """Why installing extensions is refused now (--listen/--share), or None."""
        from webui.extension_installer import install_blocked_reason

        return install_blocked_reason(self.settings)

    def page_token(self) -> str:
        """This process's token for actions that run code, carried by the page (see webui.http_guard)."""
        from webui.http_guard import action_token

        return action_token(self.extras)

    def check_page_token(self, token: Any) -> None:
        """ValueError (naming `token`) unless `token` is this process's page token."""
        from webui.http_guard import check_action_token

        check_action_token(self.extras, token)

    def install_extension(self, source: str, name: str | None = None) -> Path:
        """Install from a git URL or a local folder into `<data dir>/extensions`; it loads at the next start."""
        from webui.extension_installer import install

        return install(self.settings, source, name)

    @property
    def clustered(self) -> bool:
        """Whether generation runs on replicas (`--workers`, `--ray-address`; docs/SCALING.md)."""
        return hasattr(self.engine.worker, "cluster")

    def cluster_status(self) -> dict[str, Any]:
        """`{"replicas": [...]}` as GET /easel/v1/cluster answers: each replica's report (it waits on them), or
        without replicas the in-process worker as one entry, id "local"."""
        import socket

        worker = self.engine.worker
        if self.clustered:
            return worker.cluster()
        job = worker.current
        return {"replicas": [{"id": "local", "pid": os.getpid(), "node": socket.gethostname(),
                              "device": self.manager.device, "loaded": self.manager.loaded_names(),
                              "jobs_done": None, "busy": job is not None and not job.finished_state,
                              "alive": worker.alive, "queued": worker.queue_length(), "restarts": 0}]}

    def upscaler_choices(self, rescan: bool = False) -> list[str]:
        """Lanczos, Nearest, then the models in models/ESRGAN (rescanning the folders first if asked)."""
        if rescan:
            self.engine.upscalers.refresh()
        return self.engine.upscalers.names()

    def upscale(self, image: Image.Image, upscaler: str, scale: float = 2.0, width: int = 0, height: int = 0,
                crop: bool = True, upscaler_2: str = "None", upscaler_2_visibility: float = 0.0,
                save_images: bool = True, gfpgan_visibility: float = 0.0, codeformer_visibility: float = 0.0,
                codeformer_weight: float = 0.5) -> Any:
        """Queue an upscale (and face restoration: GFPGAN, CodeFormer with their visibilities) on the worker
        (`webui.engine.tasks.UpscaleRequest`) and return its job. RequestError naming the field when a restorer
        asked for has no file, or nothing can find faces."""
        from webui.engine.face_restore import check_finder
        from webui.engine.tasks import UpscaleRequest

        for name, field_name, visibility in (("GFPGAN", "gfpgan_visibility", gfpgan_visibility),
                                             ("CodeFormer", "codeformer_visibility", codeformer_visibility)):
            if visibility > 0:
                self.engine.face_restorers.check(name, field_name)
                check_finder(self.manager, self.settings.user.face_restoration_finder, field_name)
        return self.engine.submit(UpscaleRequest(image=image, upscaler=upscaler, scale=scale, width=width,
                                                 height=height, crop=crop, upscaler_2=upscaler_2,
                                                 upscaler_2_visibility=upscaler_2_visibility,
                                                 save_images=save_images, gfpgan_visibility=gfpgan_visibility,
                                                 codeformer_visibility=codeformer_visibility,
                                                 codeformer_weight=codeformer_weight), source="ui")


def build(settings: Settings, with_extensions: bool = True) -> Easel:
    """Create the model manager, engine and extensions for these settings (no model is loaded yet)."""
    from webui.engine.detail_args import register as register_detail_args

    for sub in ("Stable-diffusion", "diffusers", "Lora", "VAE", "clipseg", "embeddings", "diffusion_models",
                "text_encoders", "GAN"):
        (settings.models_dir / sub).mkdir(parents=True, exist_ok=True)
    manager = ModelManager(
        checkpoint_dirs=settings.checkpoint_dirs(), diffusers_dirs=settings.diffusers_dirs(),
        vae_dirs=settings.all_vae_dirs(), lora_dirs=settings.all_lora_dirs(), builtin_dirs=settings.builtin_dirs(),
        device=settings.resolved_device(), dtype=settings.resolved_dtype(),
        ram_cache_size=settings.user.ram_cache_size, offload=settings.offload,  # read per checkpoint
        hash_cache_path=settings.hash_cache_path,
        segmentation_dirs=[settings.models_dir / "clipseg", settings.models_dir / "segmentation"],
        embedding_dirs=settings.all_embedding_dirs(), controlnet_dirs=settings.all_controlnet_dirs(),
        upscaler_dirs=settings.all_upscaler_dirs(), allow_hub=settings.allow_hub_downloads,
        storage=settings.weight_storage, text_encoder_dirs=settings.text_encoder_dirs(),  # read at each load
        gan_dirs=settings.gan_dirs(),
    )
    manager.memory.budgets = lambda: budgets_for(  # read when models come and go: Settings changes apply at once
        manager.device, settings.user.ram_budget_mb, settings.user.vram_budget_mb)
    manager.lora_options = lambda: LoraOptions(  # read per generation: the Settings tab replaces settings.user
        fuse=settings.user.lora_fuse, hotswap=settings.user.lora_hotswap, max_rank=settings.user.lora_max_rank,
        compile=settings.user.compile_denoiser, keep_loaded=settings.user.lora_keep_loaded)
    if settings.resolved_device() == "cpu":  # physical cores: hyperthreads slow PyTorch's CPU kernels down
        from webui.engine.cpu_path import configure_threads

        configure_threads("cpu")
    registry = Registry()  # built-in samplers; extensions add to it below
    from webui.engine.hypernetworks import Hypernetworks  # <hypernet:name:w> on SD 1.x, around each pipeline call

    registry.pipeline_wrappers.append(Hypernetworks(settings.models_dir).wrapper)
    register_detail_args(registry)  # the built-in detail fixer's `alwayson_scripts` arguments
    from webui.engine.regional import register as register_regional

    register_regional(registry)  # regional prompts: `alwayson_scripts["regional prompter"]`
    engine = Engine(settings, manager, registry)
    easel = Easel(settings, manager, engine, registry)
    from webui.gallery_index import GalleryIndex  # the image browser's index: opened on first use

    easel.gallery = GalleryIndex(settings.outputs_dir, settings.data_dir / "gallery")
    engine.saved_listeners.append(easel.gallery.record)

    from webui.scripts import register_builtin_scripts  # X/Y/Z plot, prompt matrix, prompts from file

    register_builtin_scripts(easel, registry)
    from webui.training.folders import TrainingFolders  # LoRA training for the Train tab (no torch at import)
    from webui.training.service import TrainingService

    easel.extras["training"] = TrainingService(TrainingFolders.of_settings(settings))
    if with_extensions:
        easel.extensions = load_extensions(easel, settings.extension_dirs(),
                                           set(settings.user.disabled_extensions), easel.registry)
    return easel


LOCAL_CHECK_SECONDS = 60


def local_url_answers(url: str, timeout: float = LOCAL_CHECK_SECONDS) -> bool:
    """True once the UI's own address answers (any HTTP status: a login page counts)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.head(url, timeout=max(1.0, deadline - time.monotonic()), trust_env=False)
            return True
        except httpx.HTTPError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def create_server(easel: Easel, block: bool = True) -> tuple[Any, str]:
    """Start the UI (and API) or the API alone; return (FastAPI app, local URL).

    Raises `webui.security.InsecureLaunchError` before anything listens when `--share` would publish Easel
    without logins; logs the other policy warnings (`--listen` without logins, `--share-insecure`)."""
    from webui.http_guard import forwarded_allow_ips
    from webui.security import launch_warnings

    settings = easel.settings
    for warning in launch_warnings(settings):
        log.warning("%s", warning)
    limit_image_decoding(settings)
    host = "0.0.0.0" if settings.listen else "127.0.0.1"
    if settings.nowebui:
        import fastapi
        import uvicorn

        from webui.api.routes import create_api

        app = fastapi.FastAPI(title="Easel API", middleware=[guard_middleware(easel), *api_login_middleware(easel)])
        create_api(app, easel)
        config = uvicorn.Config(app, host=host, port=settings.port, log_level="warning", proxy_headers=True,
                                forwarded_allow_ips=forwarded_allow_ips(settings))
        server = uvicorn.Server(config)
        url = f"http://{host}:{settings.port}"
        easel.extras["server"] = server
        if block:
            control = server_control(easel)
            control.on_stop(lambda: setattr(server, "should_exit", True))  # uvicorn's graceful shutdown
            server.run()
        else:
            threading.Thread(target=server.run, daemon=True).start()
        return app, url

    from webui.ui.app import create_ui, launch_kwargs

    blocks = create_ui(easel)
    unreachable = share_server_problem() if settings.share else None
    # Gradio's own "is localhost reachable" check gives the page 3 s and otherwise refuses to start; on a busy
    # 2-core machine the first render of Easel's UI can take longer, so Easel checks with more patience itself.
    with uvicorn_forwarded_allow_ips(forwarded_allow_ips(settings)):
        app, local_url, share_url = blocks.launch(server_name=host, server_port=settings.port,
                                                  share=settings.share and unreachable is None,
                                                  prevent_thread_lock=True, _frontend=False, _app=gradio_app(easel),
                                                  **login_kwargs(easel), **launch_kwargs(easel))
    if not local_url_answers(local_url):
        log.warning("Easel's page at %s did not answer within %d s; if the browser cannot open it, check proxy "
                    "settings (localhost must not go through a proxy)", local_url, LOCAL_CHECK_SECONDS)
    if settings.api:
        from webui.api.routes import create_api

        create_api(app, easel)
    log.info("Easel is running at %s%s", local_url, f" (public link: {share_url})" if share_url else "")
    if settings.share and not share_url:
        log.error("--share: the public link could not be created (Easel could not reach Gradio's share server: "
                  "no internet connection, or a firewall blocks it%s). Easel keeps running locally at %s",
                  f"; {unreachable}" if unreachable else "", local_url)
    easel.extras["share_url"] = share_url
    easel.extras["blocks"] = blocks
    if block:
        wait_for_stop(server_control(easel), blocks)
    return app, local_url


def server_control(easel: Easel) -> Any:
    """The `webui.server_control.ServerControl` the API's server-stop and server-restart routes ask (made once)."""
    from webui.server_control import ServerControl

    return easel.extras.setdefault("server_control", ServerControl())


def wait_for_stop(control: Any, blocks: Any) -> None:
    """Keep the UI's server running until the API asks to stop or restart it (or Ctrl+C), then close it."""
    try:
        while control.wait(1.0) is None:
            pass
    except KeyboardInterrupt:
        log.info("interrupted: closing the server")
    blocks.close()


def share_server_problem(timeout: float = SHARE_PROBE_SECONDS) -> str | None:
    """Why Gradio's share server cannot be reached (None when it answers), decided within `timeout` seconds.

    Gradio itself waits up to 30 s for it, and name resolution is not bounded at all; asking first, on a thread
    that is given up on after `timeout`, keeps a `--share` start on a machine without internet quick."""
    import gradio.networking
    import httpx

    if os.environ.get("GRADIO_SHARE_SERVER_ADDRESS"):
        return None  # a self-hosted share server: Gradio connects to it directly
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            httpx.get(gradio.networking.GRADIO_API_SERVER, timeout=timeout)
            outcome.append(None)
        except httpx.HTTPError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    probe = threading.Thread(target=ask, name="easel-share-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:.0f} s"


def login_kwargs(easel: Easel) -> dict[str, Any]:
    """Gradio's `auth` (checked in constant time), when the UI has logins."""
    from webui.security import check_password

    logins = easel.settings.auth_pairs()
    if not logins:
        return {}

    def auth(user: str, password: str) -> bool:
        return check_password(user, password, logins)

    return {"auth": auth, "auth_message": "Log in to Easel"}


def guard_middleware(easel: Easel) -> Any:
    """`webui.http_guard.HttpGuard` over these settings: the Host and Origin checks, CORS, Lax cookies."""
    from starlette.middleware import Middleware

    from webui.http_guard import HttpGuard, policy_from_settings

    return Middleware(HttpGuard, policy=policy_from_settings(easel.settings))


def gradio_app(easel: Easel) -> Any:
    """The FastAPI app Gradio serves the UI (and the API) from, with Easel's middleware: `HttpGuard` around
    everything, Gradio's own layers included (its CORS layer would otherwise answer cross-origin requests
    before Easel sees them); inside, HTTP Basic on the API and the login throttle.

    Gradio takes a ready-made app through `launch(_app=...)`, as its own `gradio.Server` does; `App` is a
    FastAPI app, and `build_middleware_stack` is Starlette's place for what wraps the whole stack."""
    from gradio.routes import App, ORJSONResponse
    from starlette.middleware import Middleware

    from webui.security import LoginThrottleMiddleware, login_throttle

    guard = guard_middleware(easel)

    class EaselApp(App):
        def build_middleware_stack(self) -> Any:
            return guard.cls(super().build_middleware_stack(), *guard.args, **guard.kwargs)

    middleware = api_login_middleware(easel)
    if easel.settings.auth_pairs():
        middleware.append(Middleware(LoginThrottleMiddleware, throttle=login_throttle(easel.extras)))
    return EaselApp(middleware=middleware, default_response_class=ORJSONResponse)


@contextmanager
def uvicorn_forwarded_allow_ips(value: str) -> Iterator[None]:
    """Tell the uvicorn server Gradio starts which proxies' `X-Forwarded-For` to believe (`--forwarded-allow-ips`;
    none by default, where uvicorn alone would believe any program on this machine). Gradio builds the uvicorn
    configuration without that argument, so it goes through uvicorn's `FORWARDED_ALLOW_IPS` variable, set only
    while the server is created."""
    before = os.environ.get("FORWARDED_ALLOW_IPS")
    os.environ["FORWARDED_ALLOW_IPS"] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FORWARDED_ALLOW_IPS", None)
        else:
            os.environ["FORWARDED_ALLOW_IPS"] = before


def api_login_middleware(easel: Easel) -> list[Any]:
    """`ApiLoginMiddleware` over the API's logins (`--api-auth`, else the UI's), or nothing when there are none."""
    from starlette.middleware import Middleware

    from webui.security import ApiLoginMiddleware, login_throttle

    logins = easel.settings.api_auth_pairs()
    if not logins:
        return []
    return [Middleware(ApiLoginMiddleware, logins=logins, throttle=login_throttle(easel.extras))]


def limit_image_decoding(settings: Settings) -> None:
    """Pillow warns about images over `MAX_IMAGE_PIXELS` and refuses those over twice that (decompression bombs);
    tie it to the largest input Easel accepts, so an upload is refused before it fills the memory."""
    Image.MAX_IMAGE_PIXELS = settings.user.limits().max_pixels * 4


def restart_command() -> list[str]:
    """The command line this process was started with (what a restart runs again)."""
    import sys

    return [sys.executable, *sys.orig_argv[1:]]


def replace_process(command: list[str]) -> None:
    logging.shutdown()
    os.execv(command[0], command)


def restart_process(command: list[str] | None = None,
                    execute: Callable[[list[str]], None] = replace_process) -> None:
    """Replace this process by a fresh Easel started with the same command line, so every module, extension
    and model is loaded anew (the Extensions tab's "Apply and restart"). Only `main` offers it: tests and
    embedding programs never have their process replaced. The log line shows the command with its logins
    masked (`webui.redact.redact_argv`)."""
    from webui.redact import redact_argv

    command = command or restart_command()
    log.warning("restarting Easel: %s", " ".join(redact_argv(command)))
    execute(command)


def start_replicas(easel: Easel) -> Any:
    """Generation on Ray replicas (`--workers`, `--ray-address`; docs/SCALING.md): the engine's worker becomes a
    `webui.cluster.dispatcher.Dispatcher` over a Ray Serve deployment. Ray is imported here only."""
    from webui.cluster.deployment import start_cluster

    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"--workers / --ray-address need Ray: pip install -e .[cluster] ({exc})") from None
    return start_cluster(easel.engine, easel.settings.workers, easel.settings.ray_address,
                         min_workers=easel.settings.min_workers)


def main(argv: list[str] | None = None) -> None:
    from webui.security import InsecureLaunchError, launch_warnings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        launch_warnings(settings)  # refuse an unprotected public link before anything is built
        from webui.model_manager.formats import check_storage

        flag = settings.precision if settings.precision in ("fp8", "nf4", "int8") else ""
        check_storage(flag, settings.resolved_device())  # --precision nf4/int8 need CUDA (the setting: at load)
    except (ValueError, InsecureLaunchError) as exc:  # messages name the flag, never a password
        log.error("Easel did not start: %s", exc)
        raise SystemExit(2) from None
    if settings.load_message:
        log.warning(settings.load_message)
    easel = build(settings)
    easel.extras["restart"] = restart_process
    control = server_control(easel)  # /sdapi/v1/server-stop and server-restart (--api-server-stop) ask it
    if settings.workers or settings.ray_address:
        start_replicas(easel)
    easel.engine.start()
    create_server(easel, block=True)
    if control.command == "restart":
        restart_process()
    elif control.command == "stop":
        log.info("Easel stopped as asked through the API")
