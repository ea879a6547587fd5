"""DiT (class-conditional Diffusion Transformer): the prompt names one ImageNet class, which the model draws.

The class names come from the folder's `id2label` (in `model_index.json`, or the transformer's `config.json`); each
comma-separated synonym is a name ("tench, Tinca tinca" gives two). A prompt matches a name exactly (any case), a
class number ("207"), or the one close name difflib finds; otherwise the request fails on `prompt` listing the
closest names. DiT has no text encoder and therefore no negative prompt: a non-empty one is refused (CFG steers
away from the "no class" embedding instead). It draws one size, its latent size times 8; another asked size is
drawn at that size and resized, and the infotext says so.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from webui.engine.context import Generated, ModeContext, render_size, resized, run_batches
from webui.requests import GenerationRequest, RequestError

MATCH_CUTOFF = 0.85  # difflib ratio at which a single close name is taken as the class asked for
SHOWN_CLOSE = 8


def class_names(pipe: Any, folder: Path | None = None) -> dict[str, int]:
    """Class name (each synonym) -> class id: the pipeline's labels, else the transformer config's id2label."""
    labels = dict(getattr(pipe, "labels", None) or {})
    if labels or folder is None:
        return labels
    try:
        config = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    for key, value in (config.get("id2label") or {}).items():
        for name in str(value).split(","):
            if name.strip():
                labels[name.strip()] = int(key)
    return labels


def match_class(prompt: str, labels: dict[str, int], num_classes: int) -> tuple[int, str]:
    """(class id, the name it matched) for a prompt; RequestError on `prompt` listing close names otherwise."""
    text = " ".join(prompt.split()).strip().rstrip(".")
    if not text:
        raise RequestError("prompt", "DiT draws an ImageNet class: write a class name (e.g. "
                                     f"{', '.join(list(labels)[:3]) or 'a class number'})")
    if text.isdigit():
        if int(text) < num_classes:
            return int(text), next((n for n, i in labels.items() if i == int(text)), f"class {text}")
        raise RequestError("prompt", f"class {text} does not exist: this model has classes 0 to {num_classes - 1}")
    by_lower = {name.lower(): name for name in labels}
    exact = by_lower.get(text.lower())
    if exact is not None:
        return labels[exact], exact
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=SHOWN_CLOSE, cutoff=0.5)
    containing = [n for n in by_lower if text.lower() in n or n in text.lower()]
    best = close[0] if close else None
    if best is not None and difflib.SequenceMatcher(None, text.lower(), best).ratio() >= MATCH_CUTOFF and (
            len(close) == 1 or difflib.SequenceMatcher(None, text.lower(), close[1]).ratio() < MATCH_CUTOFF):
        return labels[by_lower[best]], by_lower[best]
    suggestions = list(dict.fromkeys([*close, *containing]))[:SHOWN_CLOSE]
    hint = (f"close names: {', '.join(by_lower[n] for n in suggestions)}" if suggestions
            else f"{len(labels)} class names, e.g. {', '.join(list(labels)[:5])}")
    raise RequestError("prompt", f"DiT draws one ImageNet class per prompt; {text!r} is not one of its class names "
                                 f"({hint})")


def run(ctx: ModeContext, request: GenerationRequest, mode: str) -> list[Generated]:
    # 1. Check the inputs: txt2img only, no negative prompt, the prompt names a class.
    if mode != "txt2img":
        raise RequestError("checkpoint", f"DiT models draw a class from nothing: use txt2img, not {mode}")
    if request.negative_prompt.strip():
        raise RequestError("negative_prompt", "DiT models have no negative prompt (they are class-conditional, "
                                              "without a text encoder); leave it empty")
    loaded = ctx.load(request, "txt2img")
    pipe = loaded.pipe
    num_classes = int(getattr(pipe.transformer.config, "num_embeds_ada_norm", 1000) or 1000)
    class_id, name = match_class(request.prompt, class_names(pipe, loaded.entry.path), num_classes)

    # 2. Prepare: its one size; the step count for progress (the pipeline reports no steps).
    own = render_size(loaded, request)
    extra: dict[str, Any] = {**ctx.sampling_infotext(request, loaded.arch), "Class": f"{name} ({class_id})"}
    if own:
        extra["Rendered size"] = f"{own[0]}x{own[1]}"

    # 3. Run the batches.
    def call(gens: list[Any], batch_size: int) -> list[Any]:
        ctx.job.update(step=0, total_steps=request.steps)
        out = ctx.call_pipeline(loaded, request, "txt2img", class_labels=[class_id] * batch_size,
                                guidance_scale=request.cfg_scale, generator=gens,
                                num_inference_steps=request.steps, output_type="pil")
        ctx.job.update(step=request.steps)
        return resized(out.images, request.width, request.height)

    return run_batches(ctx, request, loaded, call, extra)
