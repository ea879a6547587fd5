"""Reading ControlNet units: sd-webui-controlnet's keys and spellings, checks that name the bad key, the accordion's
values, and the control-image helpers (resize modes, pixel perfect, control-mode scales)."""
from __future__ import annotations

import base64
import importlib
import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.controlnet.conftest import shapes

EXTENSION = Path(__file__).resolve().parents[2] / "extensions" / "controlnet"


def extension_module(name: str):
    """A module of the bundled extension, imported as the package Easel's loader gives it."""
    package = "easel_extension_controlnet"
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(package, EXTENSION / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{package}.{name}")


units = extension_module("units")


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def parse(raw):
    def find_model(name: str, module: str = "none") -> str:
        if name.lower() not in ("tiny-canny", "tiny-canny [abcd1234]"):
            raise LookupError(f"unknown ControlNet model {name!r}; installed: tiny-canny")
        return "tiny-canny"

    finder = extension_module("preprocessors").Preprocessors([]).find
    return units.parse_units(raw, finder, find_model, 4096 * 4096)


def test_a_full_unit_in_the_api_form():
    [unit] = parse({"args": [{"enabled": True, "input_image": "data:image/png;base64," + b64(shapes()),
                              "module": "Canny", "model": "tiny-canny [abcd1234]", "weight": "0.5",
                              "guidance_start": 0.1, "guidance_end": 0.9, "control_mode": 2, "resize_mode": 0,
                              "processor_res": -1, "threshold_a": 64, "threshold_b": -1, "pixel_perfect": True,
                              "low_vram": False, "hr_option": "Both"}]})
    assert unit.image.size == (64, 64) and unit.module == "canny" and unit.model == "tiny-canny"
    assert unit.weight == 0.5 and (unit.guidance_start, unit.guidance_end) == (0.1, 0.9)
    assert unit.control_mode == units.CONTROLNET_MORE_IMPORTANT and unit.resize_mode == units.JUST_RESIZE
    assert unit.processor_res == 512 and unit.threshold_a == 64 and unit.threshold_b is None
    assert unit.pixel_perfect and unit.hr_option == units.BOTH_PASSES
    [high] = parse([{"image": b64(shapes()), "model": "tiny-canny", "hr_option": "High res only"}])
    assert high.hr_option == units.HIGH_RES_ONLY


def test_spellings_older_clients_send():
    raw = [{"image": b64(shapes()), "model": "tiny-canny", "guessmode": True,
            "resize_mode": "Scale to Fit (Inner Fit)", "module": "hed"},
           {"enabled": False, "model": "whatever"},
           {"image": {"image": b64(shapes()), "mask": b64(shapes().convert("L"))}, "model": "tiny-canny",
            "control_mode": "my prompt is more important", "resize_mode": "Envelope (Outer Fit)"}]
    first, third = parse(raw)
    assert (first.index, third.index) == (0, 2)
    assert first.control_mode == units.CONTROLNET_MORE_IMPORTANT and first.resize_mode == units.CROP_AND_RESIZE
    assert first.module == "softedge_hed"
    assert third.mask is not None and third.control_mode == units.PROMPT_MORE_IMPORTANT
    assert third.resize_mode == units.RESIZE_AND_FILL
    assert parse(None) == [] and parse([]) == []


@pytest.mark.parametrize("changes, message", [
    ({"weight": "heavy"}, "args[0].weight: must be a number, got 'heavy'"),
    ({"weight": 11}, "args[0].weight: must be between 0 and 10, got 11"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "args[0].guidance_start: must be below guidance_end"),
    ({"control_mode": 5}, "args[0].control_mode: must be one of 0 = Balanced"),
    ({"resize_mode": "Stretch"}, "args[0].resize_mode: must be one of"),
    ({"module": "sketchy"}, "args[0].module: unknown preprocessor 'sketchy'"),
    ({"model": "other"}, "args[0].model: unknown ControlNet model 'other'; installed: tiny-canny"),
    ({"image": "not-base64!"}, "args[0].image: is not valid base64"),
    ({"pixel_perfect": "maybe"}, "args[0].pixel_perfect: must be true or false"),
    ({"processor_res": 10}, "args[0].processor_res: must be between 64 and 4096"),
    ({"hr_option": "Sometimes"}, "args[0].hr_option: must be one of 0 = Both, 1 = Low res only"),
])
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ValueError) as caught:
        parse([{"image": b64(shapes()), "model": "tiny-canny", **changes}])
    assert str(caught.value).startswith(message)
    with pytest.raises(ValueError, match=r"^args\[1\]\.weight"):
        parse([{"model": "tiny-canny"}, {"model": "tiny-canny", "weight": -1}])
    with pytest.raises(ValueError, match="args: must be a list of ControlNet units"):
        parse("canny")


def test_accordion_values_become_units():
    ui = extension_module("ui")
    size = len(ui.UNIT_KEYS)
    values = [True, shapes(), "canny", "tiny-canny", 0.7, 0.0, 1.0, "Balanced", "Crop and Resize", 64, False, 100,
              None, ui.UNKNOWN_TYPE] + [False] + [None] * (size - 1)
    assert len(values) == 2 * size
    raw = ui.units_from_values(*values)
    assert raw[1] == {"enabled": False} and raw[0]["threshold_b"] == -1
    [unit] = parse(raw)
    assert unit.weight == 0.7 and unit.threshold_a == 100 and unit.threshold_b is None
    assert unit.union_control_type is None  # "Unknown": not a union model


def test_fit_image_and_pixel_perfect():
    apply = extension_module("apply")
    wide = Image.new("RGB", (128, 64), (255, 255, 255))
    assert apply.fit_image(wide, (64, 64), units.JUST_RESIZE).size == (64, 64)
    cropped = apply.fit_image(wide, (64, 64), units.CROP_AND_RESIZE)
    assert cropped.size == (64, 64) and cropped.getextrema() == ((255, 255),) * 3
    filled = apply.fit_image(wide, (64, 64), units.RESIZE_AND_FILL)
    assert filled.getpixel((32, 2)) == (0, 0, 0) and filled.getpixel((32, 32)) == (255, 255, 255)
    assert apply.pixel_perfect_resolution((128, 64), (64, 64), units.CROP_AND_RESIZE) == 64
    assert apply.pixel_perfect_resolution((128, 64), (64, 64), units.RESIZE_AND_FILL) == 64  # never below 64
    assert apply.pixel_perfect_resolution((512, 256), (1024, 1024), units.RESIZE_AND_FILL) == 512
    factors = apply.soft_injection_factors(13)
    assert factors[-1] == 1.0 and factors[0] == pytest.approx(0.825 ** 12)
