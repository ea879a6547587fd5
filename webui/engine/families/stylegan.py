"""StyleGAN2/3 generators (models/GAN): one forward pass per image, from a seed, a truncation ψ and, for a
class-conditional generator, a class; and the seed walk, a GIF that passes through several seeds in latent space.

txt2img: each image's seed gives its z (batch seeds run on as usual: seed, seed+1, …); `truncation_psi` pulls w
towards the generator's average (0 draws the average image whatever the seed). A conditional generator draws the class
in `class_label`, or the class number the prompt holds ("3", "class 3"); an unconditional one takes neither, and no
prompt (a prompt would change nothing, so it is refused rather than ignored). There are no steps, CFG, sampler or
negative prompt: the families' dispatcher refuses values other than the fields' defaults. The generator draws its
one size; another asked size is drawn at that size and resized, and the infotext says so.

The seed walk (`SeedWalkRequest`, an engine task: the UI's Seed walk button and `POST /easel/v1/seed-walk`) draws
`frames` pictures from each seed to the next (spherical interpolation in z, or linear in w) and returns them as an
animated GIF, saved under outputs/txt2img-images like the images when saving is on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webui import __version__
from webui.engine.context import Generated, ModeContext, render_size, resized, run_batches
from webui.engine.tasks import EngineTask
from webui.engine.worker import Job, JobResult
from webui.model_manager.identify import Arch
from webui.requests import GenerationRequest, Limits, RequestError

if TYPE_CHECKING:
    from webui.engine.engine import Engine

CLASS_PROMPT = re.compile(r"^\s*(?:class\s*)?#?\s*(\d+)\s*$", re.IGNORECASE)
MAX_WALK_FRAMES = 240  # frames per seed-to-seed step
MAX_WALK_TOTAL = 1200  # frames in one walk
MAX_WALK_SEEDS = 64
NOT_SENT = {"Steps": None, "Sampler": None, "CFG scale": None}  # what a GAN's infotext leaves out


def class_index(prompt: str, label: int, c_dim: int) -> int | None:
    """The class a request (its prompt and class_label) asks the generator for (None for an unconditional one);
    RequestError naming the field."""
    prompt = prompt.strip()
    if c_dim == 0:
        if label != -1:
            raise RequestError("class_label", "this StyleGAN generator is unconditional (it has no classes); leave "
                                              "class_label at -1")
        if prompt:
            raise RequestError("prompt", "an unconditional StyleGAN generator takes no prompt (the seed chooses the "
                                         "image); clear the prompt")
        return None
    if label >= 0:
        if label >= c_dim:
            raise RequestError("class_label", f"this generator has classes 0 to {c_dim - 1}, not {label}")
        if prompt and not (CLASS_PROMPT.match(prompt) and int(CLASS_PROMPT.match(prompt).group(1)) == label):
            raise RequestError("prompt", f"the class comes from class_label ({label}); clear the prompt, which a "
                                         "StyleGAN generator cannot read")
        return label
    found = CLASS_PROMPT.match(prompt)
    if found is None:
        raise RequestError("prompt", f"this StyleGAN generator draws one of {c_dim} classes: write the class number "
                                     f"(0 to {c_dim - 1}) as the prompt, or set class_label")
    if int(found.group(1)) >= c_dim:
        raise RequestError("prompt", f"this generator has classes 0 to {c_dim - 1}, not {found.group(1)}")
    return int(found.group(1))


def run(ctx: ModeContext, request: GenerationRequest, mode: str) -> list[Generated]:
    # 1. Check the inputs: txt2img only, no negative prompt, the class (or none).
    if mode != "txt2img":
        raise RequestError("checkpoint", f"a StyleGAN generator draws from a seed only: use txt2img, not {mode}")
    if request.negative_prompt.strip():
        raise RequestError("negative_prompt", "a StyleGAN generator has no negative prompt; leave it empty")
    loaded = ctx.load(request, "txt2img")
    pipe = loaded.pipe
    config = pipe.generator.config
    chosen = class_index(request.prompt, int(getattr(request, "class_label", -1)), config.c_dim)
    psi = float(getattr(request, "truncation_psi", 1.0))

    # 2. Prepare: its one size, the infotext.
    own = render_size(loaded, request)
    extra: dict[str, Any] = {**NOT_SENT, "Truncation psi": psi, "Generator": pipe.generator.generation}
    if chosen is not None:
        extra["Class"] = chosen
    if own:
        extra["Rendered size"] = f"{own[0]}x{own[1]}"

    # 3. Run the batches: one forward pass each.
    def call(gens: list[Any], batch_size: int) -> list[Any]:
        ctx.job.update(step=0, total_steps=1)
        seeds = [g.initial_seed() for g in gens]
        images = ctx.call_pipeline(loaded, request, "txt2img", seeds=seeds, class_index=chosen,
                                   truncation_psi=psi)
        ctx.job.update(step=1)
        return resized(images, request.width, request.height)

    return run_batches(ctx, request, loaded, call, extra)


# ------------------------------------------------------------------------------------------------ seed walk
@dataclass(frozen=True)
class SeedWalkRequest(EngineTask):
    """A GIF walking through `seeds` in latent space on a StyleGAN checkpoint ("" = the current one)."""

    seeds: tuple[int, ...] = (0, 1)
    frames: int = 24  # pictures from each seed to the next
    checkpoint: str = ""
    truncation_psi: float = 1.0
    class_label: int = -1
    prompt: str = ""  # a conditional generator's class, as in txt2img
    space: str = "z"  # "z": spherical interpolation of z; "w": linear interpolation of w
    duration_ms: int = 80  # each frame's time in the GIF
    save_images: bool = True
    mode: str = "seed walk"

    def validate(self, limits: Limits) -> None:
        if not 2 <= len(self.seeds) <= MAX_WALK_SEEDS:
            raise RequestError("seeds", f"a seed walk passes through 2 to {MAX_WALK_SEEDS} seeds, got "
                                        f"{len(self.seeds)}")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
                raise RequestError("seeds", f"each seed is a whole number from 0 to {2**32 - 1}, got {seed!r}")
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or not 1 <= self.frames <= MAX_WALK_FRAMES:
            raise RequestError("frames", f"must be a whole number from 1 to {MAX_WALK_FRAMES}, got {self.frames!r}")
        total = (len(self.seeds) - 1) * self.frames + 1
        if total > MAX_WALK_TOTAL:
            raise RequestError("frames", f"{total} frames in all; the limit is {MAX_WALK_TOTAL}")
        if self.space not in ("z", "w"):
            raise RequestError("space", f"must be \"z\" (spherical in z) or \"w\" (linear in w), got {self.space!r}")
        if not -1.0 <= float(self.truncation_psi) <= 2.0:
            raise RequestError("truncation_psi", f"must be between -1 and 2, got {self.truncation_psi}")
        if not 20 <= int(self.duration_ms) <= 10000:
            raise RequestError("duration_ms", f"must be from 20 to 10000 ms per frame, got {self.duration_ms}")

    @property
    def total_frames(self) -> int:
        return (len(self.seeds) - 1) * self.frames + 1

    def run(self, engine: "Engine", job: Job) -> JobResult:
        from webui.engine.outputs import mode_folder, next_number
        from webui.gan.pipeline import gif_bytes

        name = self.checkpoint or engine.mode_context(job).default_checkpoint()
        entry = engine.manager.find_checkpoint(name)
        if entry.arch != Arch.GAN:
            raise RequestError("checkpoint", f"{entry.name} is not a StyleGAN generator: a seed walk runs on the "
                                             "generators in models/GAN")
        loaded = engine.manager.get(entry.name, "txt2img")
        pipe = loaded.pipe
        chosen = class_index(self.prompt, int(self.class_label), pipe.generator.config.c_dim)
        job.update(step=0, total_steps=self.total_frames)

        def on_frame(done: int, total: int) -> None:
            job.update(step=done)
            job.check_interrupt()

        frames = pipe.walk(list(self.seeds), self.frames, chosen, float(self.truncation_psi), self.space, on_frame)
        data = gif_bytes(frames, int(self.duration_ms))
        params = {"Seeds": " → ".join(str(s) for s in self.seeds), "Frames": len(frames),
                  "Walk": "slerp z" if self.space == "z" else "lerp w", "Truncation psi": self.truncation_psi,
                  "Class": chosen, "Model": loaded.entry.name, "Model hash": loaded.entry.short_hash,
                  "Version": f"Easel {__version__}"}
        text = ", ".join(f"{k}: {v}" for k, v in params.items() if v is not None)
        result = JobResult(info={"gif": data, "frames": frames, "infotext": text, "model": loaded.entry.name,
                                 "model_hash": loaded.entry.short_hash, "seeds": list(self.seeds)})
        if self.save_images and engine.user_settings(None).save_images:
            folder = mode_folder(engine.settings.outputs_dir, "txt2img")
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{next_number(folder):05d}-walk-{self.seeds[0]}-{self.seeds[-1]}.gif"
            path.write_bytes(data)
            result.paths.append(path)
        job.update(result=result)
        return result
