"""The Models tab: installed checkpoints with family, short hash, support and load state; what is held in memory;
LoRAs and VAEs; with generation replicas (docs/SCALING.md), a table of them. A transformer- or UNet-only file
(GGUF, fp8; models/diffusion_models) whose text encoders or VAE are not on disk yet says what it still needs
("Flux.1 needs a T5-XXL text encoder in models/text_encoders/").

Load and Unload are jobs on the worker's queue, like the API's: an Unload asked for while a job runs waits for it to
end, then the model leaves. "Compute hash" hashes a checkpoint once and caches it on disk; "Convert to
safetensors" turns a pickle checkpoint (which Easel never loads) into a .safetensors file beside it, reading only
its tensors. The memory line and the "Held in memory" table are the model manager's report: every loaded model
(checkpoints, VAEs, segmenters, upscalers, ControlNets) with its kind, where it is (device or RAM) and its size.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from webui.ui.bridge import guard
from webui.ui.context import UIContext

HEADERS = ["Name", "Family", "Hash", "Status", "Loaded"]
HELD_HEADERS = ["Kind", "Name", "Where", "Size", "In use"]
REPLICA_HEADERS = ["Replica", "Node", "PID", "Device", "Loaded", "Jobs done", "State"]
WHERE = {"device": "on device", "ram": "in RAM"}


def family(entry: Any) -> str:
    arch = str(getattr(entry.arch, "value", entry.arch))
    variant = getattr(entry, "variant", "")
    return f"{arch} ({variant})" if variant else arch


def checkpoint_rows(ui: UIContext, report: dict[str, Any] | None = None) -> list[list[str]]:
    manager = ui.easel.manager
    report = manager.memory_report() if report is None else report
    tiers = {m["name"]: m.get("tier", "ram") for m in report.get("loaded") or []}
    rows = []
    for entry in manager.checkpoints():
        status = entry.reason if entry.supported else f"not supported: {entry.reason}"
        needs = manager.missing_components(entry)  # a transformer/UNet-only file: the parts not on disk yet
        if needs:
            status = f"{status}. Incomplete: {'; '.join(needs)}"
        state = WHERE.get(tiers.get(entry.name, ""), "")
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


def held_rows(report: dict[str, Any]) -> list[list[str]]:
    """Every model held in memory, least recently used first: kind, name, where, size, pinned by the running job."""
    return [[h["kind"], h["name"] + (f" (for {h['part_of']})" if h.get("part_of") else ""),
             WHERE.get(h["tier"], h["tier"]), human_bytes(h["bytes"]), "yes" if h.get("pinned") else ""]
            for h in report.get("held") or []]


def replica_rows(status: dict[str, Any]) -> list[list[str]]:
    """The Replicas table: one row per generation replica (`Easel.cluster_status`, docs/SCALING.md)."""
    rows = []
    for r in status.get("replicas", []):
        state = "not answering" if not r.get("alive") else ("busy" if r.get("busy") else "idle")
        if r.get("queued"):
            state += f", {r['queued']} waiting"
        rows.append([str(r.get("id")), str(r.get("node")), str(r.get("pid")), str(r.get("device")),
                     ", ".join(r.get("loaded") or []) or "-", str(r.get("jobs_done")), state])
    return rows


def memory_text(report: dict[str, Any]) -> str:
    """The manager's memory report in two short lines."""
    loaded = report.get("loaded") or []
    head = [f"device {report.get('device', '?')} ({report.get('dtype', '?')})",
            f"{len(loaded)}/{report.get('ram_cache_size', '?')} models cached",
            f"weights in RAM {human_bytes(report.get('ram_bytes', 0))}",
            f"on device {human_bytes(report.get('device_bytes', 0))}"]
    tiers, budgets = report.get("tiers"), report.get("budgets")
    if tiers and budgets:
        head.append(f"held: device tier {human_bytes(tiers['device'])} of {human_bytes(budgets['device'])}, "
                    f"RAM tier {human_bytes(tiers['ram'])} of {human_bytes(budgets['ram'])}")
    offload = report.get("offload_active") or report.get("offload")
    if offload:
        head.append(f"offload {offload}")
    if "process_rss_bytes" in report:
        head.append(f"process {human_bytes(report['process_rss_bytes'])}")
    if "cuda_allocated_bytes" in report:
        head.append(f"CUDA allocated {human_bytes(report['cuda_allocated_bytes'])}")
    models = [f"{m['name']}{' (active)' if m.get('active') else ''}: "
              f"{human_bytes(m.get('ram_bytes', 0) + m.get('device_bytes', 0))}" for m in loaded]
    return " · ".join(head) + ("\n" + " · ".join(models) if models else "")


