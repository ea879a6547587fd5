"""The LoRA training loop, one for every model family, shared by the CLI and the Train tab.

`train(config, on_event=..., cancel=...)` reads the dataset, loads the base model (a diffusers folder, the
built-in model included), puts a PEFT LoRA on its denoiser (the UNet or transformer; text encoders stay frozen)
and trains it with the objective the model was trained with:
  - the built-in model (pixel space, x0 prediction): the flow-matching velocity loss of webui/builtin/objective.py;
  - SD 1.x / 2.x / SDXL: noise (epsilon) or v-prediction, as the scheduler's config says, on VAE latents;
  - SD3, Flux.1, Z-Image: rectified flow (velocity noise - x0) on VAE latents, logit-normal noise levels.
Each step's randomness (batch, caption dropout, noise, noise level) comes from a generator seeded by
(seed, step), so a resumed run continues exactly where the saved one would have gone. Every `save_every` steps,
on cancel and at the end, the LoRA is written to `<output_dir>/<output_name>.safetensors` and the resume state
(LoRA weights, optimizer, step, loss history) to `<output_name>.state.pt` beside it; sample images go to
`<output_name>.samples/`. Cancelling (a `threading.Event`) stops before the next step.

File layouts: the built-in model's LoRA is `transformer.<module>.lora_A/B.weight` with alpha in the metadata
(`ss_network_alpha`), plus `bundle_emb.<trigger>.string_to_param.*` [1,dim] when `trigger_embedding` learned a
vector for the trigger word (AUTOMATIC1111's key for an embedding bundled in a LoRA); the diffusers families are
written by the pipeline's own `save_lora_weights` (keys `unet.…` / `transformer.…`, alpha folded into lora_B),
which diffusers, ComfyUI and Easel load.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from webui.training.config import FIELDS, ConfigError, TrainConfig, base_model_path, trigger_pattern
from webui.training.dataset import load_dataset
from webui.training.folders import TrainingFolders, claim_output_name, output_owner

log = logging.getLogger(__name__)

STATE_VERSION = 1
WARMUP_FRACTION = 0.05
SAMPLE_SEED_OFFSET = 1000


class TrainingError(RuntimeError):
    """Training could not go on (a loss that is not finite, a model that cannot be trained)."""


@dataclass(frozen=True)
class TrainEvent:
    """What the loop reports. kind: "start", "step", "sample", "save", "done" or "cancelled"."""

    kind: str
    step: int
    total: int
    loss: float | None = None
    elapsed_s: float = 0.0
    samples: tuple[Path, ...] = ()
    path: Path | None = None
    message: str = ""


@dataclass(frozen=True)
class TrainResult:
    path: Path
    step: int
    cancelled: bool
    losses: tuple[float, ...]
    wall_s: float  # wall time of all runs of this LoRA, resumes included
    cpu_s: float  # CPU time of this process during them
    samples: tuple[Path, ...] = ()


# ============================================================================================ base models
def default_search_dirs(models_dir: Path | None = None) -> list[Path]:
    """The model folders of a data folder (`models_dir` is its models/; default: the current folder's)."""
    data_dir = Path(models_dir).parent if models_dir is not None else Path.cwd()
    return list(TrainingFolders.under(data_dir).models)


def resolve_base_model(name: str, search_dirs: list[Path]) -> Path:
    """`name` looked up in the model folders, and only there: a diffusers folder (model_index.json) or a
    single-file SD 1.x/2.x/SDXL/SD3/Flux/Z-Image checkpoint (`.safetensors`, the extension may be left out)."""
    return base_model_path(name, search_dirs)


def base_hash(path: Path) -> str:
    """Short (10 hex) hash of the base model, as Easel's model list shows it."""
    from webui.model_manager.hashes import folder_weight_files, sha256_file, sha256_files

    if path.is_file():
        return sha256_file(path)[:10]
    return sha256_files(folder_weight_files(path))[:10]


def load_single_file_base(path: Path, search_dirs: list[Path]) -> Any:
    """A single-file checkpoint through Easel's loaders (shipped configs or a `<name>.config/` folder beside the
    file; a transformer-only file takes its text encoders and VAE from a diffusers folder of its family)."""
    from webui.model_manager.clip_tokenizer import load_clip_tokenizer
    from webui.model_manager.errors import ModelLoadError
    from webui.model_manager.identify import identify_file, identify_folder
    from webui.model_manager.loading import LoadContext, load_single_file

    ident = identify_file(path)
    if not ident.supported:
        raise ConfigError("base_model", f"{path}: {ident.reason}")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "easel"

    def family_folders(arch: Any) -> list[Path]:
        folders = [f for d in search_dirs if d.is_dir() for f in sorted(d.iterdir())
                   if (f / "model_index.json").is_file()]
        return [f for f in folders if identify_folder(f).arch == arch]

    context = LoadContext(dtype=torch.float32, clip_tokenizer=lambda pad: load_clip_tokenizer(cache, pad),
                          family_folders=family_folders, hub_offline=lambda: True)
    try:
        return load_single_file(path, ident, context).pipe
    except ModelLoadError as exc:
        raise ConfigError("base_model", str(exc)) from exc


def load_base(path: Path, search_dirs: list[Path] | None = None) -> tuple[Any, str]:
    """(pipeline in float32, family) for a diffusers folder or a single-file checkpoint."""
    from webui.model_manager.loading import dtype_kwargs

    if path.is_file():
        pipe = load_single_file_base(path, search_dirs or [])
        class_name = type(pipe).__name__
        family = FAMILY_OF_CLASS.get(class_name)
        if family is None:
            raise ConfigError("base_model", f"{path} loads as {class_name}; LoRA training supports "
                                            f"{', '.join(sorted(FAMILY_OF_CLASS))}")
        pipe.set_progress_bar_config(disable=True)
        return pipe, family
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    class_name = str(index.get("_class_name", ""))
    family = FAMILY_OF_CLASS.get(class_name)
    if family is None:
        raise ConfigError("base_model", f"{path} is a {class_name or 'unknown'} model; LoRA training supports "
                                        f"{', '.join(sorted(FAMILY_OF_CLASS))}")
    if family == "easel":
        from webui.builtin.pipeline import EaselPipeline

        pipe = EaselPipeline.from_pretrained(str(path), **dtype_kwargs(torch.float32))
    else:
        from diffusers import DiffusionPipeline

        kwargs: dict[str, Any] = {**dtype_kwargs(torch.float32), "local_files_only": True,
                                  "use_safetensors": True}  # never unpickle a .bin
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
            if "feature_extractor" in index:
                kwargs["feature_extractor"] = None
        pipe = DiffusionPipeline.from_pretrained(str(path), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe, family


FAMILY_OF_CLASS = {
    "EaselPipeline": "easel", "StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux", "ZImagePipeline": "zimage",
}
ATTENTION_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
DEFAULT_TARGETS: dict[str, str | tuple[str, ...]] = {
    "easel": r".*blocks\.\d+\.(qkv|proj|mlp\.0|mlp\.2)",
    "sd": ATTENTION_TARGETS, "sdxl": ATTENTION_TARGETS, "sd3": ATTENTION_TARGETS, "flux": ATTENTION_TARGETS,
    "zimage": ATTENTION_TARGETS,
}
# kohya's ss_base_model_version and the modelspec architecture, so other tools see what the LoRA is for
BASE_VERSION = {"easel": ("easel", "easel-shapes/lora"), "sd": ("sd_v1", "stable-diffusion-v1/lora"),
                "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
                "sd3": ("sd3", "stable-diffusion-3-medium/lora"), "flux": ("flux1", "flux-1-dev/lora"),
                "zimage": ("zimage", "z-image-turbo/lora")}


# ============================================================================================ objectives
class adapters_disabled:
    """Context manager: every PEFT LoRA layer of `module` computes as the base layer while inside."""

    def __init__(self, module: torch.nn.Module) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]

    def __enter__(self) -> None:
        for layer in self.layers:
            layer.enable_adapters(False)

    def __exit__(self, *exc: object) -> None:
        for layer in self.layers:
            layer.enable_adapters(True)


class Objective:
    """How one family turns (pixels, captions) into a training loss, renders samples and writes the file."""

    denoiser_name = "transformer"

    def __init__(self, pipe: Any, device: torch.device) -> None:
        self.pipe = pipe
        self.device = device

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    def loss(self, pixels: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    # whether preservation_loss, differential_loss and learn_trigger exist (`prior_preservation`,
    # `differential_preservation`, `trigger_embedding`)
    has_preservation = False
    words: dict[str, torch.nn.Parameter] = {}  # learned word vectors [1,dim] (learn_trigger)

    def learn_trigger(self, word: str) -> torch.nn.Parameter:
        raise NotImplementedError

    def preservation_loss(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def differential_loss(self, pixels: torch.Tensor, prompts: list[str], trigger: str, words: tuple[str, ...],
                          gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, prompts: list[str], size: tuple[int, int], steps: int, guidance: float, seed: int
               ) -> list[Any]:
        w, h = size
        images = []
        for i, prompt in enumerate(prompts):
            gen = torch.Generator("cpu").manual_seed(seed + i)
            images.extend(self.pipe(prompt=prompt, height=h, width=w, num_inference_steps=steps,
                                    guidance_scale=guidance, generator=gen).images)
        return images

    def encode_latents(self, pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        vae = self.pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
            noise = torch.randn(dist.mean.shape, generator=gen).to(self.device, dist.mean.dtype)
            latents = dist.mean + dist.std * noise  # [B,C,h,w]
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).float()

    @staticmethod
    def flow_sigmas(batch: int, gen: torch.Generator) -> torch.Tensor:
        """Noise levels in (0,1) from a logit-normal (SD3's choice): [B]."""
        return torch.sigmoid(torch.randn(batch, generator=gen))


class EaselObjective(Objective):
    """The built-in model: x0 prediction in pixel space, loss on the implied velocity (webui/builtin/objective.py)."""

    has_preservation = True
    # A self-conditioned model reads x0_prev on every sampling step after the first, so a LoRA's concept has to be
    # drawn on that path too: the concept loss feeds x0_prev on SELF_COND_P of its steps. The sampler's x0_prev is
    # the prediction of the step before, made at a noise level one step higher (about 1/20); SELF_COND_LAG makes
    # the training x0_prev the same way: the LoRA-carrying model's prediction (detached) of the same x0 and noise at
    # t + SELF_COND_LAG. Trained without it, the example LoRA drew its heart in 74% of trigger prompts, and 85% when
    # the same LoRA was sampled without x0_prev: most misses came from the self-conditioned steps (79% with it).
    SELF_COND_P = 0.9
    SELF_COND_LAG = 0.05

    @property
    def self_conditioned(self) -> bool:
        """Whether the model reads a previous prediction (x0_prev): its transformer has the `prev_in` layers."""
        return getattr(self.denoiser, "prev_in", None) is not None

    def noised(self, x0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t [B,3,H,W], t [B], eps [B,3,H,W]): x0 [B,3,H,W] (on the device) noised at training noise levels."""
        from webui.builtin.objective import sample_t

        eps = torch.randn(x0.shape, generator=gen).to(self.device)  # [B,3,H,W]
        t = sample_t(x0.shape[0], gen).to(self.device)  # [B]
        return self.mix(x0, eps, t), t, eps

    @staticmethod
    def mix(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t eps for x0, eps [B,3,H,W] and t [B]."""
        tb = t[:, None, None, None]  # [B,1,1,1]
        return (1.0 - tb) * x0 + tb * eps

    def learn_trigger(self, word: str) -> torch.nn.Parameter:
        """A trainable vector [1,dim] for `word` (one word), starting from what the word reads now: its
        vocabulary entry, `<unk>`'s for a new word. The pipeline reads it as the trainer's adapter's bundled word,
        so samples use it too."""
        from webui.builtin.text import UNK

        encoder = self.pipe.text_encoder
        encoder.requires_grad_(False)
        start = encoder.embed.weight.detach()[encoder.tokenizer.index.get(word, UNK)]  # [dim]
        vector = torch.nn.Parameter(start.clone()[None].to(self.device))  # [1,dim]
        self.words = {word: vector}
        self.pipe.set_bundled_words(ADAPTER, self.words)
        return vector

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [B,L8,dim], mask [B,L8]) of the frozen text encoder, padded to a multiple of 8 tokens. With a
        learned trigger vector in one of the prompts the features carry its gradient."""
        encoder = self.pipe.text_encoder
        ids, mask = encoder.tokenize(prompts, self.words)  # [B,L] each; learned words after the vocabulary
        pad = -ids.shape[1] % 8
        ids, mask = F.pad(ids, (0, pad)).to(self.device), F.pad(mask, (0, pad)).to(self.device)  # [B,L8] each
        if bool((ids >= len(encoder.tokenizer.vocab)).any()):
            return encoder(ids, mask, self.words), mask
        with torch.no_grad():
            return encoder(ids, mask), mask

    def loss(self, pixels: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        from webui.builtin.objective import velocity_loss

        x0 = pixels.to(self.device)  # [B,3,H,W] in [-1,1]
        x_t, t, eps = self.noised(x0, gen)
        text, mask = self.encode_text(prompts)
        prev = None
        if self.self_conditioned and float(torch.rand(1, generator=gen)) < self.SELF_COND_P:
            t_before = (t + self.SELF_COND_LAG).clamp(max=1.0)  # [B]
            with torch.no_grad():  # the previous sampling step's prediction, LoRA included
                prev = self.denoiser(self.mix(x0, eps, t_before), t_before, text, mask)  # [B,3,H,W]
        x0_hat = self.denoiser(x_t, t, text, mask, None, prev)  # [B,3,H,W]
        return velocity_loss(x0_hat, x0, t)

    def preservation_loss(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """Prior preservation by distillation: `batch_size` fresh examples of the built-in model's own tasks (half
        text-to-image, half edits and inpainting, from webui/builtin/data.py), noised as in training; the loss is
        the velocity error of the prediction with the LoRA against the base model's prediction (LoRA off) of the
        same input; a self-conditioned model reads the base model's first prediction as x0_prev on the base
        trainer's share of the groups, as it does while sampling. Zero while the LoRA changes nothing; it pulls back
        whatever the LoRA changes on the base's tasks, conditioned ones included."""
        from webui.builtin.objective import SELF_COND_P, task_batch

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        batch = task_batch(seed, 0, batch_size)
        groups = [(batch.gen_prompts, batch.gen_target, None),
                  (batch.cond_prompts, batch.cond_target, batch.cond_source)]
        losses, sizes = [], []
        for prompts, target, source in groups:
            if target.shape[0]:
                src = None if source is None else source.to(self.device)  # [B,4,H,W]
                losses.append(self.distill(target.to(self.device), prompts, src, SELF_COND_P, gen))
                sizes.append(target.shape[0])
        return sum(loss * n for loss, n in zip(losses, sizes)) / sum(sizes)

    def differential_loss(self, pixels: torch.Tensor, prompts: list[str], trigger: str, words: tuple[str, ...],
                          gen: torch.Generator) -> torch.Tensor:
        """Differential output preservation: each caption of the batch that holds the trigger word, with the
        trigger swapped for one of `words` drawn at random ("a red heart" -> "a red cross"), noised from its own
        training image; the loss is the velocity error of the prediction with the LoRA against the base model's
        for that input. The LoRA learns to draw the concept for the trigger and to leave what the base model draws
        for the words beside it (the shapes the concept would otherwise spill onto) as it was. Self-conditioned
        as the concept loss is (SELF_COND_P), x0_prev being the base model's first prediction."""
        pattern = trigger_pattern(trigger)
        keep = [i for i, prompt in enumerate(prompts) if pattern.search(prompt)]
        if not keep:  # ordinary scenes, dropped captions
            return torch.zeros((), device=self.device)
        picks = torch.randint(0, len(words), (len(keep),), generator=gen).tolist()
        swapped = [pattern.sub(words[j], prompts[i]) for i, j in zip(keep, picks)]
        return self.distill(pixels[keep].to(self.device), swapped, None, self.SELF_COND_P, gen)

    def distill(self, x0: torch.Tensor, prompts: list[str], source: torch.Tensor | None, self_cond_p: float,
                gen: torch.Generator) -> torch.Tensor:
        """Velocity error of the LoRA-carrying model against the base model (LoRA off) on x0 [B,3,H,W] noised as
        in training, for `prompts` and the optional edit/inpaint source [B,4,H,W]. On a self-conditioned model a
        share `self_cond_p` of the calls give both passes the base model's first prediction as x0_prev."""
        from webui.builtin.objective import velocity_loss

        x_t, t, _ = self.noised(x0, gen)  # [B,3,H,W], [B]
        text, mask = self.encode_text(prompts)
        prev = None
        with torch.no_grad(), adapters_disabled(self.denoiser):
            base = self.denoiser(x_t, t, text, mask, source)  # [B,3,H,W]
            if self.self_conditioned and float(torch.rand(1, generator=gen)) < self_cond_p:
                # as the sampler runs it after the first step: reading a previous prediction
                prev = base
                base = self.denoiser(x_t, t, text, mask, source, prev)  # [B,3,H,W]
        x0_hat = self.denoiser(x_t, t, text, mask, source, prev)  # [B,3,H,W]
        return velocity_loss(x0_hat, base, t)


class StableDiffusionObjective(Objective):
    """SD 1.x/2.x and SDXL: epsilon or v-prediction (from the scheduler config) at uniform DDPM timesteps."""

    denoiser_name = "unet"

    def __init__(self, pipe: Any, device: torch.device) -> None:
        super().__init__(pipe, device)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction = self.noise_scheduler.config.prediction_type
        self.xl = hasattr(pipe, "text_encoder_2")

    def loss(self, pixels: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        latents = self.encode_latents(pixels, gen)  # [B,4,h,w]
        B = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen).to(self.device)  # [B,4,h,w]
        steps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (B,), generator=gen)
        steps = steps.to(self.device)  # [B]
        noisy = self.noise_scheduler.add_noise(latents, noise, steps)  # [B,4,h,w]
        if self.prediction == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, steps)
        elif self.prediction == "sample":
            target = latents
        else:
            target = noise
        with torch.no_grad():
            encoded = self.pipe.encode_prompt(prompt=prompts, device=self.device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
        extra: dict[str, Any] = {}
        if self.xl:
            embeds, pooled = encoded[0], encoded[2]  # [B,L,D], [B,Dp]
            H, W = pixels.shape[-2:]
            time_ids = torch.tensor([[H, W, 0, 0, H, W]], dtype=embeds.dtype, device=self.device).repeat(B, 1)
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        else:
            embeds = encoded[0]  # [B,L,D]
        pred = self.denoiser(noisy, steps, embeds, **extra).sample  # [B,4,h,w]
        return F.mse_loss(pred.float(), target.float())


class SD3Objective(Objective):
    def loss(self, pixels: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        x0 = self.encode_latents(pixels, gen)  # [B,16,h,w]
        B = x0.shape[0]
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        sigma = self.flow_sigmas(B, gen).to(self.device)  # [B]
        s = sigma[:, None, None, None]
        noisy = (1.0 - s) * x0 + s * noise  # [B,16,h,w]
        with torch.no_grad():
            embeds, _, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                                           device=self.device, do_classifier_free_guidance=False)
        pred = self.denoiser(hidden_states=noisy, timestep=sigma * 1000.0, encoder_hidden_states=embeds,
                             pooled_projections=pooled).sample  # [B,16,h,w]
        return F.mse_loss(pred.float(), noise - x0)


class FluxObjective(Objective):
    def loss(self, pixels: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        x0 = self.encode_latents(pixels, gen)  # [B,C,h,w]
        B, C, h, w = x0.shape
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        sigma = self.flow_sigmas(B, gen).to(self.device)  # [B]
        s = sigma[:, None, None, None]
        noisy = (1.0 - s) * x0 + s * noise  # [B,C,h,w]
        pack = self.pipe._pack_latents
        with torch.no_grad():
            embeds, pooled, text_ids = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device)
        image_ids = self.pipe._prepare_latent_image_ids(B, h // 2, w // 2, self.device, x0.dtype)
        guidance = torch.ones(B, device=self.device) if self.denoiser.config.guidance_embeds else None
        pred = self.denoiser(hidden_states=pack(noisy, B, C, h, w), timestep=sigma, guidance=guidance,
                             pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                             img_ids=image_ids).sample  # [B,h/2*w/2,C*4]
        return F.mse_loss(pred.float(), pack(noise - x0, B, C, h, w))


class ZImageObjective(Objective):
    def loss(self, pixels: torch.Tensor, prompts: list[str], gen: torch.Generator) -> torch.Tensor:
        x0 = self.encode_latents(pixels, gen)  # [B,C,h,w]
        B = x0.shape[0]
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        sigma = self.flow_sigmas(B, gen).to(self.device)  # [B]
        s = sigma[:, None, None, None]
        noisy = (1.0 - s) * x0 + s * noise  # [B,C,h,w]
        with torch.no_grad():
            embeds, _ = self.pipe.encode_prompt(prompt=prompts, device=self.device, do_classifier_free_guidance=False)
        frames = list(noisy.unsqueeze(2).unbind(0))  # B x [C,1,h,w]
        out = self.denoiser(frames, 1.0 - sigma, embeds, return_dict=False)[0]  # B x [C,1,h,w]
        pred = -torch.stack([o.float() for o in out]).squeeze(2)  # [B,C,h,w]; the model predicts x0 - noise
        return F.mse_loss(pred, noise - x0)


OBJECTIVES: dict[str, type[Objective]] = {
    "easel": EaselObjective, "sd": StableDiffusionObjective, "sdxl": StableDiffusionObjective,
    "sd3": SD3Objective, "flux": FluxObjective, "zimage": ZImageObjective,
}


# ============================================================================================ LoRA weights
ADAPTER = "default"


def add_lora(denoiser: torch.nn.Module, config: TrainConfig, family: str) -> list[torch.nn.Parameter]:
    """Inject a PEFT LoRA adapter; only its weights train. Returns them."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(config.target_modules) if config.target_modules else DEFAULT_TARGETS[family]
    denoiser.requires_grad_(False)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=targets, lora_dropout=0.0,
                      init_lora_weights=True)
    try:
        inject_adapter_in_model(lora, denoiser, adapter_name=ADAPTER)
    except ValueError as exc:
        raise ConfigError("target_modules", f"no layer of the model matches {targets}: {exc}") from exc
    params = []
    for name, p in denoiser.named_parameters():
        if ".lora_" in name:
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise ConfigError("target_modules", f"no layer of the model matches {targets}")
    return params


def lora_state(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights, keys `<module>.lora_A.weight` / `.lora_B.weight` (no adapter name)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(denoiser, adapter_name=ADAPTER)
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def bundled_state(words: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Learned word vectors under AUTOMATIC1111's key for an embedding bundled in a LoRA."""
    from webui.builtin.lora import bundle_key

    return {bundle_key(word): v.detach().to("cpu", torch.float32).contiguous() for word, v in words.items()}


def load_lora_state(denoiser: torch.nn.Module, state: dict[str, torch.Tensor],
                    words: dict[str, torch.nn.Parameter] | None = None) -> None:
    from peft.utils import set_peft_model_state_dict

    from webui.builtin.lora import bundle_key

    for word, vector in (words or {}).items():
        saved = state.get(bundle_key(word))
        if saved is None or saved.shape != vector.shape:
            raise ConfigError("output_name", f"the resume state has no learned vector for {word!r}; delete the "
                                             ".state.pt file or choose another output_name")
        with torch.no_grad():
            vector.copy_(saved.to(vector.device))
    state = {k: v for k, v in state.items() if not k.startswith("bundle_emb.")}
    result = set_peft_model_state_dict(denoiser, state, adapter_name=ADAPTER)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if "lora_" in k]
    if unexpected:
        raise ConfigError("output_name", f"the resume state does not fit this model ({unexpected[0]} ...); "
                                         "delete the .state.pt file or choose another output_name")


def write_lora(path: Path, pipe: Any, family: str, denoiser_name: str, state: dict[str, torch.Tensor],
               metadata: dict[str, str], config: TrainConfig) -> Path:
    """Write the LoRA file atomically (see the module docstring for the layouts)."""
    from safetensors.torch import load_file, save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if family == "easel":
        tensors = {k if k.startswith("bundle_emb.") else f"transformer.{k}": v for k, v in state.items()}
    else:
        scale = config.alpha / config.rank  # folded: the file then needs no alpha (diffusers/ComfyUI use 1.0)
        scaled = {k: (v * scale if ".lora_B." in k else v) for k, v in state.items()}
        with tempfile.TemporaryDirectory(dir=path.parent) as folder:
            type(pipe).save_lora_weights(folder, **{f"{denoiser_name}_lora_layers": scaled},
                                         weight_name="lora.safetensors", safe_serialization=True)
            tensors = load_file(str(Path(folder) / "lora.safetensors"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # safetensors creates the file readable by its owner only
    os.replace(tmp, path)
    return path


def lora_metadata(config: TrainConfig, family: str, base: Path, short_hash: str, step: int, n_images: int
                  ) -> dict[str, str]:
    """Header metadata (all strings): kohya's ss_* keys that AUTOMATIC1111 shows, modelspec, and Easel's own."""
    version, architecture = BASE_VERSION[family]
    meta = {
        "ss_network_dim": str(config.rank), "ss_network_alpha": f"{config.alpha:g}", "ss_steps": str(step),
        "ss_num_train_images": str(n_images), "ss_base_model_version": version, "ss_output_name": config.output_name,
        "ss_learning_rate": f"{config.learning_rate:g}", "ss_seed": str(config.seed),
        "ss_resolution": ",".join(f"{w}x{h}" for w, h in config.resolution),
        "ss_sd_model_name": base.name, "ss_sd_model_hash": short_hash,
        "modelspec.architecture": architecture, "modelspec.title": config.output_name,
        "easel_trigger": config.trigger,
    }
    if config.trigger:
        meta["modelspec.trigger_phrase"] = config.trigger
    if family == "easel":
        meta.update(easel_base_model=base.name, easel_base_hash=short_hash)
    else:
        meta["easel_alpha_folded"] = "true"
    return meta


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a .safetensors file's header."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


# ============================================================================================ optimizers
def make_optimizer(config: TrainConfig, params: list[torch.nn.Parameter] | list[dict[str, Any]]
                   ) -> torch.optim.Optimizer:
    """The optimizer over `params` (or param groups; a group's "lr_scale" multiplies the schedule's rate)."""
    if config.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.learning_rate, betas=(0.9, 0.99), weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over the first 5% of the steps, then constant."""
    warmup = max(1, int(config.steps * WARMUP_FRACTION))
    return config.learning_rate * min(1.0, (step + 1) / warmup)


def step_generator(config: TrainConfig, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + step)


# ============================================================================================ the loop
RESUME_KEYS = ("base_model", "rank", "alpha", "target_modules", "optimizer", "trigger_embedding")


@dataclass
class _Run:
    """Mutable state of one run (what the resume state holds)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    samples: list[Path] = field(default_factory=list)


def claim_output(config: TrainConfig, replace: bool = False) -> tuple[TrainConfig, str]:
    """The config with the output name this run may write (webui/training/folders.py: its own file, or
    `<name>-1`, ... beside someone else's), and a note when the name changed."""
    name, note = claim_output_name(config.output_dir, config.output_name, replace)
    return (config if name == config.output_name else replace_fields(config, output_name=name)), note


def train(config: TrainConfig, *, on_event: Callable[[TrainEvent], None] | None = None,
          cancel: threading.Event | None = None, search_dirs: list[Path] | None = None,
          resume: bool = True, set_threads: bool = True, replace: bool = False) -> TrainResult:
    """Train the LoRA `config` describes (see the module docstring); returns where it was written.

    The base model is looked up by name in `search_dirs` (default: the current folder's model folders) only.
    An existing `<output_name>.safetensors` without its resume state is kept and the run saves under the next
    free name, unless `replace` (the command line's --replace). `set_threads` applies `config.threads` to
    torch's (process-wide) thread pool: right for the CLI; the app passes False so generation keeps its own
    setting."""
    emit = on_event or (lambda event: None)
    cancel = cancel or threading.Event()

    # 1. check inputs: the base model, the output name, the dataset, before anything heavy
    search = search_dirs or default_search_dirs()
    base = resolve_base_model(config.base_model, search)
    config, renamed = claim_output(config, replace)
    dataset = load_dataset(config.dataset, config.resolution, config.trigger)
    if set_threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)

    # 2. prepare: the model with its adapter, the optimizer, and the saved state to resume from
    pipe, family = load_base(base, search)
    pipe.to(device)
    objective = OBJECTIVES[family](pipe, device)
    for key in ("prior_preservation", "differential_preservation", "trigger_embedding"):
        if getattr(config, key) and not objective.has_preservation:
            raise ConfigError(key, f"is only available for the built-in model (easel); {base.name} is a {family} "
                                   f"model: set it to {'false' if key == 'trigger_embedding' else 0}")
    denoiser = objective.denoiser
    torch.manual_seed(config.seed)  # lora_A's random initialisation
    params = add_lora(denoiser, config, family)
    groups: list[dict[str, Any]] = [{"params": list(params)}]
    if config.trigger_embedding:
        vector = objective.learn_trigger(config.trigger.lower())
        params.append(vector)
        rate = config.trigger_embedding_lr or config.learning_rate
        groups.append({"params": [vector], "lr_scale": rate / config.learning_rate})
    optimizer = make_optimizer(config, groups)
    run = _Run()
    if resume and config.state_path.is_file():
        run = _restore(config, denoiser, optimizer, objective.words)
        for group, wanted in zip(optimizer.param_groups, groups):  # the config's rates, not the saved run's
            group["lr_scale"] = wanted.get("lr_scale", 1.0)
        log.info("resuming %s at step %d", config.output_name, run.step)
    short_hash = base_hash(base)
    n_trainable = sum(p.numel() for p in params)
    message = f"{family} base {base.name} [{short_hash}], {len(dataset)} images, {n_trainable:,} LoRA parameters"
    if objective.words:
        message += f" (a learned vector for {config.trigger!r} included)"
    if renamed:
        message = f"{renamed}; {message}"
    emit(TrainEvent("start", run.step, config.steps, message=message + (f"; resuming at step {run.step}"
                                                                        if run.step else "")))

    def save(kind: str) -> Path:
        if not replace and output_owner(config.output_dir, config.output_name) == "taken":  # appeared meanwhile
            raise TrainingError(f"{config.output_path} appeared while training and is not this run's; it was kept "
                                "(start again to save under the next free name)")
        state = lora_state(denoiser)
        state.update(bundled_state(objective.words))
        meta = lora_metadata(config, family, base, short_hash, run.step, len(dataset))
        path = write_lora(config.output_path, pipe, family, objective.denoiser_name, state, meta, config)
        _save_state(config, state, optimizer, run)
        emit(TrainEvent(kind, run.step, config.steps, run.losses[-1] if run.losses else None, run.wall_s, path=path))
        return path

    # 3. run: one optimizer step per loop, cancel checked before each
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    wall0, cpu0 = time.monotonic(), time.process_time()
    base_wall, base_cpu = run.wall_s, run.cpu_s
    cancelled = False
    denoiser.train()
    while run.step < config.steps:
        if cancel.is_set():
            cancelled = True
            break
        gen = step_generator(config, run.step)
        prompts, pixels = dataset.batch(gen, config.batch_size)
        drop = torch.rand(len(prompts), generator=gen) < config.caption_dropout
        prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, run.step) * group.get("lr_scale", 1.0)
        with autocast:
            loss = objective.loss(pixels, prompts, gen)
            if config.differential_preservation > 0:
                loss = loss + config.differential_preservation * objective.differential_loss(
                    pixels, prompts, config.trigger, config.preservation_words, gen)
            if config.prior_preservation > 0:
                loss = loss + config.prior_preservation * objective.preservation_loss(
                    config.preservation_batch_size or config.batch_size, gen)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} at step {run.step + 1}; lower learning_rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        run.step += 1
        run.losses.append(value)
        run.wall_s = base_wall + time.monotonic() - wall0
        run.cpu_s = base_cpu + time.process_time() - cpu0
        emit(TrainEvent("step", run.step, config.steps, value, run.wall_s))
        if config.sample_every and config.sample_prompts and run.step % config.sample_every == 0 \
                and run.step < config.steps:
            _samples(config, objective, run, emit)
        if config.save_every and run.step % config.save_every == 0 and run.step < config.steps:
            save("save")

    # 4. finish: save (also when cancelled, so a resume continues from here), final samples
    if run.step == 0 and not run.losses:
        emit(TrainEvent("cancelled", 0, config.steps, message="cancelled before the first step"))
        return TrainResult(config.output_path, 0, True, (), 0.0, 0.0)
    if not cancelled and config.sample_prompts:
        _samples(config, objective, run, emit)
    path = save("cancelled" if cancelled else "done")
    denoiser.eval()
    return TrainResult(path, run.step, cancelled, tuple(run.losses), run.wall_s, run.cpu_s, tuple(run.samples))


