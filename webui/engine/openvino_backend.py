"""OpenVINO for the UNet and the VAE decoder on CPUs: convert once, cache on disk, compile, run.

`OpenVINOBackend.unet_runner(unet, key)` and `.decoder_runner(vae, key)` answer a callable that runs the module's
forward pass on OpenVINO's CPU plugin: (sample [B,C,h,w], timestep [1], text [B,L,D]) -> noise [B,C,h,w] for the
UNet, latents [B,4,h,w] (already divided by the scaling factor) -> pixels [B,3,8h,8w] for the decoder. A module
is converted (`openvino.convert_model`, traced with example inputs, batch/height/width left dynamic) once per
`key` — the checkpoint's hash and the LoRA state its weights carry — saved as OpenVINO IR under `cache_dir`
(`save_model`, fp32 weights), and read back from there after a restart instead of converting again. The
compiled model (dynamic shapes, fp32 inference precision, latency hint, one stream, as many threads as physical
cores) is kept per key, the last COMPILED_KEEP per part. The disk cache is bounded by `disk_budget` bytes: the least recently used models go first.

A changed LoRA set is another key, so a new conversion (its cost: docs/CPU.md); switching back to a set used
before reads its IR from disk. Nothing here imports openvino until a runner is asked for.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

Runner = Callable[..., torch.Tensor]
COMPILED_KEEP = 2  # compiled models kept per part (UNet, VAE); each holds its own copy of the weights


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (package missing, conversion failed); the plain path runs instead."""


class _UNetCore(torch.nn.Module):
    """The UNet's forward pass with the three inputs an SD 1.x/2.x step gives it, as one traceable function."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
                ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class _DecoderCore(torch.nn.Module):
    """The VAE's decode (post-quant conv + decoder): latents [B,4,h,w] -> pixels [B,3,8h,8w] in [-1, 1]."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, return_dict=False)[0]


def physical_cores() -> int:
    """Physical cores (not hyperthreads) from /proc/cpuinfo's (physical id, core id) pairs; os.cpu_count() else."""
    import os

    try:
        pairs, physical = set(), "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "physical id":
                physical = value.strip()
            elif name.strip() == "core id":
                pairs.add((physical, value.strip()))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return max(1, os.cpu_count() or 1)


