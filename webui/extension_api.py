"""The one module an extension imports: Easel's extension API, its version and the types it hands out.

An extension's entry module defines `setup(api: ExtensionAPI) -> None`; everything it may do goes through
`api` (tabs, accordions, request hooks, image post-processing, HTTP routes, API scripts, samplers,
preprocessors, settings). The requests a hook receives are the frozen dataclasses below: change one with
`request.replace(field=value)` and return it. `AdapterSpec` names an adapter model a request needs
(`api.add_adapter`); `MemoryCache` is the type of `api.memory`, where extensions hold the models they load.
`Generated` is one finished image as `after_generate` hooks see it (`.image`, `.seed`, `.extra` for infotext
entries). Model files are read with `read_weights` / `read_state_dict` (safetensors, or pickles through the
weights-only unpickler, TorchScript archives refused unread), never with `torch.load` or `torch.jit.load`
directly; `check_weights_file` vets a file that a library will open itself. `API_VERSION` is the version this
Easel provides; an extension's manifest names the one it was written for, and a mismatch is refused with a
clear message.
See docs/EXTENSIONS.md for a complete example.
"""
from __future__ import annotations

from typing import Any, Callable

from webui.engine.context import Generated
from webui.extensions import API_VERSION, ExtensionAPI, ExtensionInputs, PipelineCall, PipelineWrapper
from webui.model_manager.memory import MemoryCache
from webui.model_manager.spec import AdapterSpec
from webui.model_manager.weights import (
    ModelFileError,
    UnsafeModelFileError,
    check_weights_file,
    pickle_folder_reason,
    pickle_weights_in,
    read_state_dict,
    read_weights,
)
from webui.requests import (
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    RequestError,
    SegmentRequest,
    Txt2ImgRequest,
)

BeforeGenerate = Callable[[Any], Any]
"""`hook(request) -> request | None`: return a changed request (None keeps it)."""

AfterGenerate = Callable[[Any, list[Generated]], list[Generated] | None]
"""`hook(request, generated) -> generated | None`: change or replace the finished images."""

ScriptRun = Callable[[Any, list[Any]], Any]
"""`run(request, script_args) -> request | list[request]`: what an API script makes of a request."""

__all__ = [
    "API_VERSION",
    "AdapterSpec",
    "AfterGenerate",
    "BeforeGenerate",
    "ExtensionAPI",
    "ExtensionInputs",
    "GenerationRequest",
    "Generated",
    "Img2ImgRequest",
    "InpaintRequest",
    "MemoryCache",
    "ModelFileError",
    "PipelineCall",
    "PipelineWrapper",
    "RequestError",
    "ScriptRun",
    "SegmentRequest",
    "Txt2ImgRequest",
    "UnsafeModelFileError",
    "check_weights_file",
    "pickle_folder_reason",
    "pickle_weights_in",
    "read_state_dict",
    "read_weights",
]
