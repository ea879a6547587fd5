"""Reference units (`reference_only`, `reference_adain`, `reference_adain+attn`): steer an SD 1.x/2.x or SDXL UNet
with a reference image, no ControlNet model needed.

Before each UNet call of the generation, the reference image's latents, noised to the same timestep (the UNet's
input form: sqrt(a_t) x0 + sqrt(1 - a_t) noise, with a fixed noise), go through the same UNet once in "write"
mode; then the real call runs in "read" mode:

- attention (`reference_only`): every self-attention (`attn1`) stores the reference's hidden states while writing;
  while reading, its keys and values are taken from [own hidden states, the reference's], so the picture attends
  to the reference. Easel's own attention processor does this, set with `set_attn_processor` for the call and
  restored afterwards;
- AdaIN (`reference_adain`): every ResNet block of the UNet stores the per-channel mean and standard deviation of
  the reference's features while writing; while reading, its output is renormalised to them (forward hooks).

Both are blended by the unit's weight (out = plain + weight * (referenced - plain)) and by style fidelity (threshold
A, 0..1): under classifier-free guidance the unconditional half gets `fidelity * plain + (1 - fidelity) *
referenced`, the conditional half the referenced output, so high fidelity keeps more of the reference's style.
A weight of 0 leaves the UNet untouched, so the image is exactly the plain one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F

NOISE_SEED = 0  # the reference's noise is fixed, so the same request gives the same image
ADAIN_EPS = 1e-6


@dataclass
class ReferenceState:
    """One reference unit while a generation runs."""

    latents: torch.Tensor  # [1, C, h, w] the reference's clean latents (scaled like the UNet's)
    noise: torch.Tensor  # [1, C, h, w]
    alphas_cumprod: torch.Tensor  # [T] the scheduler's training schedule
    weight: float
    fidelity: float
    attention: bool
    adain: bool
    mode: str = "off"  # "write" while the reference passes through the UNet, "read" during the real call
    guided: bool = False  # the batch is [unconditional, conditional] halves (classifier-free guidance)
    bank: dict[str, torch.Tensor] = field(default_factory=dict)  # attention: name -> [B, N, C]
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # adain: name -> mean, std

    def blend(self, plain: torch.Tensor, referenced: torch.Tensor) -> torch.Tensor:
        """plain + weight * (mixed - plain), the unconditional half of `mixed` pulled towards plain by fidelity."""
        mixed = referenced
        if self.guided and self.fidelity > 0.0 and plain.shape[0] % 2 == 0:
            half = plain.shape[0] // 2
            uncond = self.fidelity * plain[:half] + (1.0 - self.fidelity) * referenced[:half]
            mixed = torch.cat([uncond, referenced[half:]])
        return plain + self.weight * (mixed - plain)

    def noised(self, timestep: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The reference latents at `timestep`, in the form the UNet takes, repeated to `batch`: [batch, C, h, w]."""
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        index = min(max(int(round(t)), 0), self.alphas_cumprod.shape[0] - 1)
        alpha = self.alphas_cumprod[index].to(torch.float32)
        x0, noise = self.latents.to(like.device, torch.float32), self.noise.to(like.device, torch.float32)
        sample = alpha.sqrt() * x0 + (1.0 - alpha).sqrt() * noise  # [1, C, h, w]
        return sample.to(like.dtype).expand(batch, -1, -1, -1)


def attend(attn: Any, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """diffusers `Attention` of queries from `hidden` [B, N, C] over keys/values from `context` [B, M, C]."""
    batch = hidden.shape[0]
    query, key, value = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)  # [B, N|M, inner]
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # [B, H, N, d]
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # [B, H, M, d]
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # [B, H, M, d]
    if getattr(attn, "norm_q", None) is not None:
        query, key = attn.norm_q(query), attn.norm_k(key)
    out = F.scaled_dot_product_attention(query, key, value)  # [B, H, N, d]
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)  # [B, N, inner]
    out = attn.to_out[1](attn.to_out[0](out))  # [B, N, C]
    return out


