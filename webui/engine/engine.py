"""The engine: validates requests, queues them on the worker, runs the mode, writes infotext and PNGs.

UI and API both call `Engine.submit`; the worker calls `Engine.run_job` on its thread. Extensions can change a
request before it runs (`before_generate` hooks) and post-process images after (`after_generate` hooks, which run
after the built-in detail fixer, `webui.engine.detail`, when the request asks for it); those
hooks, the pipeline wrappers, the samplers and the adapter kinds are read from the Easel's registry on each job.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from webui import __version__
from webui.engine import detail, face_restore
from webui.engine.context import Generated, ModeContext
from webui.engine.cpu_path import CpuPath
from webui.engine.outputs import mode_folder, save_image
from webui.engine.script_job import CellJob, ScriptJob
from webui.engine.tasks import EngineTask, UnloadRequest
from webui.engine.tiny_vae import TinyVaes
from webui.engine.upscalers import Upscalers
from webui.engine.worker import Job, JobResult, Worker
from webui.extensions import PipelineWrapper, Registry
from webui.infotext import format_infotext, generation_parameters
from webui.model_manager.defaults import entry_defaults, size_plan
from webui.model_manager.identify import Arch
from webui.model_manager.manager import ModelManager
from webui.requests import GenerationRequest, RequestError, validate_request
from webui.settings import Settings, checked_changes, job_settings
from webui.styles import StyleStore, merge_prompt

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """Switch the model on the device, queued like a generation so it never races one."""

    checkpoint: str
    vae: str | None = None
    mode: str = "load"


# The prompt fields styles apply to, where a request has them: (name, whether it is a negative prompt).
STYLED_PROMPTS = (("prompt", False), ("negative_prompt", True), ("hr_prompt", False), ("hr_negative_prompt", True))

DETAIL_MODES = ("txt2img", "img2img", "inpaint")  # the modes the detail fixer runs after

MODES = {"txt2img": "webui.engine.modes.txt2img", "img2img": "webui.engine.modes.img2img",
         "inpaint": "webui.engine.modes.inpaint", "segment": "webui.engine.modes.segment",
         "edit": "webui.engine.modes.edit"}


class Engine:
    def __init__(self, settings: Settings, manager: ModelManager, registry: Registry | None = None) -> None:
        self.settings = settings
        self.manager = manager
        self.registry = registry if registry is not None else Registry()  # the Easel's: hooks, samplers
        self.worker = Worker(self.run_job, queue_size=settings.user.queue_size)
        self.upscalers = Upscalers([settings.models_dir / "ESRGAN", *settings.esrgan_dirs], manager.device,
                                   manager.dtype, memory=manager.memory)
        # GFPGAN / CodeFormer from models/GFPGAN and models/Codeformer (`restore_faces`, the Extras tab)
        self.face_restorers = face_restore.FaceRestorers(settings.models_dir, manager.device, manager.dtype,
                                                         memory=manager.memory)
        # prompt styles: styles.csv and the other styles*.csv in the data dir
        self.styles = StyleStore(settings.data_dir, lambda: settings.user.limits().max_prompt_chars)
        # called with each image file saved under outputs/ (the image browser's index listens here)
        self.saved_listeners: list[Callable[[Path], None]] = []
        # set on a generation replica (webui.cluster): takes each output instead of writing it, returns its name
        self.outputs_recorder: Callable[..., Path] | None = None
        # the CPU execution path (OpenVINO / torch.compile stand-ins around each pipeline call) and the tiny VAEs
        user = lambda: settings.user  # noqa: E731 -- the Settings tab replaces settings.user
        self.cpu_path = CpuPath(manager.device, manager.cache_dir, lambda: user().cpu_backend,
                                TinyVaes(settings.models_dir / "VAE-approx",
                                         lambda: (user().tiny_vae_decode, user().tiny_vae_preview)))

    # The extensions' hooks this engine runs: the registry's own lists.
    @property
    def before_generate(self) -> list[Callable[[Any], Any]]:
        return self.registry.before_generate

    @property
    def after_generate(self) -> list[Callable[[Any, list[Generated]], list[Generated] | None]]:
        return self.registry.after_generate

    @property
    def pipeline_wrappers(self) -> list[PipelineWrapper]:
        return self.registry.pipeline_wrappers

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    # Submitting ----------------------------------------------------------------------------------
    def submit(self, request: Any, source: str = "ui") -> Job:
        """Validate (raising RequestError naming the field) and queue a request."""
        if isinstance(request, GenerationRequest):
            self.check_generation(request)
        elif isinstance(request, ScriptJob):
            self.check_script(request)
        elif hasattr(request, "validate"):
            request.validate(self.settings.user.limits())
        return self.worker.submit(request, source)

    def check_generation(self, request: GenerationRequest) -> None:
        """RequestError naming the field when `request` cannot run."""
        validate_request(request, self.settings.user.limits(), self.registry.samplers,
                         self.arch_of(request.checkpoint))
        self.check_overrides(request)
        self.styled(request)  # every style it names exists, and the prompts stay within the limit
        self.check_size(request)
        detail.check(request, self.settings.user.limits())  # the detail fixer's passes, if any
        if getattr(request, "restore_faces", False):  # the restorer the settings pick has a file, faces a finder
            self.face_restorers.check(self.face_options(request).restorer, "restore_faces")
            face_restore.check_finder(self.manager, self.user_settings(request).face_restoration_finder,
                                      "restore_faces")

    def check_overrides(self, request: GenerationRequest) -> None:
        """RequestError naming the setting when a request's own setting values are ones the settings refuse."""
        overrides = dict(request.setting_overrides)
        if overrides:
            _, errors = checked_changes(self.settings.user, overrides)
            if errors:
                raise RequestError(errors[0].key, errors[0].message)

    def user_settings(self, request: Any) -> Any:
        """The user settings a job runs with: the current ones, with the request's own per-job values."""
        return job_settings(self.settings.user, getattr(request, "setting_overrides", ()))

    def check_script(self, job: ScriptJob) -> None:
        """A script job's request as sent (errors name its field), then each request the script made of it
        (errors name `script_args` and the cell: "X/Y/Z plot, Steps = 500: steps: ...")."""
        if job.base is not None:
            self.check_generation(job.base)
        job.validate(self.settings.user.limits())
        for request, label in zip(job.requests, job.labels):
            try:
                self.check_generation(request)
            except RequestError as exc:
                raise RequestError("script_args", f"{job.script}, {label}: {exc.field}: {exc.message}") from None

    def check_size(self, request: GenerationRequest) -> None:
        """RequestError on `width` before queueing when the model refuses the asked size (its declared range)."""
        try:
            entry = self.manager.find_checkpoint(request.checkpoint) if request.checkpoint else self.manager.current()
        except LookupError:
            return
        if entry is not None and isinstance(getattr(entry, "arch", None), Arch):
            size_plan(entry_defaults(entry), request.width, request.height)

    def arch_of(self, checkpoint: str) -> Arch | None:
        """The model family a request for `checkpoint` ("" for the current model) will run on, where that is known
        before the job runs; None otherwise (the job then finds out)."""
        try:
            entry = self.manager.find_checkpoint(checkpoint) if checkpoint else self.manager.current()
        except LookupError:
            return None
        arch = getattr(entry, "arch", None)
        return arch if isinstance(arch, Arch) and arch != Arch.UNKNOWN else None

    def generate(self, request: Any, source: str = "api", timeout: float | None = None) -> Job:
        job = self.submit(request, source)
        job.wait(timeout)
        return job

    def load(self, checkpoint: str, vae: str | None = None, source: str = "ui",
             timeout: float | None = None) -> Job:
        """Queue a model switch behind any running generation and wait for it."""
        job = self.queue_load(checkpoint, vae, source)
        job.wait(timeout)
        return job

    def queue_load(self, checkpoint: str, vae: str | None = None, source: str = "ui") -> Job:
        """Queue a model switch behind any running generation; the caller waits (`Job.wait_async` on a loop)."""
        if not checkpoint:
            raise RequestError("checkpoint", "pick a checkpoint to load")
        return self.worker.submit(LoadRequest(checkpoint, vae), source)

    def unload(self, checkpoint: str | None = None, source: str = "ui", wait: bool = True,
               timeout: float | None = None) -> Job:
        """Queue unloading one checkpoint (None: every model of every kind) behind any running job, so a job
        never loses its model while it runs; wait for it unless `wait` is False (`Job.wait_async` on a loop)."""
        job = self.submit(UnloadRequest(checkpoint=checkpoint or None), source)
        if wait:
            job.wait(timeout)
        return job

    def styled(self, request: GenerationRequest) -> GenerationRequest:
        """`request` with its styles applied to its prompts (itself when it names none). RequestError on `styles`
        for a style no style file has, or when a styled prompt exceeds the prompt length limit."""
        if not request.styles:
            return request
        styles = self.styles.resolve(tuple(request.styles))
        changes: dict[str, str] = {}
        for name, negative in STYLED_PROMPTS:
            text = getattr(request, name, None)
            if not isinstance(text, str) or (name not in ("prompt", "negative_prompt") and not text):
                continue  # an empty second-pass prompt means "the first pass's", which is styled already
            for style in styles:
                text = merge_prompt(style.negative_prompt if negative else style.prompt, text)
            changes[name] = text
        limit = self.settings.user.limits().max_prompt_chars
        for name, text in changes.items():
            if len(text) > limit:
                raise RequestError("styles", f"with the styles applied, {name} is {len(text)} characters long; "
                                             f"the limit is {limit}")
        return request_with(request, **changes)

    # Running (worker thread) ---------------------------------------------------------------------
    def run_job(self, job: Job) -> JobResult:
        """Run one job with the models it uses pinned in memory until it ends."""
        with self.manager.memory.job():
            return self._run(job)

    def _run(self, job: Job) -> JobResult:
        request = job.request
        if isinstance(request, EngineTask):  # upscaling, unloading, a script's plot: run by the task itself
            return request.run(self, job)
        if isinstance(request, LoadRequest):
            loaded = self.manager.get(request.checkpoint, "txt2img", request.vae)
            result = JobResult(info={"model": loaded.entry.name, "model_hash": loaded.entry.short_hash})
            job.update(result=result)
            return result
        return self.run_generation(job)

    def run_generation(self, job: Job, save: bool = True, extra: dict[str, Any] | None = None) -> JobResult:
        """One generation request (`job.request`) on the worker: the extensions' hooks, the mode, the infotext and
        the saved PNGs; a script job runs each of its requests through here (`save` False: its images are not
        saved, as SD upscale's tiles; `extra`: entries every image's infotext adds, as a loop's number)."""
        request = job.request
        for hook in self.before_generate:
            request = hook(request) or request
        # the mode gets the prompts with the styles applied; the infotext and the hooks keep them as typed
        styled = self.styled(request) if isinstance(request, GenerationRequest) else request
        mode = importlib.import_module(MODES[request.mode])
        user = self.user_settings(request)  # the settings, with this request's own per-job values
        passes = detail.units(styled) if request.mode in DETAIL_MODES else 0
        mode_job = job
        if passes:  # the job's batches: the mode's, then the detail passes' (which the mode must not overwrite)
            job.update(batch_total=request.batch_count + passes)
            mode_job = CellJob(job, request, 0)
        ctx = self.mode_context(mode_job, request)
        restoring = request.mode in DETAIL_MODES and bool(getattr(styled, "restore_faces", False))
        if restoring:  # loaded before generating, so a broken file costs no generation
            face_restore.load_or_refuse(self.face_restorers, self.face_options(styled).restorer, "restore_faces")
        generated: list[Generated] = mode.run(ctx, styled)
        if restoring:  # before the detail fixer
            generated = face_restore.apply(ctx, self.face_restorers, self.face_options(styled), generated)
        if request.mode in DETAIL_MODES:  # the detail fixer's passes, when the request asks for them
            generated = detail.apply(ctx, styled, generated)
        for hook in self.after_generate:
            generated = hook(request, generated) or generated
        result = JobResult()
        # the model that ran, as the mode returned it (or, when no image came out, the one it loaded)
        ran = next((item for item in generated if item.model), None)
        model, model_hash = (ran.model, ran.model_hash) if ran is not None else (
            (ctx.loaded.entry.name, ctx.loaded.entry.short_hash) if ctx.loaded is not None else (None, None))
        for item in generated:
            if item.model is None:  # an image an extension's hook made
                item.model, item.model_hash = model, model_hash
            if extra:
                item.extra = {**item.extra, **extra}
            text, params = self.infotext(request, item)
            result.images.append(item.image)
            result.infotexts.append(text)
            result.parameters.append(params)
            result.seeds.append(item.seed)
            if item.payload:
                result.info.setdefault("items", []).append(item.payload)
            if save and user.save_images and getattr(request, "save_images", True):
                folder = mode_folder(self.settings.outputs_dir, request.mode)
                mask = item.payload.get("mask")
                result.paths.append(self.save_output(item.image, folder, item.seed,
                                                     text if user.enable_pnginfo else None, user.filename_digits,
                                                     mask if isinstance(mask, Image.Image) else None))
        result.pnginfo = user.enable_pnginfo
        result.info |= {"seeds": result.seeds, "model": model, "model_hash": model_hash}
        if styled is not request:
            result.info["styled"] = {"prompt": styled.prompt, "negative_prompt": styled.negative_prompt}
        job.update(result=result)
        return result

    def face_options(self, request: Any = None, restorer: str | None = None,
                     visibility: float = 1.0) -> face_restore.FaceOptions:
        """Face restoration as the settings say (restorer, CodeFormer weight, finder), with `visibility`; a
        request's own restorer and weight (override_settings, the X/Y/Z axis) win over the settings'."""
        user = self.user_settings(request)
        restorer = restorer or getattr(request, "face_restoration_model", "") or user.face_restoration_model
        weight = getattr(request, "code_former_weight", -1.0)
        return face_restore.FaceOptions(restorer, visibility, user.code_former_weight if weight < 0 else weight,
                                        user.face_restoration_finder, user.face_restoration_confidence)

    def mode_context(self, job: Job, request: Any = None) -> ModeContext:
        """The context a mode (or the detail fixer) runs in, publishing its progress to `job`, with the settings as
        `request` overrides them for its own job."""
        user = self.user_settings(request)
        return ModeContext(self.manager, job, user.live_preview_every, self.upscalers,
                           plan_layout=user.builtin_plan_layout, samplers=self.registry.samplers,
                           randn_source=user.randn_source, flow_shift=user.flow_shift,
                           fix_steps=user.img2img_fix_steps,
                           vae_tiling=user.vae_tiling, vae_tile_size=user.vae_tile_size,
                           pipeline_wrappers=list(self.pipeline_wrappers),
                           adapter_sources=list(self.registry.adapter_sources),
                           adapter_loaders=dict(self.registry.adapter_loaders), cpu_path=self.cpu_path)

    def run_detail(self, job: Job, request: GenerationRequest, generated: list[Generated]) -> list[Generated]:
        """The request's detail passes on images made otherwise (SD upscale's blended pictures), in place; their
        progress is `job`'s batches from 0 on (two per image and pass, `detail.units`)."""
        return detail.apply(self.mode_context(job, request), self.styled(request), generated, first=0)

    def save_output(self, image: Image.Image, folder: Path, seed: int, text: str | None, digits: int = 5,
                    mask: Image.Image | None = None) -> Path:
        """Write one output PNG under `folder` (its mask beside it) and tell the listeners; on a generation replica
        the `outputs_recorder` takes it instead and the API process writes it (webui.cluster)."""
        if self.outputs_recorder is not None:
            return self.outputs_recorder(image, folder, seed, text, digits, mask)
        path = save_image(image, folder, seed, text, digits)
        if mask is not None:
            mask.save(path.with_name(path.stem + "-mask.png"))
        self.notify_saved(path)
        return path

    def notify_saved(self, path: Path) -> None:
        """Tell the listeners an image was saved; one that fails is logged and never fails the job."""
        for listener in list(self.saved_listeners):
            try:
                listener(path)
            except Exception:  # noqa: BLE001 - an index update must not lose a generated image
                log.exception("a listener failed on the saved image %s", path.name)

    def infotext(self, request: Any, item: Generated) -> tuple[str, dict[str, Any]]:
        """AUTOMATIC1111's parameters text for one image, and the parameters it was written from.

        A generation's parameters are its request's declared fields with what the run used in their place: the
        image's seed, the model that made it (`item.model`, and its hash), and the mode's own entries
        (`item.extra`: the sampler used, LoRA hashes, ...)."""
        if not isinstance(request, GenerationRequest):
            params = {"Seed": item.seed, **item.extra, "Version": f"Easel {__version__}"}
            # a segmentation image's first line is its own query (one image per query line)
            # an edit's first line is its instruction
            first = item.extra.get("Query", getattr(request, "query", None) or getattr(request, "instruction", ""))
            return format_infotext(str(first), "", params), params
        actual: dict[str, Any] = {"Seed": item.seed, "Model hash": item.model_hash}
        if item.model:
            actual["Model"] = item.model
        params = generation_parameters(request, {**actual, **item.extra})
        return format_infotext(request.prompt, request.negative_prompt, params), params


def request_with(request: GenerationRequest, **changes: Any) -> GenerationRequest:
    return dataclasses.replace(request, **changes)
