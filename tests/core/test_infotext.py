"""Infotext: AUTOMATIC1111's exact layout, round trips through PNG bytes, and restoring request fields."""
import io

from PIL import Image

from webui.infotext import format_infotext, parse_infotext, png_bytes, read_png_parameters, request_updates
from webui.requests import Img2ImgRequest, InpaintRequest, Txt2ImgRequest

A1111_TEXT = (
    "masterpiece, (best quality:1.2), a castle on a hill\n"
    "at sunset\n"
    "Negative prompt: lowres, blurry\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3344556677, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
    "Clip skip: 2, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, "
    'Lora hashes: "add_detail: 7c6bad76eb54, film: 0123456789ab", Version: v1.10.1'
)


def test_parse_automatic1111_text():
    params = parse_infotext(A1111_TEXT)
    assert params["Prompt"] == "masterpiece, (best quality:1.2), a castle on a hill\nat sunset"
    assert params["Negative prompt"] == "lowres, blurry"
    assert params["Steps"] == "28"
    assert params["Sampler"] == "DPM++ 2M"
    assert params["Seed"] == "3344556677"
    assert params["Lora hashes"] == "add_detail: 7c6bad76eb54, film: 0123456789ab"
    assert params["Version"] == "v1.10.1"


def test_request_updates_from_automatic1111():
    updates = request_updates(parse_infotext(A1111_TEXT), Txt2ImgRequest)
    assert updates["steps"] == 28 and updates["cfg_scale"] == 6.5 and updates["seed"] == 3344556677
    assert updates["width"] == 512 and updates["height"] == 768
    assert updates["sampler"] == "DPM++ 2M" and updates["scheduler"] == "Karras"  # the schedule is its own field
    assert updates["clip_skip"] == 2
    assert updates["enable_hr"] is True and updates["hr_scale"] == 2.0 and updates["hr_second_pass_steps"] == 10
    assert updates["checkpoint"] == "v1-5-pruned-emaonly"
    request = Txt2ImgRequest(**updates)
    assert request.prompt.endswith("at sunset")


def test_format_quotes_values_with_separators():
    text = format_infotext("a cat", "", {"Steps": 4, "Sampler": "Euler a", "Note": "x, y: z", "Empty": None})
    assert text == 'a cat\nSteps: 4, Sampler: Euler a, Note: "x, y: z"'
    assert parse_infotext(text)["Note"] == "x, y: z"


def test_png_round_trip_bytes():
    text = format_infotext("a red circle", "blurry", {"Steps": 20, "Sampler": "Euler", "CFG scale": 7, "Seed": 42,
                                                      "Size": "64x64"})
    data = png_bytes(Image.new("RGB", (8, 8), "red"), text)
    assert b"tEXtparameters\x00a red circle" in data
    loaded = Image.open(io.BytesIO(data))
    assert read_png_parameters(loaded) == text
    assert parse_infotext(read_png_parameters(loaded))["Seed"] == "42"


def test_inpaint_fields_restore():
    text = format_infotext("x", "", {"Steps": 5, "Sampler": "Euler", "Seed": 1, "Size": "64x64",
                                     "Denoising strength": 0.6, "Mask blur": 8, "Masked content": "fill",
                                     "Inpaint area": "Only masked", "Masked area padding": 16,
                                     "Mask mode": "Inpaint not masked"})
    updates = request_updates(parse_infotext(text), InpaintRequest)
    assert updates["denoising_strength"] == 0.6 and updates["mask_blur"] == 8
    assert updates["inpainting_fill"] == "fill" and updates["inpaint_full_res"] is True
    assert updates["inpaint_full_res_padding"] == 16 and updates["inpainting_mask_invert"] is True
    assert "mask_blur" not in request_updates(parse_infotext(text), Img2ImgRequest)


def test_prompt_only_text():
    params = parse_infotext("just a prompt, with a comma")
    assert params["Prompt"] == "just a prompt, with a comma" and params["Negative prompt"] == ""
