"""The Models tab: installed checkpoints with family, short hash, support and load state; LoRAs and VAEs.

Load and Unload go through the model manager (which keeps one pipeline on the device and an LRU in RAM);
"Compute hash" hashes a checkpoint once and caches it on disk; "Convert to safetensors" turns a pickle checkpoint
(which Easel never loads) into a .safetensors file beside it, reading only its tensors; the memory line is the
manager's report.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext

HEADERS = ["Name", "Family", "Hash", "Status", "Loaded"]


def family(entry: Any) -> str:
    arch = str(getattr(entry.arch, "value", entry.arch))
    variant = getattr(entry, "variant", "")
    return f"{arch} ({variant})" if variant else arch


def checkpoint_rows(ui: UIContext) -> list[list[str]]:
    manager = ui.easel.manager
    current = manager.current()
    loaded = set(manager.loaded_names())
    rows = []
    for entry in manager.checkpoints():
        status = entry.reason if entry.supported else f"not supported: {entry.reason}"
        state = "on device" if current is not None and entry.name == current.name else (
            "in RAM" if entry.name in loaded else "")
        rows.append([entry.name, family(entry), entry.short_hash or "", status, state])
    return rows


def lora_rows(entries: Any) -> list[list[str]]:
    """Name, family, short hash and trigger words of each LoRA (what `<lora:name:1>` uses is the name)."""
    return [[e.name, getattr(e, "arch_label", str(getattr(e, "arch", ""))), getattr(e, "short_hash", None) or "",
             ", ".join(getattr(e, "trigger_words", ()))] for e in entries]


def name_rows(entries: Any) -> list[list[str]]:
    return [[e.name] for e in entries]


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def memory_text(report: dict[str, Any]) -> str:
    """The manager's memory report in two short lines."""
    loaded = report.get("loaded") or []
    head = [f"device {report.get('device', '?')} ({report.get('dtype', '?')})",
            f"{len(loaded)}/{report.get('ram_cache_size', '?')} models cached",
            f"weights in RAM {human_bytes(report.get('ram_bytes', 0))}",
            f"on device {human_bytes(report.get('device_bytes', 0))}"]
    if "process_rss_bytes" in report:
        head.append(f"process {human_bytes(report['process_rss_bytes'])}")
    if "cuda_allocated_bytes" in report:
        head.append(f"CUDA allocated {human_bytes(report['cuda_allocated_bytes'])}")
    models = [f"{m['name']}{' (active)' if m.get('active') else ''}: "
              f"{human_bytes(m.get('ram_bytes', 0) + m.get('device_bytes', 0))}" for m in loaded]
    return " · ".join(head) + ("\n" + " · ".join(models) if models else "")


def ensure_idle(ui: UIContext, action: str) -> None:
    """Loading or unloading while a job runs would pull weights from under it."""
    if ui.easel.engine.worker.current is not None:
        raise ValueError(f"a generation is running; {action} when it has finished")


def build(ui: UIContext) -> None:
    easel = ui.easel
    with gr.Tab("Models", id="models", elem_id="tab_models") as tab:
        with gr.Row(equal_height=False):
            names = [e.name for e in easel.manager.checkpoints()]
            pick = gr.Dropdown(choices=names, value=names[0] if names else None, label="Checkpoint",
                               elem_id="models_pick", scale=3, min_width=200)
            load = gr.Button("Load", variant="primary", elem_id="models_load", scale=0, min_width=80)
            unload = gr.Button("Unload", elem_id="models_unload", scale=0, min_width=80)
            compute = gr.Button("Compute hash", elem_id="models_hash", scale=0, min_width=140)
            convert = gr.Button("Convert to safetensors", elem_id="models_convert", scale=0, min_width=180)
            rescan = gr.Button("Rescan folders", elem_id="models_refresh", scale=0, min_width=140)
        memory = gr.Textbox(label="Memory in use", interactive=False, elem_id="models_memory", lines=2)
        table = gr.Dataframe(headers=HEADERS, datatype=["str"] * len(HEADERS), interactive=False,
                             label="Checkpoints", elem_id="models_table", wrap=True)
        with gr.Row(equal_height=False):
            loras = gr.Dataframe(headers=["LoRA", "Family", "Hash", "Trigger words"], datatype=["str"] * 4,
                                 interactive=False, label="LoRAs", elem_id="models_loras", min_width=200)
            vaes = gr.Dataframe(headers=["VAE"], datatype=["str"], interactive=False, label="VAEs",
                                elem_id="models_vaes", min_width=200)

    def snapshot(selected: str | None = None) -> tuple[Any, ...]:
        names = [e.name for e in easel.manager.checkpoints()]
        value = selected if selected in names else (names[0] if names else None)
        return (checkpoint_rows(ui), memory_text(easel.manager.memory_report()), lora_rows(easel.manager.loras()),
                name_rows(easel.manager.vaes()), gr.Dropdown(choices=names, value=value))

    outputs = [table, memory, loras, vaes, pick]

    @guard
    def on_show(selected: str | None) -> tuple[Any, ...]:
        return snapshot(selected)

    @guard
    def on_rescan(selected: str | None) -> tuple[Any, ...]:
        easel.manager.refresh()
        return snapshot(selected)

    @guard
    def on_load(selected: str | None) -> tuple[Any, ...]:
        if not selected:
            raise ValueError("checkpoint: pick a checkpoint to load")
        job = easel.engine.load(selected)
        if job.error:
            raise ValueError(f"checkpoint: {selected} could not be loaded: {job.error}")
        gr.Info(f"Loaded {selected}")
        return snapshot(selected)

    @guard
    def on_unload(selected: str | None) -> tuple[Any, ...]:
        if not selected:
            raise ValueError("checkpoint: pick a checkpoint to unload")
        ensure_idle(ui, "unload the model")
        easel.manager.unload(selected)
        return snapshot(selected)

    @guard
    def on_hash(selected: str | None) -> tuple[Any, ...]:
        if not selected:
            raise ValueError("checkpoint: pick a checkpoint to hash")
        easel.manager.compute_hash(selected)
        return snapshot(selected)

    @guard
    def on_convert(selected: str | None) -> tuple[Any, ...]:
        if not selected:
            raise ValueError("checkpoint: pick a .ckpt, .pt, .bin or .pth checkpoint to convert")
        target = easel.convert_checkpoint(selected)
        gr.Info(f"Converted {selected} to {target.name} (tensors only); it can be loaded now")
        return snapshot(selected)

    for button, handler in ((rescan, on_rescan), (load, on_load), (unload, on_unload), (compute, on_hash),
                            (convert, on_convert)):
        button.click(handler, inputs=pick, outputs=outputs)
    tab.select(on_show, inputs=pick, outputs=outputs, show_progress="hidden")
