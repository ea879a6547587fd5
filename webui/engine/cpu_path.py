"""The CPU execution path: run the UNet and the VAE decoder of SD 1.x/2.x on a faster backend when there is no GPU.

`CpuPath.active(pipe, arch)` is a context manager the mode context puts around each diffusers pipeline call: for
the call it puts stand-ins in the pipeline's `unet` and `vae` slots which hand the work to the chosen backend,
and it puts the real modules back afterwards, whatever happens. The real modules stay where they are for
everything else (LoRAs load into them, embeddings into the text encoder, the memory policy measures them), so
LoRA hot-swap and checkpoint switching work as on the plain path: the backend sees the UNet as it is at the
call, keyed by a fingerprint of its weights (a strided sample of every tensor, LoRA layers included) and of
its LoRA scales and attention processors; a fingerprint it has not seen is converted again.

Backends (the Settings tab's "CPU backend", `UserSettings.cpu_backend`):
- plain: diffusers' own PyTorch modules;
- openvino: OpenVINO's CPU plugin (webui.engine.openvino_backend), fp32;
- compile: `torch.compile` (inductor's CPU code generation), compiled graphs cached on disk by inductor;
- auto: AUTO_BACKEND (plain for now: see docs/BENCHMARKS.md) for full-size UNets on a CPU device where its
  package is installed, plain for small UNets (AUTO_MIN_PARAMETERS: the conversion does not pay) and on a GPU.
bf16 is never chosen: it pays only where the CPU has native bf16 (`native_bf16()`), and changes the image.

A stand-in runs the real module whenever the call asks for something the backend's graph lacks (ControlNet
residuals, SDXL's added conditions, cross-attention arguments, VAE tiling or slicing), and a backend that
cannot run (package missing, conversion failed) falls back to plain with one logged message, kept in
`status()`; a request never fails because of the backend.

The tiny VAE (webui.engine.tiny_vae, TAESD-family files in models/VAE-approx) decodes instead of the full VAE
when `tiny_vae_decode` is on, and draws the live previews when its file is there.
"""
from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from webui.engine.openvino_backend import BackendUnavailable, OpenVINOBackend, physical_cores
from webui.engine.openvino_backend import available as openvino_available
from webui.settings import CPU_BACKENDS

log = logging.getLogger(__name__)

# What auto runs on a CPU: "plain" until an idle-machine benchmarks/cpu_speed.py run shows OpenVINO paying (on the
# loaded 2-core development machine a full 256² request ran at parity with PyTorch; docs/BENCHMARKS.md)
AUTO_BACKEND = "plain"
AUTO_MIN_PARAMETERS = 100_000_000  # auto: smaller UNets (test models) run plain, the conversion would not pay
ARCHS = ("sd1", "sd2")  # families whose UNet step the backends' graphs take (sample, timestep, text)
# UNet keyword arguments a stand-in takes as the graph does when they are empty
_PLAIN_WHEN_SET = ("timestep_cond", "attention_mask", "cross_attention_kwargs", "added_cond_kwargs",
                   "down_block_additional_residuals", "mid_block_additional_residual",
                   "down_intrablock_additional_residuals", "encoder_attention_mask", "class_labels")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str] | None = None) -> bool:
    """True where the CPU computes bf16 natively (AVX-512 BF16 or AMX), not by emulation."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash that changes when the module's output would: every parameter's shape and a strided sample of
    its values (LoRA layers' too), the LoRA layers' active adapters, scales and merge state, and the attention
    processors' classes. About a millisecond per hundred tensors."""
    digest = hashlib.sha256()
    for name, param in module.named_parameters():
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // 64)
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(flat[::step][:64].to(torch.float32).numpy().tobytes())
    for name, layer in module.named_modules():
        scaling = getattr(layer, "scaling", None)
        if isinstance(scaling, dict) and hasattr(layer, "active_adapters"):
            digest.update(f"{name}{layer.active_adapters}{sorted(scaling.items())}"
                          f"{getattr(layer, 'merged_adapters', [])}{getattr(layer, 'disable_adapters', False)}"
                          .encode())
    processors = getattr(module, "attn_processors", None)
    if isinstance(processors, dict):
        digest.update(",".join(sorted({type(p).__name__ for p in processors.values()})).encode())
    return digest.hexdigest()[:20]


def _given(value: Any) -> bool:
    """An argument that changes the UNet's output: anything but None and an empty dict, list or tuple."""
    return value is not None and not (isinstance(value, (dict, list, tuple)) and len(value) == 0)


