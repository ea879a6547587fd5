"""A job's prompts as each model family's pipeline takes them, switched step by step where the prompt says so.

`Conditioning` holds the pipeline arguments for the first step (`kwargs`) and, when the prompt or the negative
prompt has prompt editing or alternation (webui/engine/prompt_schedule.py), a switch that the step callback runs
after each step: it hands the pipeline the next step's embeddings through diffusers' `callback_on_step_end`
outputs. `callback(progress)` composes that switch with the job's own progress/interrupt callback.

Which families switch per step:
  - SD 1.x/2.x and SDXL: yes (`prompt_embeds`, and SDXL's pooled `add_text_embeds`), ControlNet pipelines too;
  - Easel's built-in model: yes (its `text` / `text_mask`); a layout is not planned for a prompt that switches;
  - SD3, Flux, Z-Image, Qwen-Image: no; they draw the prompt of the first step throughout.

`PromptCache` (one per job) encodes each distinct prompt text once per set of text encoders, so every batch, the
hires fix pass and each step of a schedule reuse the same tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from webui.engine.prompt_schedule import PromptSchedule, build_schedule
from webui.engine.prompts import Encoded, encode_text, extract_loras, padded, strip_emphasis
from webui.model_manager.embeddings import EMBEDDING_ARCHS, AppliedEmbedding
from webui.model_manager.embeddings import expand as expand_embeddings
from webui.model_manager.identify import Arch

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
Switch = Callable[[Any, tuple[str, str], dict[str, Any]], dict[str, Any]]  # (pipe, prompts, tensors) -> outputs


class PromptCache:
    """Encoded prompts of one job, keyed by text, clip skip and the text encoders that encoded them."""

    def __init__(self) -> None:
        self._clip: dict[tuple, tuple[Encoded, tuple]] = {}
        self._builtin: dict[tuple, tuple[tuple[torch.Tensor, torch.Tensor], Any]] = {}
        self.encodings = 0  # how many prompts were encoded (not taken from the cache)

    def clip(self, pipe: Any, text: str, clip_skip: int, xl: bool) -> Encoded:
        encoders = (pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
        key = (tuple(id(e) for e in encoders), text, clip_skip, xl)
        if key not in self._clip:
            self._clip[key] = (encode_text(pipe, text, clip_skip, xl), encoders)  # encoders kept: ids stay unique
            self.encodings += 1
        return self._clip[key][0]

    def builtin(self, pipe: Any, prompt: str, negative: str, rows: int, guided: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The built-in pipeline's (text [(2)rows,L,dim], mask [(2)rows,L]) for one prompt pair."""
        key = (id(pipe.text_encoder), prompt, negative, rows, guided)
        if key not in self._builtin:
            text, mask = pipe.encode_prompt([prompt] * rows, [negative] * rows, guided)
            self._builtin[key] = ((text.to(pipe.transformer.dtype), mask), pipe.text_encoder)
            self.encodings += 1
        return self._builtin[key][0]


