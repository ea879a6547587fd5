"""The Train tab: train a LoRA from a YAML config, watch its progress, loss curve and sample images.

The config is the same YAML the CLI reads (`python3 launch.py train config.yaml`, docs/TRAINING.md): typed in
the editor, loaded from a file, or started from the built-in example; its paths must stay inside the training
folders (dataset in data/, LoRA in models/Lora, base model by name). Start refuses while a LoRA trains, then
checks the config, the base model, the output name and the dataset's files at once (a mistake names the field
or the file), then the run reads its images and trains on a background thread of its own
(`easel.extras["training"]`, a `webui.training.service.TrainingService`), beside the generation worker:
generating keeps working while a LoRA trains, more slowly, since both share the CPU or GPU. A timer polls the
run once a second while it runs: progress bar, status line, loss curve, sample images. Cancel stops after the
current step and saves; pressing Start with the same config resumes from that save.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "docs" / "examples" / "lora-builtin.yaml"
POLL_SECONDS = 1.0
NOTE = ("Training runs on its own background thread, beside image generation: both keep working, each more "
        "slowly while the other runs, since they share the CPU cores (or the GPU and its memory). Cancel stops "
        "after the current step and saves; Start with the same config resumes.")


def example_config() -> str:
    try:
        return EXAMPLE_CONFIG.read_text(encoding="utf-8")
    except OSError:
        return "base_model: easel-shapes\ndataset: data/my-dataset\ntrigger: mytrigger\nsteps: 500\n"


def service_of(ui: UIContext) -> Any:
    service = ui.easel.extras.get("training")
    if service is None:
        raise ValueError("training is not available in this Easel (no training service was built)")
    return service


def progress_html(step: int, total: int, running: bool) -> str:
    percent = 100.0 * step / total if total else 0.0
    label = f"{step} / {total} steps ({percent:.0f}%)" if total else "not started"
    state = "running" if running else "idle"
    return (f'<div class="easel-train-progress" data-state="{state}">'
            f'<progress max="{max(total, 1)}" value="{step}" style="width:100%"></progress>'
            f"<span>{html.escape(label)}</span></div>")


def loss_frame(steps: tuple[int, ...], losses: tuple[float, ...]) -> Any:
    """Loss per step and its running mean over 20 steps, long format for gr.LinePlot."""
    import pandas as pd

    frame = pd.DataFrame({"step": list(steps), "loss": list(losses)})
    smooth = frame.assign(loss=frame["loss"].rolling(20, min_periods=1).mean())
    return pd.concat([frame.assign(series="loss"), smooth.assign(series="mean of 20")], ignore_index=True)


def read_image(path: Path) -> Any:
    """A sample as a PIL image (the files sit beside the LoRA under models/, which Gradio does not serve)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError:
        return None


def status_markdown(status: Any) -> str:
    lines = [html.escape(status.message or "No training has run since Easel started.")]
    if status.error:
        lines.append(f"**Error:** {html.escape(status.error)}")
    if status.output is not None:
        lines.append(f"LoRA file: `{status.output}`")
    return "\n\n".join(lines)


def view(ui: UIContext) -> tuple[Any, ...]:
    """(progress, status, loss plot, samples, timer) for the run as it is now."""
    status = service_of(ui).status()
    samples = [(image, caption) for image, caption in ((read_image(p), c) for p, c in status.samples) if image]
    return (progress_html(status.step, status.total, status.running), status_markdown(status),
            loss_frame(status.steps, status.losses), samples, gr.Timer(active=status.running))


def start(ui: UIContext, text: str) -> tuple[Any, ...]:
    if not (text or "").strip():
        raise ValueError("config: write or load a YAML config first")
    service_of(ui).start(text)
    return view(ui)


def build(ui: UIContext) -> None:
    with gr.Tab("Train", id="train", elem_id="tab_train"):
        gr.Markdown(NOTE, elem_id="train_note")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=340):
                config = gr.Code(value=example_config(), language="yaml", label="Config (YAML)", lines=24,
                                 interactive=True, elem_id="train_config")
                with gr.Row():
                    upload = gr.UploadButton("Load YAML file", file_types=[".yaml", ".yml"], type="filepath",
                                             elem_id="train_upload", size="sm")
                    example = gr.Button("Example config", elem_id="train_example", size="sm")
                with gr.Row():
                    run = gr.Button("Start", variant="primary", elem_id="train_start")
                    stop = gr.Button("Cancel", variant="stop", elem_id="train_cancel")
            with gr.Column(scale=1, min_width=340):
                progress = gr.HTML(progress_html(0, 0, False), elem_id="train_progress")
                status = gr.Markdown("No training has run since Easel started.", elem_id="train_status")
                plot = gr.LinePlot(loss_frame((), ()), x="step", y="loss", color="series", title="Loss",
                                   height=260, elem_id="train_loss")
                samples = gr.Gallery(label="Samples", columns=4, height=260, object_fit="contain",
                                     elem_id="train_samples", elem_classes="easel-gallery")
        timer = gr.Timer(POLL_SECONDS, active=False)

    outputs = [progress, status, plot, samples, timer]

    @guard
    def on_start(text: str) -> tuple[Any, ...]:
        return start(ui, text)

    @guard
    def on_cancel() -> tuple[Any, ...]:
        if not service_of(ui).cancel():
            gr.Info("No training is running.")
        return view(ui)

    @guard
    def on_tick() -> tuple[Any, ...]:
        return view(ui)

    @guard
    def on_upload(path: str | None) -> str:
        if not path:
            return gr.skip()
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"config: cannot read {Path(path).name}: {exc}") from exc

    run.click(on_start, inputs=config, outputs=outputs)
    stop.click(on_cancel, outputs=outputs)
    timer.tick(on_tick, outputs=outputs, show_progress="hidden")
    upload.upload(on_upload, inputs=upload, outputs=config)
    example.click(example_config, outputs=config)