def _custom_processors(unet: Any) -> list[str]:
    """Attention processors that are not diffusers' own (an extension's, a hypernetwork's): their Python state
    would be frozen into a converted graph."""
    processors = getattr(unet, "attn_processors", None) if isinstance(unet, torch.nn.Module) else None
    if not isinstance(processors, dict):
        return []
    return sorted({type(p).__name__ for p in processors.values()
                   if not type(p).__module__.startswith(("diffusers.", "peft."))})


class UNetStandIn:
    """In a pipeline's `unet` slot for one call: runs `runner` for plain SD steps, the real UNet otherwise."""

    def __init__(self, unet: torch.nn.Module, runner: Callable[..., torch.Tensor], path: "CpuPath") -> None:
        self._unet, self._runner, self._path = unet, runner, path

    def __getattr__(self, name: str) -> Any:  # config, dtype, device, ... are the real UNet's
        return getattr(self._unet, name)

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor | None = None,
                 *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
        plain = (args or encoder_hidden_states is None or any(_given(kwargs.get(k)) for k in _PLAIN_WHEN_SET)
                 or set(kwargs) - set(_PLAIN_WHEN_SET) or not bool((steps == steps[0]).all()))
        if not plain:
            try:
                out = self._runner(sample, steps[:1], encoder_hidden_states).to(sample.dtype)
            except (BackendUnavailable, RuntimeError) as exc:
                self._path.failed("unet", exc)
                plain = True
        if plain:
            return self._unet(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)


class VaeStandIn:
    """In a pipeline's `vae` slot for one call: `decode` on the backend (or the tiny VAE), the rest the real VAE's."""

    def __init__(self, vae: torch.nn.Module, decode: Callable[[torch.Tensor], torch.Tensor], path: "CpuPath"
                 ) -> None:
        self._vae, self._decode, self._path = vae, decode, path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vae, name)

    def decode(self, latents: torch.Tensor, return_dict: bool = True, generator: Any = None, **kwargs: Any) -> Any:
        """latents [B,4,h,w] / scaling factor -> pixels [B,3,8h,8w] in [-1, 1], as AutoencoderKL.decode."""
        if kwargs or getattr(self._vae, "use_tiling", False) or getattr(self._vae, "use_slicing", False):
            return self._vae.decode(latents, return_dict=return_dict, generator=generator, **kwargs)
        try:
            pixels = self._decode(latents).to(latents.dtype)
        except (BackendUnavailable, RuntimeError) as exc:
            self._path.failed("vae", exc)
            return self._vae.decode(latents, return_dict=return_dict, generator=generator)
        if return_dict:
            from diffusers.models.autoencoders.vae import DecoderOutput

            return DecoderOutput(sample=pixels)
        return (pixels,)


