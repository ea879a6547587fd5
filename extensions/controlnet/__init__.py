"""The bundled ControlNet extension: its entry point, `setup(api)`, wires the parts together through the extension API.

It finds ControlNet models in the ControlNet folders (`models.py`), makes control maps with controlnet-aux
preprocessors (`preprocessors.py`), reads units from the API's `alwayson_scripts.controlnet.args` and from its
accordion (`units.py`), runs them by wrapping each pipeline call a mode makes (`apply.py`), records them in the
infotext, adds a "ControlNet" accordion to the txt2img, img2img and inpaint tabs (`ui.py`) and serves
sd-webui-controlnet's routes under `/controlnet/` (`routes.py`). Setting up imports neither diffusers nor
controlnet-aux; both load on first use. See docs/CONTROLNET.md.
"""
from __future__ import annotations

from typing import Any

from webui.extension_api import AdapterSpec, ExtensionAPI

from .apply import ControlNetRunner
from .ipadapter import IPAdapterModels, IPAdapterRunner, is_ip_adapter
from .t2iadapter import T2IAdapterRunner
from .models import ControlNetModels
from .preprocessors import ANNOTATOR_FOLDER, MODULES, Preprocessors, hub_offline
from .units import ControlUnit, parse_units

MODES = ("txt2img", "img2img", "inpaint")


class ControlNet:
    """Everything the extension holds: its models, preprocessors and the runner, for one Easel."""

    def __init__(self, api: ExtensionAPI) -> None:
        self.api = api
        self.models = ControlNetModels(folders=lambda: api.model_folders("ControlNet"), file_hash=api.file_hash,
                                       memory=api.memory)
        self.preprocessors = Preprocessors([folder / ANNOTATOR_FOLDER for folder in api.model_folders("ControlNet")],
                                           offline=lambda: hub_offline() or not api.hub_downloads_allowed())
        self.runner = ControlNetRunner(self.models, self.preprocessors, self.parse, api.name)
        self.ip_models = IPAdapterModels(folders=lambda: api.model_folders("ipadapter"),
                                         encoder_folders=lambda: api.model_folders("clip_vision"),
                                         file_hash=api.file_hash, memory=api.memory)
        self.ip_runner = IPAdapterRunner(self.ip_models, self.runner.units)
        self.t2i_runner = T2IAdapterRunner(self.models, self.runner.units, self.runner.prepare)
        self.runner.ip_title = lambda name: self.ip_models.title(self.ip_models.find(name))

    def max_pixels(self) -> int:
        return int(self.api.setting("max_pixels")) * 4

    def parse(self, raw: Any) -> list[ControlUnit]:
        """Checked units from `alwayson_scripts.controlnet.args` (or the accordion); ValueError names `args[i].key`."""
        return parse_units(raw, self.preprocessors.find, self.find_model, self.max_pixels())

    def find_model(self, query: str, module: str) -> str:
        """A unit's model by any name: an IP-Adapter for the `ip-adapter_*` modules, else a ControlNet."""
        if is_ip_adapter(module):
            return self.ip_models.find(query).name
        return self.models.find(query).name

    def adapters(self, request: Any) -> list[AdapterSpec]:
        """The ControlNet models a request's enabled units use, for the job's one load call (a model two units
        use is loaded twice, so each unit's control-mode hook acts on its own copy)."""
        copies: dict[str, int] = {}
        specs = []
        for unit in self.runner.units(request):
            if not unit.model or is_ip_adapter(unit.module):  # reference units; IP-Adapters load into the UNet
                continue
            entry = self.models.find(unit.model)
            copy = copies.get(str(entry.path), 0)
            copies[str(entry.path)] = copy + 1
            specs.append(AdapterSpec("controlnet", entry.name, float(unit.weight), copy))
        return specs

    def load_adapter(self, spec: AdapterSpec, loaded: Any) -> Any:
        """One ControlNet for the loaded checkpoint, on its device and in its dtype. None for a model made for
        another family, or one whose file is refused or holds no ControlNet: the runner, which knows the unit,
        then fails the job on that unit's field (`alwayson_scripts.controlnet.args[i].model`)."""
        entry = self.models.find(spec.name)
        try:
            if self.models.family(entry) != loaded.arch.value:
                return None
            pipe = loaded.pipe
            denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            return self.models.load(entry, pipe._execution_device, denoiser.dtype, spec.copy)
        except ValueError:  # ModelFileError (code in the file, a pickle-only folder) or not a ControlNet
            return None


def setup(api: ExtensionAPI) -> None:
    from . import routes, ui

    controlnet = ControlNet(api)
    api.add_request_args(controlnet.parse)
    api.add_adapter("controlnet", controlnet.adapters, controlnet.load_adapter)
    api.wrap_pipeline(controlnet.runner)
    api.wrap_pipeline(controlnet.ip_runner)  # inside the ControlNet wrapper: it adapts the pipeline that runs
    api.wrap_pipeline(controlnet.t2i_runner)
    api.after_generate(controlnet.runner.after_generate)
    for name in MODULES:
        api.add_preprocessor(name, controlnet.preprocessors.as_function(name))
    for mode in MODES:
        api.add_accordion(mode, "ControlNet", ui.accordion_builder(controlnet, mode))
    routes.add_routes(api, controlnet)