def available() -> str | None:
    """None when OpenVINO can be used, else why not (for the fallback message)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the openvino package is not installed (pip install 'easel[cpu]' or pip install openvino)"
    return None


class OpenVINOBackend:
    """Converted and compiled models by key; see the module docstring."""

    name = "openvino"

    def __init__(self, cache_dir: Path, threads: int | None = None, disk_budget: int = 8 << 30) -> None:
        self.cache_dir = Path(cache_dir)
        self.threads = threads or physical_cores()
        self.disk_budget = disk_budget
        self._core: Any = None
        self._models: dict[str, Any] = {}  # key -> ov.Model (dynamic shapes), read or converted
        self._compiled: OrderedDict[str, Any] = OrderedDict()  # key -> infer request of its compiled model
        self.stats = {"conversions": 0, "disk_reads": 0, "compiles": 0, "convert_s": 0.0, "compile_s": 0.0}

    # ---------------------------------------------------------------------------------------------- runners
    def unet_runner(self, unet: torch.nn.Module, key: str) -> Runner:
        """(sample, timestep, text) -> noise prediction, on OpenVINO, for the UNet as it is now."""
        channels, width = int(unet.config.in_channels), int(unet.config.cross_attention_dim)

        def examples(sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> tuple:
            return sample, timestep, text

        spec = [([-1, channels, -1, -1], "f32"), ([1], "f32"), ([-1, -1, width], "f32")]
        return self._runner(_UNetCore(unet), "unet-" + key, spec, examples)

    def decoder_runner(self, vae: torch.nn.Module, key: str) -> Runner:
        """latents -> pixels, on OpenVINO, for the VAE's decoder."""
        channels = int(vae.config.latent_channels)
        return self._runner(_DecoderCore(vae), "vae-" + key, [([-1, channels, -1, -1], "f32")], lambda *a: a)

    def _runner(self, module: torch.nn.Module, key: str, spec: list, examples: Callable) -> Runner:
        def run(*inputs: torch.Tensor) -> torch.Tensor:
            arrays = [t.detach().to(torch.float32).contiguous().numpy() for t in inputs]
            request = self._request(module, key, spec, examples(*inputs))
            request.infer(arrays, share_inputs=True)
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        return run

    # ---------------------------------------------------------------------------------------------- models
    def _request(self, module: torch.nn.Module, key: str, spec: list, example: tuple) -> Any:
        """The infer request of `key`'s compiled model: compiled once with dynamic batch, height and width (one
        copy of the weights whatever the sizes asked for), reused for every shape."""
        found = self._compiled.get(key)
        if found is not None:
            self._compiled.move_to_end(key)
            return found
        model = self._model(module, key, spec, example)
        start = time.perf_counter()
        compiled = self.core().compile_model(model, "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(self.threads),
            "INFERENCE_PRECISION_HINT": "f32"})
        self.stats["compiles"] += 1
        self.stats["compile_s"] += time.perf_counter() - start
        request = compiled.create_infer_request()
        part = key.split("-")[0]
        for old in [k for k in self._compiled if k.startswith(part)][:-(COMPILED_KEEP - 1) or None]:
            del self._compiled[old]  # each compiled model holds a copy of its weights: the oldest go first
        self._compiled[key] = request
        return request

    def _model(self, module: torch.nn.Module, key: str, spec: list, example: tuple) -> Any:
        if key in self._models:
            return self._models[key]
        import openvino as ov

        folder = self.cache_dir / _safe(key)
        xml = folder / "model.xml"
        if xml.is_file() and (folder / "model.bin").is_file():
            try:
                model = self.core().read_model(str(xml))
                self.stats["disk_reads"] += 1
                folder.touch()  # recently used
                self._models = {key: model} | {k: v for k, v in self._models.items() if not k.startswith(key[:4])}
                return model
            except RuntimeError as exc:  # a cache file cut short (disk full, killed mid-write): convert again
                log.warning("OpenVINO cache %s unreadable (%s); converting again", folder, exc)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                model = ov.convert_model(module.eval(), example_input=example,
                                         input=[(ov.PartialShape(shape), ov.Type.f32) for shape, _ in spec])
        except Exception as exc:  # noqa: BLE001 -- a converter failure of any kind means: run plain
            raise BackendUnavailable(f"OpenVINO could not convert the {key.split('-')[0]}: {exc}") from exc
        self.stats["conversions"] += 1
        self.stats["convert_s"] += time.perf_counter() - start
        log.info("OpenVINO: converted %s in %.1f s", key, time.perf_counter() - start)
        self._save(model, folder)
        # one model per part (unet/vae) kept converted: the others are on disk
        self._models = {key: model} | {k: v for k, v in self._models.items() if not k.startswith(key[:4])}
        return model

    def _save(self, model: Any, folder: Path) -> None:
        import openvino as ov

        self._evict(reserve=self._bytes_of(model))
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(parents=True)
            ov.save_model(model, str(partial / "model.xml"), compress_to_fp16=False)
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
        except (OSError, RuntimeError) as exc:  # no room: it runs from memory, converted again after a restart
            log.warning("OpenVINO: could not cache %s on disk (%s)", folder.name, exc)
            shutil.rmtree(partial, ignore_errors=True)

    @staticmethod
    def _bytes_of(model: Any) -> int:
        total = 0
        for op in model.get_ordered_ops():
            if op.get_type_name() == "Constant":
                total += op.get_byte_size()
        return total

    def _evict(self, reserve: int) -> None:
        """Remove the least recently used cached models until `reserve` more bytes fit in the disk budget."""
        if not self.cache_dir.is_dir():
            return
        entries = sorted((p for p in self.cache_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        sizes = {p: sum(f.stat().st_size for f in p.iterdir() if f.is_file()) for p in entries}
        used = sum(sizes.values())
        for path in entries:
            if used + reserve <= self.disk_budget:
                break
            shutil.rmtree(path, ignore_errors=True)
            used -= sizes[path]
            log.info("OpenVINO: removed cached %s (disk budget)", path.name)

    def core(self) -> Any:
        if self._core is None:
            import openvino as ov

            self._core = ov.Core()
        return self._core

    def forget(self) -> None:
        """Drop every converted and compiled model from memory (the disk cache stays)."""
        self._models.clear()
        self._compiled.clear()


def _safe(key: str) -> str:
    """A folder name for a cache key: readable head, hash tail (keys carry LoRA names and weights)."""
    head = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:60]
    return f"{head}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
