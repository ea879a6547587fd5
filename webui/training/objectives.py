"""Training objectives, one per model architecture: how a LoRA's loss is computed on a base model.

`OBJECTIVES` maps the architecture the model catalogue identified (`Arch`) to the `Objective` that trains it:
  - the built-in model (pixel space, x0 prediction): the flow-matching velocity loss of webui/builtin/objective.py,
    with self-conditioning, prior preservation and differential preservation, and a learnable trigger vector;
  - SD 1.x / 2.x / SDXL: noise (epsilon) or v-prediction, as the scheduler's config says, on VAE latents;
  - SD3, Flux.1, Z-Image: rectified flow (velocity noise - x0) on VAE latents, logit-normal noise levels.
`objective_for(entry)` picks the one for a catalogue entry, or raises a ConfigError naming `base_model` and
listing the supported architectures. Each objective also names its denoiser (the module the LoRA goes on), the
layers a LoRA targets by default, and the pipeline classes it can train (text-to-image ones).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from webui.model_manager.identify import ARCH_LABELS, Arch
from webui.training.config import ConfigError, trigger_pattern

if TYPE_CHECKING:
    from webui.model_manager.catalogue import CheckpointEntry

ADAPTER = "default"  # the name of the trainer's PEFT adapter
ATTENTION_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
UNTRAINABLE_VARIANTS = {"inpaint": "an inpainting model", "edit": "an image-editing model"}


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
    """How one architecture turns (pixels, captions) into a training loss and renders samples."""

    denoiser_name = "transformer"  # the pipeline's module the LoRA goes on
    default_targets: str | tuple[str, ...] = ATTENTION_TARGETS  # PEFT target_modules when the config names none
    pipelines: tuple[str, ...] = ()  # the pipeline classes it trains

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

    def metadata_variant(self, variant: str) -> str:
        """The variant the LoRA's metadata names (webui.model_manager.lora_writer), from the catalogue's."""
        return variant

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

    default_targets = r".*blocks\.\d+\.(qkv|proj|mlp\.0|mlp\.2)"
    pipelines = ("EaselPipeline",)
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
    pipelines = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")

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

    def metadata_variant(self, variant: str) -> str:
        return "v_prediction" if self.prediction == "v_prediction" else variant


class SD3Objective(Objective):
    pipelines = ("StableDiffusion3Pipeline",)

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
    pipelines = ("FluxPipeline",)

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
    pipelines = ("ZImagePipeline",)

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


OBJECTIVES: dict[Arch, type[Objective]] = {
    Arch.EASEL: EaselObjective, Arch.SD1: StableDiffusionObjective, Arch.SD2: StableDiffusionObjective,
    Arch.SDXL: StableDiffusionObjective, Arch.SD3: SD3Objective, Arch.FLUX: FluxObjective, Arch.ZIMAGE: ZImageObjective,
}


def supported_architectures() -> str:
    """The architectures LoRA training supports, as people name them."""
    return ", ".join(ARCH_LABELS[arch] for arch in OBJECTIVES)


def objective_class(arch: Arch, variant: str, base_model: str) -> type[Objective]:
    """The objective for a base model of this architecture and variant; ConfigError naming `base_model` when
    there is none (another architecture, an inpainting or editing model)."""
    cls = OBJECTIVES.get(arch)
    if cls is None:
        label = ARCH_LABELS.get(arch, arch.value)
        article = "an" if label[:1].lower() in "aeiou" else "a"
        raise ConfigError("base_model", f"{base_model} is {article} {label} model; LoRA training supports "
                                        f"{supported_architectures()}")
    if variant in UNTRAINABLE_VARIANTS:
        raise ConfigError("base_model", f"{base_model} is {UNTRAINABLE_VARIANTS[variant]} "
                                        f"({ARCH_LABELS[arch]}); LoRA training needs a text-to-image model")
    return cls


def check_pipeline(cls: type[Objective], class_name: str, base_model: str) -> None:
    """ConfigError naming `base_model` when it is (or loads as) a pipeline class the objective cannot train."""
    if class_name not in cls.pipelines:
        raise ConfigError("base_model", f"{base_model} is a {class_name or 'unknown'} pipeline; LoRA training of "
                                        f"this architecture needs {' or '.join(cls.pipelines)}")


def objective_for(entry: "CheckpointEntry") -> type[Objective]:
    """The objective for a base model the catalogue listed (its Arch and variant; for a diffusers folder, also the
    pipeline class its model_index.json names, checked before anything is loaded)."""
    cls = objective_class(entry.arch, entry.variant, entry.name)
    if entry.kind == "folder":
        try:
            index = json.loads((entry.path / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}
        check_pipeline(cls, str(index.get("_class_name", "")) if isinstance(index, dict) else "", entry.name)
    return cls
