"""Control inputs beyond a plain map: the inpaint ControlNet's condition, the tile colour fix applied to finished
images, and the control types of Flux.1 and SDXL union ControlNets."""
from __future__ import annotations

from typing import Any

from PIL import Image

from .units import ControlUnit

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