def _samples(config: TrainConfig, objective: Objective, run: _Run, emit: Callable[[TrainEvent], None]) -> None:
    """Render the sample prompts with the LoRA as it is now; PNGs under `<output_name>.samples/`."""
    prompts = [config.caption(p) for p in config.sample_prompts]
    objective.denoiser.eval()
    try:
        with torch.no_grad():
            images = objective.sample(prompts, config.resolution[0], config.sample_steps, config.sample_guidance,
                                      config.seed + SAMPLE_SEED_OFFSET)
    finally:
        objective.denoiser.train()
    config.samples_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = config.samples_dir / f"step{run.step:06d}_{i}.png"
        image.save(path)
        paths.append(path)
    run.samples.extend(paths)
    emit(TrainEvent("sample", run.step, config.steps, run.losses[-1] if run.losses else None, run.wall_s,
                    samples=tuple(paths), message=" | ".join(prompts)))


def _save_state(config: TrainConfig, state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                run: _Run) -> None:
    payload = {"version": STATE_VERSION, "lora": state, "optimizer": optimizer.state_dict(), "step": run.step,
               "losses": run.losses, "wall_s": run.wall_s, "cpu_s": run.cpu_s,
               "samples": [str(p) for p in run.samples],
               "config": {k: config.to_dict()[k] for k in RESUME_KEYS}}
    tmp = config.state_path.with_name(f".{config.state_path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, config.state_path)


def _restore(config: TrainConfig, denoiser: torch.nn.Module, optimizer: torch.optim.Optimizer,
             words: dict[str, torch.nn.Parameter] | None = None) -> _Run:
    try:  # the weights-only unpickler rebuilds tensors and plain data only: a state file cannot run code
        payload = torch.load(config.state_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # an object it may not rebuild, or not a PyTorch file at all
        raise ConfigError("output_name", f"the resume state {config.state_path} was refused: it holds more than the "
                                         "tensors and plain data this trainer writes, and loading other objects "
                                         "could run code; delete it to start over") from None
    except Exception as exc:  # torch.load raises many types for a damaged file
        raise ConfigError("output_name", f"cannot read the resume state {config.state_path} ({exc}); delete it "
                                         "to start over") from exc
    saved = payload.get("config", {})
    wanted = {k: config.to_dict()[k] for k in RESUME_KEYS}
    changed = [k for k in RESUME_KEYS if saved.get(k, FIELDS[k].default) != wanted[k]]
    if changed:
        raise ConfigError("output_name", f"{config.state_path} is from a run with different {', '.join(changed)}; "
                                         "delete it or choose another output_name")
    load_lora_state(denoiser, payload["lora"], words)
    optimizer.load_state_dict(payload["optimizer"])
    return _Run(step=int(payload["step"]), losses=list(payload["losses"]), wall_s=float(payload["wall_s"]),
                cpu_s=float(payload["cpu_s"]), samples=[Path(p) for p in payload.get("samples", [])])