def unload(ui: UIContext, selected: str | None, wait: bool = True) -> Any:
    """Queue unloading a checkpoint behind any running job (the job keeps its model until it ends) and, unless
    `wait` is False, wait for it; returns the job. ValueError names what went wrong."""
    if not selected:
        raise ValueError("checkpoint: pick a checkpoint to unload")
    return _queue_unload(ui, selected, wait)


def unload_all(ui: UIContext, wait: bool = True) -> Any:
    """Queue unloading every model of every kind (checkpoints, VAEs, segmenters, upscalers, ControlNets), as the
    API's unload-checkpoint does, behind any running job; returns the job."""
    return _queue_unload(ui, None, wait)


def _queue_unload(ui: UIContext, selected: str | None, wait: bool) -> Any:
    job = ui.easel.engine.unload(selected, source="ui", wait=wait)
    if wait and job.error:
        raise ValueError(f"checkpoint: {selected or 'the loaded models'} could not be unloaded: {job.error}")
    return job


def build(ui: UIContext) -> None:
    easel = ui.easel
    with gr.Tab("Models", id="models", elem_id="tab_models") as tab:
        with gr.Row(equal_height=False):
            names = [e.name for e in easel.manager.checkpoints()]
            pick = gr.Dropdown(choices=names, value=names[0] if names else None, label="Checkpoint",
                               elem_id="models_pick", scale=3, min_width=200)
            load = gr.Button("Load", variant="primary", elem_id="models_load", scale=0, min_width=80)
            unload = gr.Button("Unload", elem_id="models_unload", scale=0, min_width=80)
            unload_every = gr.Button("Unload all", elem_id="models_unload_all", scale=0, min_width=100)
            compute = gr.Button("Compute hash", elem_id="models_hash", scale=0, min_width=140)
            convert = gr.Button("Convert to safetensors", elem_id="models_convert", scale=0, min_width=180)
            rescan = gr.Button("Rescan folders", elem_id="models_refresh", scale=0, min_width=140)
        memory = gr.Textbox(label="Memory in use", interactive=False, elem_id="models_memory", lines=2)
        table = gr.Dataframe(headers=HEADERS, datatype=["str"] * len(HEADERS), interactive=False,
                             label="Checkpoints", elem_id="models_table", wrap=True)
        held = gr.Dataframe(headers=HELD_HEADERS, datatype=["str"] * len(HELD_HEADERS), interactive=False,
                            label="Held in memory", elem_id="models_held", wrap=True)
        with gr.Row(equal_height=False):
            loras = gr.Dataframe(headers=["LoRA", "Family", "Hash", "Trigger words"], datatype=["str"] * 4,
                                 interactive=False, label="LoRAs", elem_id="models_loras", min_width=200)
            vaes = gr.Dataframe(headers=["VAE"], datatype=["str"], interactive=False, label="VAEs",
                                elem_id="models_vaes", min_width=200)
        # generation replicas (--workers / --ray-address), shown only when Easel runs with them
        replicas = gr.Dataframe(headers=REPLICA_HEADERS, datatype=["str"] * len(REPLICA_HEADERS), interactive=False,
                                label="Cluster: generation replicas", elem_id="models_replicas", wrap=True,
                                visible=easel.clustered)

    def snapshot(selected: str | None = None) -> tuple[Any, ...]:
        names = [e.name for e in easel.manager.checkpoints()]
        value = selected if selected in names else (names[0] if names else None)
        report = easel.manager.memory_report()
        cluster = replica_rows(easel.cluster_status()) if easel.clustered else []
        return (checkpoint_rows(ui, report), memory_text(report), held_rows(report), lora_rows(easel.manager.loras()),
                name_rows(easel.manager.vaes()), gr.Dropdown(choices=names, value=value), cluster)

    outputs = [table, memory, held, loras, vaes, pick, replicas]

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
        unload(ui, selected)
        return snapshot(selected)

    @guard
    def on_unload_all(selected: str | None) -> tuple[Any, ...]:
        unload_all(ui)
        gr.Info("Unloaded every model")
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

    for button, handler in ((rescan, on_rescan), (load, on_load), (unload, on_unload), (unload_every, on_unload_all),
                            (compute, on_hash),
                            (convert, on_convert)):
        button.click(handler, inputs=pick, outputs=outputs)
    tab.select(on_show, inputs=pick, outputs=outputs, show_progress="hidden")
