"""Control inputs beyond a plain map: the inpaint ControlNet's condition, the tile colour fix applied to finished
images, and the control types of Flux.1 and SDXL union ControlNets."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PIL import Image

from webui.extension_api import RequestError

from .units import ControlUnit

if TYPE_CHECKING:
    from .apply import PreparedUnit

FIELD = "alwayson_scripts.controlnet"

# Flux.1 union ControlNets (InstantX / Shakker-Labs): the control type each number selects.
FLUX_UNION_TYPES = ("canny", "tile", "depth", "blur", "pose", "gray", "low quality")
UNION_ALIASES = {"openpose": "pose", "lq": "low quality"}  # sd-webui-controlnet's names for the same types
# SDXL union ControlNets (ControlNetUnionModel, xinsir's ControlNet++ and its ProMax with 8 types), by number, under
# sd-webui-controlnet's names; the aliases are the maps each type was trained on.
SDXL_UNION_TYPES = ("openpose", "depth", "soft edge", "hard edge", "normal map", "segmentation", "tile", "inpaint")
SDXL_UNION_ALIASES = {"pose": "openpose", "softedge": "soft edge", "hed": "soft edge", "pidi": "soft edge",
                      "scribble": "soft edge", "ted": "soft edge", "hardedge": "hard edge", "canny": "hard edge",
                      "lineart": "hard edge", "anime_lineart": "hard edge", "mlsd": "hard edge",
                      "normal": "normal map", "normal_map": "normal map", "segment": "segmentation",
                      "seg": "segmentation", "repaint": "inpaint"}


def inpaint_condition(control: Image.Image, mask: Image.Image) -> Any:
    """An inpaint ControlNet's input: the image in 0..1 with the masked pixels (mask > 127) set to -1:
    [1, 3, H, W] float32."""
    import numpy as np
    import torch

    pixels = np.asarray(control.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    pixels[np.asarray(mask) > 127] = -1.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()  # [1, 3, H, W]


def color_fix(image: Image.Image, control: Image.Image, unit: ControlUnit) -> Image.Image:
    """tile_colorfix: `image` with its low frequencies (Gaussian, sigma = Variation) replaced by the control
    image's; `+sharp` adds Sharpness times the image's own high frequencies once more."""
    import cv2
    import numpy as np

    sigma = 8.0 if unit.threshold_a is None else float(unit.threshold_a)
    sharpness = 1.0 if unit.threshold_b is None else float(unit.threshold_b)
    made = np.asarray(image.convert("RGB"), dtype=np.float32)  # [H, W, 3]
    reference = np.asarray(control.convert("RGB").resize(image.size, Image.LANCZOS), dtype=np.float32)
    detail = made - cv2.GaussianBlur(made, (0, 0), sigma)
    if unit.module.endswith("+sharp"):
        detail = detail * (1.0 + sharpness)
    fixed = cv2.GaussianBlur(reference, (0, 0), sigma) + detail
    return Image.fromarray(np.clip(np.rint(fixed), 0, 255).astype(np.uint8))


# Union ControlNets ------------------------------------------------------------------------------------------------
def union_count(net: Any, group: str) -> int | None:
    """How many control types a union ControlNet knows (None for a model that is not a union)."""
    if group == "flux":
        return getattr(net.config, "num_mode", None)
    if type(net).__name__ == "ControlNetUnionModel":
        return int(net.config.num_control_type)
    return None


def union_group(prepared: list["PreparedUnit"], nets: list[Any], group: str) -> str:
    """"sdxl-union" when the units' models are SDXL union ControlNets (diffusers runs them in their own pipelines,
    which take union models only), else `group`; RequestError names a unit that cannot run beside them."""
    unions = [type(net).__name__ == "ControlNetUnionModel" for net in nets]
    if not any(unions):
        return group
    if group != "sdxl":
        first = prepared[unions.index(True)]
        raise RequestError(f"{FIELD}.args[{first.index}].model", f"{first.entry.name} is a union ControlNet "
                                                                 f"(ControlNetUnionModel); those run with SDXL checkpoints")
    if not all(unions):
        other = prepared[unions.index(False)]
        raise RequestError(f"{FIELD}.args[{other.index}].model",
                           f"{other.entry.name} is not a union ControlNet; diffusers runs SDXL union ControlNets in "
                           f"their own pipeline, which takes union models only: run it in a separate generation")
    return "sdxl-union"


def union_modes(prepared: list["PreparedUnit"], nets: list[Any], group: str) -> list[int] | None:
    """Each unit's control-type number for union ControlNets (None when no unit uses one); RequestError names a
    unit whose type is missing, unknown, or given for a model that is not a union."""
    modes: list[int] = []
    any_union = False
    types, aliases = (FLUX_UNION_TYPES, UNION_ALIASES) if group == "flux" else (SDXL_UNION_TYPES, SDXL_UNION_ALIASES)
    for item, net in zip(prepared, nets):
        count = union_count(net, group)
        wanted = item.unit.union_control_type
        at = f"{FIELD}.args[{item.index}].union_control_type"
        if not count:
            if wanted is not None:
                raise RequestError(at, f"{item.entry.name} is not a union ControlNet; leave union_control_type out")
            modes.append(-1)
            continue
        any_union = True
        names = types[:count]
        choices = ", ".join(f"{i} = {name}" for i, name in enumerate(names))
        if wanted is None:
            raise RequestError(at, f"{item.entry.name} is a union ControlNet; choose its control type ({choices})")
        wanted = aliases.get(wanted, wanted)
        index = int(wanted) if wanted.isdigit() else (names.index(wanted) if wanted in names else -1)
        if not 0 <= index < count:
            raise RequestError(at, f"unknown control type {wanted!r} for {item.entry.name}; choose {choices}")
        modes.append(index)
    return modes if any_union else None