@dataclass
class Conditioning:
    """The prompt arguments of a pipeline call (`kwargs`, those of the first step), the positive and negative
    prompt schedules, and `switch(pipe, (prompt, negative), tensors)` that gives the step callback's outputs
    handing the pipeline another pair of prompts (None: the prompts never change)."""

    kwargs: dict[str, Any]
    positive: PromptSchedule
    negative: PromptSchedule
    switch: Switch | None = None

    def prompts_at(self, index: int) -> tuple[str, str]:
        """(prompt, negative prompt) for the step with 0-based `index`."""
        return self.positive.at(index), self.negative.at(index)

    def callback(self, progress: StepCallback) -> StepCallback:
        """`progress` (the job's step callback) followed, where the prompts change, by the switch to the next
        step's prompts. Make one per pipeline call: it remembers what it last handed over."""
        switch = self.switch
        if switch is None:
            return progress
        handed = [self.prompts_at(0)]

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            outputs = dict(progress(pipe, step, timestep, tensors) or {})
            order = max(1, int(getattr(getattr(pipe, "scheduler", None), "order", 1) or 1))
            wanted = self.prompts_at((step + 1) // order)  # second-order samplers call back twice a step
            if wanted != handed[0]:
                handed[0] = wanted
                outputs.update(switch(pipe, wanted, tensors))
            return outputs

        return on_step_end


def _rows(pipe: Any, tensors: dict[str, Any]) -> tuple[int, torch.device]:
    """Images in the running batch and the device they are on, from the step callback's tensors."""
    latents = tensors.get("latents")
    if latents is not None:
        return int(latents.shape[0]), latents.device
    return 1, pipe._execution_device


def _clip_conditioning(loaded: Any, positive: PromptSchedule, negative: PromptSchedule, clip_skip: int,
                       cache: PromptCache, guidance: float) -> Conditioning:
    pipe, xl = loaded.pipe, loaded.arch == Arch.SDXL

    def embeds(pipe: Any, prompt: str, neg: str) -> tuple[torch.Tensor, torch.Tensor, Encoded, Encoded]:
        pos, ng = cache.clip(pipe, prompt, clip_skip, xl), cache.clip(pipe, neg, clip_skip, xl)
        n = max(pos.chunks, ng.chunks)
        empty = cache.clip(pipe, "", clip_skip, xl) if pos.chunks != ng.chunks else pos
        return padded(pos, empty, n), padded(ng, empty, n), pos, ng

    first_pos, first_neg, pos, neg = embeds(pipe, positive.at(0), negative.at(0))
    kwargs: dict[str, Any] = {"prompt_embeds": first_pos, "negative_prompt_embeds": first_neg,
                              "guidance_scale": guidance}
    if xl and pos.pooled is not None:
        kwargs["pooled_prompt_embeds"], kwargs["negative_pooled_prompt_embeds"] = pos.pooled, neg.pooled
    if not (positive.switches or negative.switches):
        return Conditioning(kwargs, positive, negative)

    def switch(run_pipe: Any, wanted: tuple[str, str], tensors: dict[str, Any]) -> dict[str, Any]:
        states, neg_states, p, n = embeds(pipe, *wanted)
        rows, device = _rows(run_pipe, tensors)
        guided = bool(getattr(run_pipe, "do_classifier_free_guidance", True))
        states, neg_states = states.to(device).repeat(rows, 1, 1), neg_states.to(device).repeat(rows, 1, 1)
        out = {"prompt_embeds": torch.cat([neg_states, states]) if guided else states}  # negative rows first
        if xl and p.pooled is not None:
            pooled, neg_pooled = p.pooled.to(device).repeat(rows, 1), n.pooled.to(device).repeat(rows, 1)
            out["add_text_embeds"] = torch.cat([neg_pooled, pooled]) if guided else pooled
        return out

    return Conditioning(kwargs, positive, negative, switch)


def _builtin_conditioning(loaded: Any, positive: PromptSchedule, negative: PromptSchedule, cache: PromptCache,
                          guidance: float) -> Conditioning:
    kwargs: dict[str, Any] = {"prompt": strip_emphasis(positive.at(0)),
                              "negative_prompt": strip_emphasis(negative.at(0)), "guidance_scale": guidance}
    if not (positive.switches or negative.switches):
        return Conditioning(kwargs, positive, negative)
    kwargs["plan_layout"] = False  # a planned layout places the words of one prompt, not of a schedule

    def switch(run_pipe: Any, wanted: tuple[str, str], tensors: dict[str, Any]) -> dict[str, Any]:
        rows, _ = _rows(run_pipe, tensors)
        text, mask = cache.builtin(run_pipe, strip_emphasis(wanted[0]), strip_emphasis(wanted[1]), rows,
                                   run_pipe.do_classifier_free_guidance)
        return {"text": text, "text_mask": mask}

    return Conditioning(kwargs, positive, negative, switch)


def conditioning(loaded: Any, request: Any, steps: int, cache: PromptCache,
                 embeddings: list[AppliedEmbedding] | None = None, first_pass_steps: int | None = None
                 ) -> Conditioning:
    """The prompt arguments of `request` for `loaded`'s family over a pass of `steps` sampling steps (the steps
    that run; `first_pass_steps` for a hires fix pass, see prompt_schedule.py). `embeddings` (the context's, after
    `load`) turn their names into their tokens for the CLIP families."""
    arch = loaded.arch
    prompt, _ = extract_loras(request.prompt)  # <lora:…> tags choose adapters; they are not text to encode
    negative, _ = extract_loras(request.negative_prompt)
    if embeddings and arch in EMBEDDING_ARCHS:
        prompt, negative = expand_embeddings(prompt, embeddings), expand_embeddings(negative, embeddings)
    positive = build_schedule(prompt, steps, first_pass_steps)
    negatives = build_schedule(negative, steps, first_pass_steps)
    guidance = request.cfg_scale
    if arch in (Arch.SD1, Arch.SD2, Arch.SDXL):
        return _clip_conditioning(loaded, positive, negatives, request.clip_skip, cache, guidance)
    if arch == Arch.EASEL:
        return _builtin_conditioning(loaded, positive, negatives, cache, guidance)
    plain, plain_negative = strip_emphasis(positive.at(0)), strip_emphasis(negatives.at(0))
    if arch == Arch.FLUX:  # the distilled guidance is embedded; a CFG scale above 1 adds true CFG on top
        kwargs = {"prompt": plain, "guidance_scale": request.distilled_cfg_scale}
        if guidance > 1:
            kwargs.update(negative_prompt=plain_negative or " ", true_cfg_scale=guidance)
    elif arch == Arch.QWEN:
        kwargs = {"prompt": plain, "negative_prompt": plain_negative or " ", "true_cfg_scale": guidance}
    else:
        kwargs = {"prompt": plain, "negative_prompt": plain_negative, "guidance_scale": guidance}
    return Conditioning(kwargs, positive, negatives)
