"""The txt2img tab's Seed walk accordion, shown for StyleGAN generators (models/GAN) only: a GIF that walks through
seeds in latent space. The seeds are listed ("3, 17, 42"; empty: the Seed field's seed and the next one), with the
frames from each seed to the next and the walk's space; the truncation ψ, class and prompt are the tab's own. The
walk runs as one job through the engine queue (Easel.seed_walk) and its GIF is shown below the button."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from webui.requests import RequestError
from webui.ui.bridge import guard, job_failed
from webui.ui.context import UIContext
from webui.ui.controls import ControlSet

SPACES = {"Spherical in z": "z", "Linear in w": "w"}


def is_gan(easel: Any, checkpoint: str | None) -> bool:
    """The checkpoint is a StyleGAN generator: the truncation ψ is among the fields it uses."""
    return "truncation_psi" not in easel.hidden_fields(checkpoint)


def parse_seeds(text: str, seed: Any) -> list[int]:
    """The seeds of "3, 17 42" (any separators); empty text: the Seed field's seed (0 when random) and the next."""
    found = re.findall(r"-?\d+", text or "")
    if not (text or "").strip():
        first = int(seed) if seed is not None and int(seed) >= 0 else 0
        return [first, first + 1]
    if len(found) != len(re.findall(r"\S+", re.sub(r"[,;]", " ", text))):
        raise RequestError("seeds", f"write the seeds as whole numbers separated by commas, e.g. \"3, 17, 42\"; "
                                    f"got {text!r}")
    return [int(s) for s in found]


def build_seed_walk(ui: UIContext, controls: ControlSet) -> None:
    """The accordion, its visibility following the checkpoint, and its button."""
    easel = ui.easel
    with gr.Accordion("Seed walk", open=False, elem_id="txt2img_seed_walk",
                      visible=is_gan(easel, easel.default_checkpoint() or None)) as accordion:
        with gr.Row():
            seeds = gr.Textbox(label="Seeds", placeholder="e.g. 3, 17, 42 (empty: the seed and the next one)",
                               elem_id="txt2img_seed_walk_seeds", scale=3)
            frames = gr.Number(label="Frames per seed", value=24, minimum=1, maximum=240, precision=0,
                               elem_id="txt2img_seed_walk_frames", scale=1)
            space = gr.Radio(list(SPACES), value="Spherical in z", label="Walk", elem_id="txt2img_seed_walk_space",
                             scale=2)
        button = gr.Button("Seed walk", elem_id="txt2img_seed_walk_button")
        output = gr.Image(label="Seed walk", type="filepath", interactive=False, elem_id="txt2img_seed_walk_gif")
        note = gr.Markdown(elem_id="txt2img_seed_walk_info")

    inputs = [ui.checkpoint, controls["seed"], seeds, frames, space, controls["truncation_psi"],
              controls["class_label"], controls["prompt"]]

    @guard
    async def on_walk(checkpoint: str | None, seed: Any, seed_text: str, count: Any, walk: str, psi: Any,
                      label: Any, prompt: str) -> tuple[Any, str]:
        job = easel.seed_walk(checkpoint or "", parse_seeds(seed_text, seed), int(count or 0),
                              truncation_psi=float(psi if psi is not None else 1.0),
                              class_label=int(label if label is not None else -1), prompt=prompt or "",
                              space=SPACES.get(walk, "z"))
        await job.wait_async()
        result = job.result
        if result is None or not result.info.get("gif"):
            raise job_failed(job.error)
        if result.paths:
            path = Path(result.paths[0])
        else:  # not saved (saving is off): a temporary file for the browser
            with tempfile.NamedTemporaryFile(prefix="easel-walk-", suffix=".gif", delete=False) as handle:
                handle.write(result.info["gif"])
            path = Path(handle.name)
        return str(path), f"{len(result.info['frames'])} frames · {result.info.get('infotext', '')}"

    button.click(on_walk, inputs=inputs, outputs=[output, note], show_progress="minimal")
    ui.gan_only.append(accordion)  # shown and hidden with the checkpoint (webui.ui.app.wire_header)
