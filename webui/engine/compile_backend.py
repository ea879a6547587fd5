"""`torch.compile` for the UNet and the VAE decoder on CPUs (the "compile" CPU backend).

Inductor generates C++/OpenMP kernels for the graph; with `freezing` the weights become constants, so oneDNN
can prepack them for the convolutions and matrix products. Compiled code is cached on disk by inductor (its FX
graph cache, under `cache_dir` unless TORCHINDUCTOR_CACHE_DIR says otherwise), so the same model and shape
after a restart loads kernels instead of generating them. Frozen weights are constants: a UNet whose weights
changed (another LoRA set, a fingerprint not seen) gets its own compiled function, the same way the OpenVINO
backend converts again. Same runner interface as webui.engine.openvino_backend.OpenVINOBackend.
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch

from webui.engine.openvino_backend import BackendUnavailable, _DecoderCore, _UNetCore

log = logging.getLogger(__name__)

COMPILED_KEEP = 2  # compiled functions kept per part (each may hold frozen copies of the weights)


class CompileBackend:
    name = "compile"

    def __init__(self, cache_dir: Path, threads: int | None = None, freezing: bool = True) -> None:
        self.cache_dir = Path(cache_dir)
        self.freezing = freezing
        self._compiled: OrderedDict[str, Callable[..., torch.Tensor]] = OrderedDict()
        self.stats = {"compiles": 0, "first_call_s": 0.0}
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.cache_dir))
        try:
            import torch._inductor.config as inductor_config

            inductor_config.fx_graph_cache = True
            inductor_config.freezing = freezing
            inductor_config.cpp.weight_prepack = True
        except (ImportError, AttributeError) as exc:
            raise BackendUnavailable(f"torch.compile's inductor is not usable here: {exc}") from exc

    def unet_runner(self, unet: torch.nn.Module, key: str) -> Callable[..., torch.Tensor]:
        return self._runner("unet-" + key, lambda: _UNetCore(unet).eval())

    def decoder_runner(self, vae: torch.nn.Module, key: str) -> Callable[..., torch.Tensor]:
        return self._runner("vae-" + key, lambda: _DecoderCore(vae).eval())

    def _runner(self, key: str, make: Callable[[], torch.nn.Module]) -> Callable[..., torch.Tensor]:
        found = self._compiled.get(key)
        if found is None:
            compiled = torch.compile(make(), dynamic=False, fullgraph=False)
            first = [True]

            def found(*inputs: torch.Tensor) -> torch.Tensor:
                start = time.perf_counter()
                try:
                    with torch.no_grad():
                        out = compiled(*inputs)
                except Exception as exc:  # noqa: BLE001 -- a compiler failure of any kind means: run plain
                    raise BackendUnavailable(f"torch.compile failed: {type(exc).__name__}: {exc}") from exc
                if first[0]:
                    first[0] = False
                    self.stats["first_call_s"] += time.perf_counter() - start
                    log.info("torch.compile: %s compiled in %.1f s", key[:30], time.perf_counter() - start)
                return out

            self.stats["compiles"] += 1
            self._compiled[key] = found
            part = key.split("-")[0]
            for old in [k for k in self._compiled if k.startswith(part)][:-COMPILED_KEEP]:
                del self._compiled[old]  # the oldest of this part (the new one is last)
        self._compiled.move_to_end(key)
        return found

    def forget(self) -> None:
        self._compiled.clear()
        torch._dynamo.reset()
