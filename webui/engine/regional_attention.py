"""Regional prompts on SD 1.x, SD 2.x and SDXL by attention coupling.

Each region's prompt is encoded on its own (the pipeline's CLIP encoders, emphasis and BREAK as for any prompt).
While a pipeline call runs, every cross-attention layer of the UNet (`attn2` of each transformer block) gets a
`CoupledAttnProcessor` wrapping the layer's own processor: the layer attends to the base prompt as usual (the
request's prompt, and the negative prompt's rows untouched), then the prompted rows attend once more to each
region's prompt, and the outputs are mixed per token with the weights of `webui.builtin.regional.blend_weights`
at the layer's token grid — the base prompt with the base weight everywhere, each region's prompt with its weight
inside its rectangle or painted mask, normalised to sum 1 (outside every region the base prompt alone). Classifier-
free guidance then works as always: the negative prompt's prediction is the plain one. SDXL's pooled text (its
added time embedding) stays the base prompt's. The layers' own processors and the UNet's hook are put back when
the call ends, whatever happens, so the next request runs the plain model.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from webui.builtin.regional import Region, blend_weights
from webui.engine.hypernetworks import cross_attentions
from webui.engine.prompts import encode_text, extract_loras


class Coupling:
    """What the coupled processors of one pipeline call share: the region prompts' states, the latent size the
    UNet is running at (set by a forward pre-hook) and the mixing weights per token grid."""

    def __init__(self, pipe: Any, regions: list[Region], base_weight: float, contexts: list[torch.Tensor]) -> None:
        self.pipe = pipe
        self.regions = regions
        self.base_weight = base_weight
        self.contexts = contexts  # per region: [1,T_r,D]
        self.latent_hw: tuple[int, int] | None = None
        self._weights: dict[tuple, torch.Tensor] = {}
        self._contexts: dict[tuple, list[torch.Tensor]] = {}

    def guided(self) -> bool:
        """Whether the running batch holds the negative prompt's rows first (classifier-free guidance)."""
        return bool(getattr(self.pipe, "do_classifier_free_guidance", False))

    def grid(self, tokens: int) -> tuple[int, int]:
        """The (h, w) token grid of a layer with `tokens` tokens: the latent halved (rounding up) until it fits."""
        if self.latent_hw is None:
            raise RuntimeError("regional prompts: the UNet ran without its latent size being seen")
        h, w = self.latent_hw
        while h * w > tokens:
            h, w = (h + 1) // 2, (w + 1) // 2
        if h * w != tokens:
            raise RuntimeError(f"regional prompts: {tokens} tokens are no grid of the {self.latent_hw} latent")
        return h, w

    def weights(self, tokens: int, like: torch.Tensor) -> torch.Tensor:
        """Per-token weights [1+R,1,N,1] of the base prompt and each region (summing to 1 at each token)."""
        key = (tokens, like.device, like.dtype)
        if key not in self._weights:
            h, w = self.grid(tokens)
            stacked = blend_weights(self.regions, self.base_weight, h, w)  # [1+R,1,h,w]
            self._weights[key] = stacked.reshape(len(self.regions) + 1, 1, h * w, 1).to(like.device, like.dtype)
        return self._weights[key]

    def region_contexts(self, like: torch.Tensor) -> list[torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._contexts:
            self._contexts[key] = [c.to(like.device, like.dtype) for c in self.contexts]
        return self._contexts[key]

    def see_latents(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        """The UNet's forward pre-hook: remember the latent's (h, w) for this step's token grids."""
        sample = args[0] if args else kwargs.get("sample")
        if isinstance(sample, torch.Tensor) and sample.ndim == 4:
            self.latent_hw = (int(sample.shape[-2]), int(sample.shape[-1]))


class CoupledAttnProcessor:
    """A cross-attention layer's own processor, run once for the base prompt and once per region prompt on the
    prompted rows, the outputs mixed by the regions' weights at this layer's token grid."""

    def __init__(self, inner: Any, coupling: Coupling) -> None:
        self.inner = inner
        self.coupling = coupling

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                         attention_mask=attention_mask, temb=temb, **kwargs)
        if encoder_hidden_states is None or hidden_states.ndim != 3:  # self-attention, or a 4-D layout
            return out
        rows, tokens = hidden_states.shape[0], hidden_states.shape[1]  # hidden_states: [rows,N,C]
        first = rows // 2 if self.coupling.guided() else 0  # negative rows first, untouched
        prompted = hidden_states[first:]  # [B,N,C]
        weights = self.coupling.weights(tokens, out)  # [1+R,1,N,1]
        mixed = out[first:] * weights[0]  # [B,N,C]
        image_part = None
        if isinstance(encoder_hidden_states, tuple):  # IP-Adapter: (text states, image states per adapter)
            image_part = [part[first:] for part in encoder_hidden_states[1]]
        for index, context in enumerate(self.coupling.region_contexts(out)):
            weight = weights[index + 1]  # [1,N,1]
            if not bool(weight.any()):
                continue  # weight 0 (or outside the picture): nothing to add
            text = context.expand(prompted.shape[0], -1, -1)  # [B,T_r,D]
            states = text if image_part is None else (text, image_part)
            region_temb = temb[first:] if isinstance(temb, torch.Tensor) else temb
            region_out = self.inner(attn, prompted, encoder_hidden_states=states, attention_mask=None,
                                    temb=region_temb, **kwargs)  # [B,N,C]
            mixed = mixed + region_out * weight
        return torch.cat([out[:first], mixed]) if first else mixed


def encode_regions(pipe: Any, regions: list[Region], clip_skip: int, xl: bool) -> list[torch.Tensor]:
    """Each region prompt's CLIP states [1,T_r,D] (LoRA tags removed: LoRAs come from the main prompt)."""
    with torch.no_grad():
        return [encode_text(pipe, extract_loras(region.prompt)[0], clip_skip, xl).states for region in regions]


@contextmanager
def regions_coupled(pipe: Any, regions: list[Region], base_weight: float, clip_skip: int, xl: bool
                    ) -> Iterator[Coupling]:
    """Run `pipe`'s UNet with its cross-attention coupled to the regions; its own processors are put back after."""
    unet = pipe.unet
    contexts = encode_regions(pipe, regions, clip_skip, xl)
    width = int(getattr(unet.config, "cross_attention_dim", 0) or 0)
    if contexts and width and contexts[0].shape[-1] != width:
        raise RuntimeError(f"regional prompts: the text states are {contexts[0].shape[-1]} wide; the UNet takes "
                           f"{width}")
    coupling = Coupling(pipe, regions, base_weight, contexts)
    layers = cross_attentions(unet)
    saved = [layer.processor for layer in layers]
    hook = unet.register_forward_pre_hook(coupling.see_latents, with_kwargs=True)
    try:
        for layer, own in zip(layers, saved):
            layer.set_processor(CoupledAttnProcessor(own, coupling))
        yield coupling
    finally:
        hook.remove()
        for layer, own in zip(layers, saved):
            layer.set_processor(own)


__all__ = ["Coupling", "CoupledAttnProcessor", "encode_regions", "regions_coupled"]