class ReferenceAttnProcessor:
    """Self-attention that stores (write) or also attends to (read) the reference's hidden states."""

    def __init__(self, name: str, state: ReferenceState) -> None:
        self.name = name
        self.state = state

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        shape = hidden_states.shape
        if hidden_states.ndim == 4:  # [B, C, H, W] -> [B, HW, C]
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        state = self.state
        if state.mode == "write":
            state.bank[self.name] = hidden_states.detach()
        plain = attend(attn, hidden_states, hidden_states)  # [B, N, C]
        reference = state.bank.get(self.name) if state.mode == "read" else None
        if reference is not None and reference.shape[0] == hidden_states.shape[0]:
            referenced = attend(attn, hidden_states, torch.cat([hidden_states, reference], dim=1))
            out = state.blend(plain, referenced)
        else:
            out = plain
        if len(shape) == 4:
            out = out.transpose(1, 2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _channel_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation of [B, C, H, W] features: each [B, C, 1, 1]."""
    var, mean = torch.var_mean(features.float(), dim=(2, 3), keepdim=True, correction=0)
    return mean, (var + ADAIN_EPS).sqrt()


def adain_hook(name: str, state: ReferenceState) -> Any:
    """A forward hook for a ResNet block: store the reference's statistics, or renormalise to them."""

    def hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if state.mode == "write":
            state.stats[name] = _channel_stats(output.detach())
            return None
        stats = state.stats.get(name)
        if state.mode != "read" or stats is None or stats[0].shape[0] != output.shape[0]:
            return None
        mean, std = _channel_stats(output)
        ref_mean, ref_std = stats
        renormed = ((output.float() - mean) / std * ref_std + ref_mean).to(output.dtype)  # [B, C, H, W]
        return state.blend(output, renormed)

    return hook


def encode_reference(pipe: Any, image: Any, size: tuple[int, int]) -> torch.Tensor:
    """The reference image (PIL, already the generation size) as the UNet's clean latents: [1, C, h, w]."""
    vae = pipe.vae
    width, height = size
    pixels = pipe.image_processor.preprocess(image, height=height, width=width)  # [1, 3, H, W] in -1..1
    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean  # [1, C, h, w]
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).to(torch.float32)


@contextlib.contextmanager
def reference_hooks(pipe: Any, state: ReferenceState) -> Iterator[None]:
    """The UNet of `pipe` runs the reference pass before each call and reads it in the call, inside the block."""
    unet = pipe.unet
    handles = []
    original = dict(unet.attn_processors)
    try:
        if state.attention:
            processors = {name: (ReferenceAttnProcessor(name, state) if ".attn1." in f".{name}" else processor)
                          for name, processor in original.items()}
            unet.set_attn_processor(processors)
        if state.adain:
            for name, module in unet.named_modules():
                if type(module).__name__ == "ResnetBlock2D":
                    handles.append(module.register_forward_hook(adain_hook(name, state)))

        def before(module: Any, args: tuple, kwargs: dict) -> None:
            if state.mode == "write":  # the reference pass itself
                return None
            sample = args[0] if args else kwargs["sample"]  # [B, C', h, w]
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            channels = state.latents.shape[1]
            reference = state.noised(timestep, sample.shape[0], sample[:, :channels])
            if sample.shape[1] > channels:  # an inpainting UNet: its mask and masked-image channels stay
                reference = torch.cat([reference, sample[:, channels:]], dim=1)
            rest = dict(kwargs)
            for key in ("sample", "timestep", "down_block_additional_residuals", "mid_block_additional_residual",
                        "down_intrinsic_residuals"):
                rest.pop(key, None)
            state.guided = bool(getattr(pipe, "do_classifier_free_guidance", False))
            state.mode = "write"
            try:
                with torch.no_grad():
                    module(reference, timestep, *args[2:], **rest)
            finally:
                state.mode = "read"
            return None

        handles.append(unet.register_forward_pre_hook(before, with_kwargs=True))
        state.mode = "read"
        yield
    finally:
        for handle in handles:
            handle.remove()
        if state.attention:
            unet.set_attn_processor(original)
        state.mode = "off"
        state.bank.clear()
        state.stats.clear()


def make_state(pipe: Any, image: Any, size: tuple[int, int], module: str, weight: float,
               fidelity: float) -> ReferenceState:
    """A reference unit's state for `pipe` (an SD 1.x/2.x or SDXL pipeline)."""
    latents = encode_reference(pipe, image, size)  # [1, C, h, w]
    generator = torch.Generator("cpu").manual_seed(NOISE_SEED)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    alphas = getattr(pipe.scheduler, "alphas_cumprod", None)
    if alphas is None:
        raise ValueError(f"{module} needs a scheduler with a noise schedule (alphas_cumprod); "
                         f"{type(pipe.scheduler).__name__} has none")
    return ReferenceState(latents=latents, noise=noise, alphas_cumprod=torch.as_tensor(alphas).float().cpu(),
                          weight=weight, fidelity=fidelity, attention=module in ("reference_only",
                                                                                 "reference_adain+attn"),
                          adain=module in ("reference_adain", "reference_adain+attn"))