class CpuPath:
    """The backend choice for this Easel (read from `setting()` at each call) and the backends' compiled state."""

    def __init__(self, device: str, cache_dir: Path, setting: Callable[[], str] = lambda: "auto",
                 tiny_vae: Any = None) -> None:
        self.device = device
        self.cache_dir = Path(cache_dir)
        self.setting = setting
        self.tiny_vae = tiny_vae  # webui.engine.tiny_vae.TinyVaes, or None
        self.threads = physical_cores()
        self._backends: dict[str, Any] = {}
        self._broken: dict[str, str] = {}  # backend -> why it cannot run (for good, in this process)
        self.last: dict[str, Any] = {"backend": "plain", "reason": "no generation yet"}

    # ---------------------------------------------------------------------------------------------- choice
    def choose(self, arch: str, unet: Any = None) -> tuple[str, str]:
        """(backend that runs, why) for a model of family `arch` (with this UNet) under the current setting."""
        wanted = self.setting() or "auto"
        if wanted not in CPU_BACKENDS:
            return "plain", f"unknown CPU backend {wanted!r}"
        if self.device != "cpu":
            return "plain", f"device is {self.device}"
        if wanted == "plain":
            return "plain", "chosen in Settings"
        if arch not in ARCHS:
            return "plain", f"the faster CPU backends take SD 1.x/2.x; this model is {arch}"
        custom = _custom_processors(unet)
        if custom:
            return "plain", f"attention processors {', '.join(custom)} run in PyTorch only"
        if wanted == "auto" and isinstance(unet, torch.nn.Module) and \
                sum(p.numel() for p in unet.parameters()) < AUTO_MIN_PARAMETERS:
            return "plain", "auto: a small UNet, where a conversion does not pay"
        if wanted == "auto" and AUTO_BACKEND == "plain":
            return "plain", "auto: no faster backend measured to pay on CPUs yet (docs/CPU.md)"
        backend = AUTO_BACKEND if wanted == "auto" else wanted
        reason = self._broken.get(backend) or (openvino_available() if backend == "openvino" else None)
        if reason:
            return "plain", f"{backend} unavailable: {reason}"
        return backend, "auto" if wanted == "auto" else "chosen in Settings"

    def status(self) -> dict[str, Any]:
        """What ran last (backend, why), the setting, the CPU's physical cores and bf16, the backends' counters."""
        stats = {name: dict(getattr(b, "stats", {})) for name, b in self._backends.items()}
        return {**self.last, "setting": self.setting(), "device": self.device, "threads": self.threads,
                "native_bf16": native_bf16(), "stats": stats, "unavailable": dict(self._broken)}

    def failed(self, part: str, exc: BaseException) -> None:
        backend = self.last.get("backend", "?")
        message = f"{backend} could not run the {part}: {exc}"
        if isinstance(exc, BackendUnavailable):
            self._broken[backend] = str(exc)
        log.warning("CPU path: %s; running it plain", message)
        self.last = {"backend": "plain", "reason": message}

    # ---------------------------------------------------------------------------------------------- the call
    @contextmanager
    def active(self, pipe: Any, arch: str) -> Iterator[None]:
        """Stand-ins in `pipe`'s unet/vae slots for the block (nothing changes where the plain path runs)."""
        unet, vae = getattr(pipe, "unet", None), getattr(pipe, "vae", None)
        backend, reason = self.choose(arch, unet)
        tiny = self.tiny_vae.for_decode(arch, vae) if self.tiny_vae is not None and vae is not None else None
        if backend != self.last.get("backend") or reason != self.last.get("reason"):
            log.info("CPU path: %s (%s)", backend, reason)
        self.last = {"backend": backend, "reason": reason}
        swaps: dict[str, Any] = {}
        if tiny is not None:
            scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
            swaps["vae"] = VaeStandIn(vae, lambda z: tiny.decode(z * scale, return_dict=False)[0], self)
        if backend != "plain" and isinstance(unet, torch.nn.Module) and hasattr(unet, "config"):
            try:
                engine = self._backend(backend)
                swaps["unet"] = UNetStandIn(unet, self._unet_runner(engine, unet), self)
                if vae is not None and "vae" not in swaps and hasattr(vae.config, "latent_channels"):
                    swaps["vae"] = VaeStandIn(vae, self._decoder_runner(engine, vae), self)
            except BackendUnavailable as exc:
                self._broken[backend] = str(exc)
                self.failed("model", exc)
                swaps.pop("unet", None)
        # Written past DiffusionPipeline.__setattr__ on purpose: the pipeline's config keeps naming the real
        # classes, and the real modules come back exactly as they were.
        for name, stand_in in swaps.items():
            object.__setattr__(pipe, name, stand_in)
        try:
            yield
        finally:
            for name in swaps:
                object.__setattr__(pipe, name, unet if name == "unet" else vae)

    def _backend(self, name: str) -> Any:
        if name not in self._backends:
            if name == "openvino":
                self._backends[name] = OpenVINOBackend(self.cache_dir / "openvino", self.threads)
            elif name == "compile":
                from webui.engine.compile_backend import CompileBackend

                self._backends[name] = CompileBackend(self.cache_dir / "inductor", self.threads)
            else:
                raise BackendUnavailable(f"unknown CPU backend {name!r}")
        return self._backends[name]

    def _unet_runner(self, engine: Any, unet: torch.nn.Module) -> Callable[..., torch.Tensor]:
        key = fingerprint(unet)
        return lambda *inputs: engine.unet_runner(unet, key)(*inputs)

    def _decoder_runner(self, engine: Any, vae: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        key = fingerprint(vae.decoder) if hasattr(vae, "decoder") else fingerprint(vae)
        return lambda latents: engine.decoder_runner(vae, key)(latents)

    def previewer(self, arch: str) -> Callable[[torch.Tensor], Any] | None:
        """The tiny VAE's preview for this family (latents -> PIL image), None where no file is installed."""
        return self.tiny_vae.previewer(arch) if self.tiny_vae is not None else None


def configure_threads(device: str) -> int:
    """PyTorch's intra-op threads = physical cores on a CPU device (hyperthreads slow the GEMMs down); the count."""
    cores = physical_cores()
    if device == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(cores)
    return cores
